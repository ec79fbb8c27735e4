"""Vector quantiser with an EMA codebook (VQ-VAE, van den Oord et al. 2017, appendix A.1).

* **Straight-through**: the forward pass returns the nearest code, the backward pass copies the
  gradient to the encoder output unchanged (``z + (q - z).detach()``).
* **EMA codebook**: no codebook gradient; per-code counts and sums of assigned vectors are tracked as
  exponential moving averages (Laplace-smoothed counts) and each code is their ratio.
* **Data initialisation**: on the first training batch, k-means (a few Lloyd rounds seeded with
  random batch vectors) sets the codebook.
* **Dead-code restart**: a code whose EMA count falls below ``dead_threshold`` is replaced by a random
  encoder output of the current batch (Dhariwal et al. 2020, Jukebox).
* **Commitment loss** ``beta * ||z - sg(q)||^2`` pulls the encoder toward its codes.

Usage stats per batch: ``perplexity`` (exp of the entropy of the code histogram; K when all codes are
used equally) and ``usage`` (fraction of codes used at least once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """``k`` centroids of ``x (N, D)`` by Lloyd's algorithm; empty clusters are reseeded from ``x``."""
    n = x.shape[0]
    idx = torch.randint(0, n, (k,), generator=generator) if n < k else torch.randperm(n, generator=generator)[:k]
    cent = x[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        empty = counts == 0
        cent = torch.where(empty[:, None], x[torch.randint(0, n, (k,), generator=generator)], sums / counts.clamp_min(1)[:, None])
    return cent


class EMAQuantizer(nn.Module):
    """Quantise ``(B, D, T)`` vectors to the nearest of ``K`` codes; returns (quantised, codes, stats)."""

    def __init__(self, codebook_size: int, dim: int, decay: float = 0.99, beta: float = 0.25,
                 dead_threshold: float = 0.5, eps: float = 1e-5, kmeans_init: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.codebook_size, self.dim = int(codebook_size), int(dim)
        self.decay, self.beta, self.dead_threshold, self.eps = decay, beta, dead_threshold, eps
        self.register_buffer("codebook", torch.randn(codebook_size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(codebook_size))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.generator: torch.Generator | None = None  # set by trainers for reproducible restarts

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``flat (N, D)``."""
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.T + self.codebook.pow(2).sum(1)[None]
        return dist.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T)`` -> vectors ``(B, D, T)``."""
        return F.embedding(codes, self.codebook).transpose(1, 2)

    @torch.no_grad()
    def init_from(self, flat: torch.Tensor) -> None:
        """k-means initialisation of the codebook (and the EMA state) from vectors ``(N, D)``."""
        cent = kmeans(flat, self.codebook_size, generator=self.generator)
        self.codebook.copy_(cent)
        self.ema_sum.copy_(cent)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        """Move each code toward the mean of the vectors assigned to it (EMA of counts and sums)."""
        onehot = F.one_hot(codes, self.codebook_size).type_as(flat)  # N, K
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace smoothing
        self.codebook.copy_(self.ema_sum / count[:, None])

    @torch.no_grad()
    def restart_dead(self, flat: torch.Tensor) -> int:
        """Replace codes whose EMA count is below ``dead_threshold`` with random batch vectors; returns how many."""
        dead = self.ema_count < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, flat.shape[0], (n_dead,), generator=self.generator)
            self.codebook[dead] = flat[pick]
            self.ema_sum[dead] = flat[pick]
            self.ema_count[dead] = 1.0
        return n_dead

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """``z (B, D, T)`` -> (straight-through quantised ``(B, D, T)``, codes ``(B, T)``, stats).

        ``mask (B, T)`` marks real (not padded) steps: only they update the codebook and count in stats.
        """
        b, d, t = z.shape
        flat = z.transpose(1, 2).reshape(-1, d)  # B*T, D
        keep = mask.reshape(-1) if mask is not None else torch.ones(flat.shape[0], dtype=torch.bool, device=z.device)
        real = flat[keep].detach()
        if self.training and not bool(self.initialized):
            self.init_from(real)
        codes = self.nearest(flat.detach())
        q = F.embedding(codes, self.codebook)  # B*T, D
        stats: dict = {}
        if self.training:
            self.ema_update(real, codes[keep])
            stats["restarted"] = self.restart_dead(real)
        err = (flat - q.detach()).pow(2).mean(1)
        commit = (err * keep).sum() / keep.sum().clamp_min(1)
        stats["commitment"] = commit
        stats["loss"] = self.beta * commit
        stats.update(usage_stats(codes[keep], self.codebook_size))
        q = flat + (q - flat).detach()  # straight-through: identity gradient to the encoder
        return q.reshape(b, t, d).transpose(1, 2), codes.reshape(b, t), stats


def usage_stats(codes: torch.Tensor, k: int) -> dict[str, float]:
    """Perplexity (exp entropy of the code histogram) and the fraction of the ``k`` codes used."""
    counts = torch.bincount(codes.reshape(-1), minlength=k).float()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"perplexity": float(torch.exp(entropy)), "usage": float((counts > 0).float().mean())}
