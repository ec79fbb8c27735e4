"""What every encoder shares: frozen by default (no gradients, eval mode whatever ``train()`` is asked)."""

from __future__ import annotations

import torch
from torch import nn


class FrozenEncoder(nn.Module):
    """An ``nn.Module`` that stays frozen until :meth:`set_trainable` unfreezes it."""

    trainable: bool = False

    def set_trainable(self, trainable: bool) -> FrozenEncoder:
        """Freeze (no grads, eval mode) or unfreeze the encoder's parameters."""
        self.trainable = bool(trainable)
        for p in self.parameters():
            p.requires_grad_(self.trainable)
        return self.train(self.trainable)

    def train(self, mode: bool = True) -> FrozenEncoder:
        """A frozen encoder ignores ``train()`` and stays in eval mode (no dropout, batch norm fixed)."""
        return super().train(mode and self.trainable)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype
