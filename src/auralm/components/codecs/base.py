"""The audio-tokenizer interface: what a token model (the sound recipe's GPT) may depend on, and nothing more.

A codec turns audio into a 1-D sequence of codes per clip and back: ``encode(wav) -> codes (B, T)``,
``decode(codes) -> wav (B, S)``, with ``sample_rate``, ``frame_rate`` (codes per second) and
``codebook_size``. :class:`~auralm.components.codecs.mel_vq.MelVQTokenizer` is the one shipped today.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

import numpy as np
import torch


class AudioTokenizer(abc.ABC):
    """Interface: ``encode(wav) -> codes``, ``decode(codes) -> wav``, ``sample_rate``, ``frame_rate``,
    ``codebook_size``. The token GPT depends on nothing else."""

    sample_rate: int
    frame_rate: float
    codebook_size: int

    @abc.abstractmethod
    def encode(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Audio ``(S,)`` or ``(B, S)`` at :attr:`sample_rate` -> codes ``(B, T)`` (long)."""

    @abc.abstractmethod
    def decode(self, codes: torch.Tensor | Sequence[int]) -> np.ndarray:
        """Codes ``(T,)`` or ``(B, T)`` -> float32 audio ``(B, S)``."""

    def tokens_per_clip(self, seconds: float) -> int:
        """Tokens that a clip of ``seconds`` encodes to."""
        return math.ceil(round(seconds * self.frame_rate, 6))
