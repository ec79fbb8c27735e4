"""The one learning-rate schedule and the one data order of the engine.

* :func:`lr_lambda`: linear warm-up, then cosine (or linear, or constant) decay to ``min_lr_frac`` of the peak
  at ``total`` steps. Every recipe's optimizers follow it (``torch.optim.lr_scheduler.LambdaLR``).
* :func:`index_stream`: the endless stream of example indices (a fresh seeded permutation per epoch), a pure
  function of ``(seed, position)``, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math

import torch


def lr_lambda(step: int, warmup: int, total: int, schedule: str = "cosine", min_lr_frac: float = 0.0) -> float:
    """Multiplier of the peak lr after ``step`` optimizer steps.

    ``(step + 1) / warmup`` during the warm-up; then ``min_lr_frac + (1 - min_lr_frac) * decay`` where
    ``decay`` goes from 1 to 0 over the steps ``[warmup, total]``: ``0.5 * (1 + cos(pi * t))`` (cosine),
    ``1 - t`` (linear), or stays 1 (constant; ``min_lr_frac`` unused).
    """
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    decay = 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
    return min_lr_frac + (1.0 - min_lr_frac) * decay


def index_stream(n: int, seed: int, start: int, count: int, lengths: list[float] | None = None,
                 batch_size: int = 0, pool: int = 50) -> list[int]:
    """Positions ``[start, start+count)`` of the endless stream: a fresh permutation of ``range(n)`` per epoch.

    With ``lengths`` (one per example) and ``batch_size``, each epoch's permutation is grouped by length:
    cut into pools of ``pool`` batches, each pool sorted longest first and cut into batches, the batches
    shuffled. Batches then hold examples of similar length, so little of a padded batch is padding. Every
    epoch is still a permutation and a position is still a pure function of ``(seed, position)``.
    """
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = _epoch_order(n, seed, epoch, lengths, batch_size, pool)
        take = perm[offset : offset + count - len(out)]
        out += take
        pos += len(take)
    return out


def _epoch_order(n: int, seed: int, epoch: int, lengths: list[float] | None, batch_size: int, pool: int) -> list[int]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    if lengths is None or batch_size <= 1:
        return perm
    size = batch_size * max(1, pool)
    grouped = [j for i in range(0, n, size) for j in sorted(perm[i : i + size], key=lambda j: -lengths[j])]
    # the global batches are positions [k*B, (k+1)*B) of the stream; this epoch starts mid-batch when
    # epoch*n is not a multiple of B: its first `head` examples complete the previous epoch's last batch
    head = (-epoch * n) % batch_size
    pieces = [grouped[i : i + batch_size] for i in range(head, n, batch_size)]
    tail = pieces.pop() if pieces and len(pieces[-1]) < batch_size else []  # a partial batch stays last
    shuffle = torch.randperm(len(pieces), generator=torch.Generator().manual_seed(seed * 100003 + epoch + 7919))
    return grouped[:head] + [j for k in shuffle.tolist() for j in pieces[k]] + tail
