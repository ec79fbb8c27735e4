"""Aligning one model's token states to another's: contrastive losses with a memory queue and cross-process
negatives, a norm-matching term and the alignment metrics.

:class:`AlignmentLoss` compares predicted token states ``pred (B, T, D)`` (e.g. an audio aligner's output) with
target states ``target (B, T, D)`` (a text encoder's) whose first ``lengths[b]`` positions are real:

* **sequence level**: symmetric InfoNCE between the masked-mean, L2-normalised sentence vectors
  (pred -> target and target -> pred);
* **token level**: at each position ``k``, symmetric InfoNCE between ``pred[b, k]`` and the targets at ``k`` of
  every item whose text reaches ``k``; positions past an item's length are neither queries nor keys
  (``mask_padding``), so padding never changes the loss;
* **duplicates are positives**: items with the same ``ids`` (the same caption) count as positives of each
  other, never as negatives (a multi-positive InfoNCE: ``-log sum_pos exp(s) + log sum_all exp(s)``);
* **more negatives**: keys are gathered from every process (``torch.distributed.nn`` all-gather, differentiable,
  so each process's queries also see the others' items) and come from a FIFO queue of the last ``queue_size``
  items (detached; pushed after each call, so gradient-accumulation micro-batches add negatives to each other);
* **norm matching**: ``(log |pred_k| - log |target_k|)^2`` over real positions (cosine is scale-free, but a
  diffusion model's cross-attention reads the norms); ``norm_ratio`` (mean ``|pred_k| / |target_k|``) is logged;
* optional **MSE** over real positions.

``AlignLossConfig.seed()`` is the seed project's loss, for comparison: per-position InfoNCE pred -> target only,
micro-batch negatives, every position (padding included), duplicates as negatives, no norm term, T = 0.15.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError


@dataclasses.dataclass
class AlignLossConfig(Config):
    """Weights and switches of :class:`AlignmentLoss`."""

    temperature: float = help_field(0.07, "InfoNCE temperature (both levels)")
    seq_weight: float = help_field(1.0, "weight of the sequence-level InfoNCE")
    token_weight: float = help_field(1.0, "weight of the token-level InfoNCE")
    norm_weight: float = help_field(1.0, "weight of the norm-matching term (log-norm squared error per real token)")
    mse_weight: float = help_field(0.0, "weight of the MSE between real tokens (0: none)")
    symmetric: bool = help_field(True, "both directions (pred -> target and target -> pred); false: pred -> target")
    mask_padding: bool = help_field(True, "leave positions past each text's end out of the token loss")
    duplicates_positive: bool = help_field(True, "items with the same caption are positives, not negatives")
    queue_size: int = help_field(256, "items kept as extra negatives from earlier batches (0: none)")
    gather: bool = help_field(True, "gather keys from every process (several processes add negatives)")

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"AlignLossConfig.temperature must be positive, got {self.temperature}")
        for name in ("seq_weight", "token_weight", "norm_weight", "mse_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"AlignLossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.seq_weight + self.token_weight + self.norm_weight + self.mse_weight == 0:
            raise ConfigError("AlignLossConfig: every weight is 0; nothing would be trained")
        if self.queue_size < 0:
            raise ConfigError(f"AlignLossConfig.queue_size must be >= 0, got {self.queue_size}")

    @classmethod
    def seed(cls) -> AlignLossConfig:
        """The seed project's loss (see the module docstring)."""
        return cls(temperature=0.15, seq_weight=0.0, token_weight=1.0, norm_weight=0.0, mse_weight=0.0,
                   symmetric=False, mask_padding=False, duplicates_positive=False, queue_size=0, gather=False)  # fmt: skip


