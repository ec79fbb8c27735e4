"""The linear probe the probe experiments share: what a frozen representation holds, read by a multinomial
logistic regression (L-BFGS, L2, features standardised on the training rows)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, classes: int,
                 l2: float = 1e-2) -> float:  # fmt: skip
    """Fit on ``x (n, d)`` with class indices ``y (n,)``; return the accuracy on ``xt``, ``yt`` (an index the
    probe cannot predict, such as -1, counts as wrong)."""
    mu, sd = x.mean(0), x.std(0) + 1e-5
    x, xt = (x - mu) / sd, (xt - mu) / sd
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == yt).float().mean())
