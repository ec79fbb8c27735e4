"""Cross-modal retrieval: recall at k of queries against keys, where several keys may be right.

:func:`recall_at_k` ranks every key by cosine similarity to each query; a query scores at ``k`` when a
correct key (same id) is among its ``k`` most similar keys. Ties are broken against the query (a correct
key tied with a wrong one counts as ranked below it), so a constant embedding scores chance or worse,
never better.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def recall_at_k(queries: torch.Tensor, keys: torch.Tensor, query_ids: Sequence[int] | torch.Tensor,
                key_ids: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:  # fmt: skip
    """``{"r@1": ..., "r@5": ..., "median_rank": ...}`` for ``queries (N, D)`` against ``keys (M, D)``.

    A key is correct for a query when their ids are equal; each query needs at least one correct key.
    ``median_rank`` is 1-based (the rank of the best correct key).
    """
    q = F.normalize(queries.float(), dim=-1)
    k = F.normalize(keys.float(), dim=-1)
    qi, ki = torch.as_tensor(query_ids).long(), torch.as_tensor(key_ids).long()
    if q.shape[0] != len(qi) or k.shape[0] != len(ki):
        raise ValueError(f"recall_at_k: {q.shape[0]} queries with {len(qi)} ids, {k.shape[0]} keys with {len(ki)} ids")
    correct = qi[:, None] == ki[None, :]  # N, M
    if not bool(correct.any(1).all()):
        raise ValueError("recall_at_k: a query has no correct key")
    sims = q @ k.T
    best = sims.masked_fill(~correct, float("-inf")).max(1).values  # N: the best correct key's similarity
    # rank = 1 + keys that beat it; wrong keys tied with it count as beating it
    rank = 1 + ((sims >= best[:, None]) & ~correct).sum(1)
    out = {f"r@{kk}": float((rank <= kk).float().mean()) for kk in ks}
    out["median_rank"] = float(rank.float().quantile(0.5))
    out["n_queries"], out["n_keys"] = float(q.shape[0]), float(k.shape[0])
    return out