# -- pieces ---------------------------------------------------------------------------------------
def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean_vectors(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``(B, T, D) -> (B, D)``: mean over the first ``lengths[b]`` positions, L2-normalised."""
    mask = length_mask(lengths.to(states.device), states.shape[1]).to(states.dtype)
    mean = (states * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return F.normalize(mean, dim=-1)


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row ``-log(sum_pos exp(l) / sum_valid exp(l))``; ``positive`` and ``valid`` are bool like ``logits``.

    Keys outside ``valid`` take no part; every row needs a valid positive.
    """
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
        positive = positive & valid
    if not bool(positive.any(-1).all()):
        raise ValueError("multi_positive_nce: a row has no positive key")
    pos = logits.masked_fill(~positive, float("-inf"))
    return torch.logsumexp(logits, -1) - torch.logsumexp(pos, -1)


def gather_keys(x: torch.Tensor, group: Any = None) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` (same shape on every process) over processes, keeping the gradient of every part.

    Returns ``(gathered, offset)``: this process's rows are ``gathered[offset : offset + len(x)]``. With one
    process (or no process group) it is ``(x, 0)``.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    parts = all_gather(x.contiguous(), group=group) if group is not None else all_gather(x.contiguous())
    return torch.cat(parts), dist.get_rank(group) * x.shape[0]


class AlignmentLoss(nn.Module):
    """See the module docstring. ``forward(pred, target, lengths, ids)`` -> dict with ``loss`` and the parts.

    ``ids (B,)`` are caption identities (equal ids = the same caption). The queue lives in buffers (saved with
    the module's state, so a resumed run has the same negatives).
    """

    def __init__(self, cfg: AlignLossConfig, tokens: int, dim: int, group: Any = None):
        super().__init__()
        self.cfg, self.tokens, self.dim, self.group = cfg, int(tokens), int(dim), group
        q = cfg.queue_size
        self.register_buffer("q_pred", torch.zeros(q, tokens, dim), persistent=True)
        self.register_buffer("q_target", torch.zeros(q, tokens, dim), persistent=True)
        self.register_buffer("q_lengths", torch.zeros(q, dtype=torch.long), persistent=True)
        self.register_buffer("q_ids", torch.full((q,), -1, dtype=torch.long), persistent=True)
        self.register_buffer("q_filled", torch.zeros((), dtype=torch.long), persistent=True)
        self.register_buffer("q_next", torch.zeros((), dtype=torch.long), persistent=True)

    # -- queue ------------------------------------------------------------------------------------
    def queued(self) -> int:
        return int(self.q_filled)

    @torch.no_grad()
    def push(self, pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor) -> None:
        """Put items (already gathered over processes) into the FIFO queue, oldest out first."""
        q = self.cfg.queue_size
        if q == 0:
            return
        n = min(pred.shape[0], q)
        pred, target, lengths, ids = pred[-n:], target[-n:], lengths[-n:], ids[-n:]
        slots = (int(self.q_next) + torch.arange(n)) % q
        self.q_pred[slots] = F.normalize(pred.detach().float(), dim=-1).to(self.q_pred)
        self.q_target[slots] = F.normalize(target.detach().float(), dim=-1).to(self.q_target)
        self.q_lengths[slots] = lengths.to(self.q_lengths)
        self.q_ids[slots] = ids.to(self.q_ids)
        self.q_next.fill_((int(self.q_next) + n) % q)
        self.q_filled.fill_(min(int(self.q_filled) + n, q))

    # -- loss -------------------------------------------------------------------------------------
    def forward(self, pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor,
                push: bool = True) -> dict[str, torch.Tensor]:  # fmt: skip
        c = self.cfg
        B, T, D = pred.shape  # noqa: N806
        if target.shape != pred.shape:
            raise ConfigError(f"AlignmentLoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if (T, D) != (self.tokens, self.dim):
            raise ConfigError(f"AlignmentLoss was built for {self.tokens} tokens x {self.dim}, got {T} x {D}")
        dev = pred.device
        lengths, ids = lengths.to(dev).long(), ids.to(dev).long()
        full = torch.full_like(lengths, T)
        lens_loss = lengths if c.mask_padding else full
        pred_n, targ_n = F.normalize(pred.float(), dim=-1), F.normalize(target.float(), dim=-1)

        # keys: every process's batch (with gradient), then the queue (detached)
        if c.gather:
            all_pred, offset = gather_keys(pred_n, self.group)
            all_targ, _ = gather_keys(targ_n, self.group)
            all_lens, _ = gather_keys(lengths, self.group)
            all_ids, _ = gather_keys(ids, self.group)
        else:
            all_pred, all_targ, all_lens, all_ids, offset = pred_n, targ_n, lengths, ids, 0
        n_batch = all_pred.shape[0]
        k = self.queued()
        keys_pred = torch.cat([all_pred, self.q_pred[:k].to(dev)])
        keys_targ = torch.cat([all_targ, self.q_target[:k].to(dev)])
        keys_lens = torch.cat([all_lens, self.q_lengths[:k].to(dev)])
        keys_ids = torch.cat([all_ids, self.q_ids[:k].to(dev)])
        if not c.mask_padding:
            keys_lens = torch.full_like(keys_lens, T)
        own = torch.zeros(B, keys_pred.shape[0], dtype=torch.bool, device=dev)
        own[torch.arange(B), offset + torch.arange(B)] = True
        positive = own | (ids[:, None] == keys_ids[None, :]) if c.duplicates_positive else own

        out: dict[str, torch.Tensor] = {}
        total = pred.new_zeros((), dtype=torch.float32)
        tau = c.temperature
        if c.seq_weight:
            a = masked_mean_vectors(pred_n, lens_loss)  # B, D
            t = masked_mean_vectors(targ_n, lens_loss)
            ka = masked_mean_vectors(keys_pred, keys_lens)  # N, D
            kt = masked_mean_vectors(keys_targ, keys_lens)
            seq = multi_positive_nce(a @ kt.T / tau, positive).mean()
            if c.symmetric:
                seq = 0.5 * (seq + multi_positive_nce(t @ ka.T / tau, positive).mean())
            out["seq_nce"] = seq
            total = total + c.seq_weight * seq
        if c.token_weight:
            rows = length_mask(lens_loss, T).T  # T, B: queries
            cols = length_mask(keys_lens, T).T  # T, N: keys
            valid_k = cols[:, None, :].expand(T, B, -1)
            pos_k = positive[None].expand(T, -1, -1)
            logits = torch.einsum("btd,ntd->tbn", pred_n, keys_targ) / tau  # T, B, N
            tok = multi_positive_nce(logits[rows], pos_k[rows], valid_k[rows]).mean()
            if c.symmetric:
                logits_t = torch.einsum("btd,ntd->tbn", targ_n, keys_pred) / tau
                tok = 0.5 * (tok + multi_positive_nce(logits_t[rows], pos_k[rows], valid_k[rows]).mean())
            out["token_nce"] = tok
            total = total + c.token_weight * tok
        stats = token_stats(pred, target, lengths)
        if c.norm_weight:
            total = total + c.norm_weight * stats["log_norm_mse"]
        if c.mse_weight:
            total = total + c.mse_weight * stats["mse"]
        out.update(stats)
        out["loss"] = total
        out["negatives"] = torch.tensor(float(keys_pred.shape[0] - 1))
        if push:
            self.push(all_pred[:n_batch], all_targ[:n_batch], all_lens, all_ids)
        return out


def token_stats(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """Over the real positions: ``cosine`` (mean per token), ``mse`` (mean squared error per element),
    ``norm_ratio`` (mean ``|pred| / |target|``) and ``log_norm_mse`` (mean squared log-norm difference)."""
    mask = length_mask(lengths.to(pred.device), pred.shape[1])
    p, t = pred.float()[mask], target.float()[mask]  # M, D
    pn, tn = p.norm(dim=-1).clamp(min=1e-6), t.norm(dim=-1).clamp(min=1e-6)
    return {
        "cosine": F.cosine_similarity(p, t, dim=-1).mean(),
        "mse": ((p - t) ** 2).mean(),
        "norm_ratio": (pn / tn).mean(),
        "log_norm_mse": ((pn.log() - tn.log()) ** 2).mean(),
    }
