"""Connectors from audio states to a causal LM, two fusion families chosen by ``ConnectorConfig.kind``.

* ``prefix`` (early fusion, as Ultravox / Qwen2-Audio / LLaVA): :class:`PrefixConnector` stacks S frames,
  projects them to the LM width and :func:`splice_audio` writes them over audio placeholder tokens.
* ``cross`` (deep fusion, as Flamingo / VisualGPT): :class:`CrossConnector` projects the same way and
  adds gated cross-attention blocks in front of every N-th decoder layer (hooks; LM keys unchanged).

``build_connector(cfg, audio_dim, lm_dim, num_layers)`` looks ``cfg.kind`` up in :data:`CONNECTORS`.
Both connectors expose ``project(states, lengths) -> (audio (B, T', H), lengths')``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from auralm.components.connectors.cross import (
    BRANCH_GATES,
    GATES,
    BranchProjector,
    CrossConnector,
    GatedCrossAttention,
    MultiBranchCrossAttention,
    MultiBranchCrossConnector,
    resurrect_mix,
)
from auralm.components.connectors.prefix import (
    PROJECTORS,
    SpliceError,
    StackProjector,
    lengths_mask,
    splice_audio,
    splice_media,
)
from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError

__all__ = [
    "BRANCH_GATES",
    "CONNECTORS",
    "BranchProjector",
    "MultiBranchCrossAttention",
    "MultiBranchCrossConnector",
    "resurrect_mix",
    "ConnectorConfig",
    "CrossConnector",
    "GatedCrossAttention",
    "PrefixConnector",
    "SpliceError",
    "StackProjector",
    "build_connector",
    "lengths_mask",
    "splice_audio",
    "splice_media",
]


@dataclasses.dataclass
class ConnectorConfig(Config):
    """How audio states reach the LM."""

    kind: str = help_field("prefix", "fusion family: prefix (splice into embeddings) or cross (gated cross-attention)")
    stack: int = help_field(4, "consecutive encoder frames stacked into one LM position (frame-rate reduction)")
    projector: str = help_field("mlp", "projection to the LM width: mlp (2 layers, GELU) or linear")
    hidden: int = help_field(0, "hidden width of the mlp projector (0 = the LM width)")
    adapter_layers: int = help_field(0, "Transformer encoder layers after the projection, at the LM width (0 = none)")
    adapter_heads: int = help_field(4, "attention heads of the adapter layers (must divide the LM width)")
    adapter_dropout: float = help_field(0.1, "dropout inside the adapter layers")
    every_n: int = help_field(1, "cross: a cross-attention block before every N-th decoder layer (0, N, 2N, ...)")
    gate: str = help_field("tanh", "cross: tanh (Flamingo, zero-init) or sigmoid (VisualGPT self-resurrecting)")
    heads: int = help_field(4, "cross: attention heads of each block (must divide the LM width)")
    tau: float = help_field(0.2, "cross, sigmoid gate: threshold below which a gate value is cut to 0")
    alpha: float = help_field(1.0, "cross, sigmoid gate: scale of the gate input, sigmoid(alpha * LN(x))")

    def validate(self) -> None:
        if self.kind not in CONNECTORS:
            raise ConfigError(f"connector.kind must be one of {', '.join(CONNECTORS)}, got {self.kind!r}")
        if self.projector not in PROJECTORS:
            raise ConfigError(f"connector.projector must be one of {', '.join(PROJECTORS)}, got {self.projector!r}")
        if self.gate not in GATES:
            raise ConfigError(f"connector.gate must be one of {', '.join(GATES)}, got {self.gate!r}")
        for name in ("stack", "every_n", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"connector.{name} must be positive, got {getattr(self, name)}")
        if self.hidden < 0 or self.adapter_layers < 0 or self.adapter_heads <= 0:
            raise ConfigError(f"connector: need hidden >= 0, adapter_layers >= 0, adapter_heads > 0, got "
                              f"{self.hidden}, {self.adapter_layers}, {self.adapter_heads}")
        if not 0.0 <= self.adapter_dropout < 1.0:
            raise ConfigError(f"connector.adapter_dropout must be in [0, 1), got {self.adapter_dropout}")
        if not 0.0 <= self.tau < 0.5:
            raise ConfigError(f"connector.tau must be in [0, 0.5), got {self.tau}")


class PrefixConnector(nn.Module):
    """Early fusion: a :class:`StackProjector` whose outputs are spliced at the audio placeholders."""

    def __init__(self, audio_dim: int, lm_dim: int, *, stack: int = 4, projector: str = "mlp", hidden: int = 0,
                 adapter_layers: int = 0, adapter_heads: int = 4, adapter_dropout: float = 0.1):
        super().__init__()
        self.projector = StackProjector(audio_dim, lm_dim, stack, projector, hidden, adapter_layers, adapter_heads,
                                        adapter_dropout)

    def project(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` -> ``(B, T', H)`` and projected lengths."""
        return self.projector(states, lengths)


def _projector_settings(cfg: ConnectorConfig) -> dict:
    """The :class:`StackProjector` settings both families take."""
    names = ("stack", "projector", "hidden", "adapter_layers", "adapter_heads", "adapter_dropout")
    return {name: getattr(cfg, name) for name in names}


def _prefix(cfg: ConnectorConfig, audio_dim: int, lm_dim: int, num_layers: int) -> nn.Module:
    try:
        return PrefixConnector(audio_dim, lm_dim, **_projector_settings(cfg))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _cross(cfg: ConnectorConfig, audio_dim: int, lm_dim: int, num_layers: int) -> nn.Module:
    try:
        return CrossConnector(
            audio_dim, lm_dim, num_layers, every_n=cfg.every_n, heads=cfg.heads, gate=cfg.gate, tau=cfg.tau,
            alpha=cfg.alpha, **_projector_settings(cfg),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


CONNECTORS: dict[str, Callable[[ConnectorConfig, int, int, int], nn.Module]] = {"prefix": _prefix, "cross": _cross}


def build_connector(cfg: ConnectorConfig, audio_dim: int, lm_dim: int, num_layers: int = 0) -> nn.Module:
    """The connector named by ``cfg.kind``; ``num_layers`` (the LM's decoder layers) is needed by ``cross``."""
    builder = CONNECTORS.get(cfg.kind)
    if builder is None:
        raise ConfigError(f"unknown connector {cfg.kind!r}; valid: {', '.join(CONNECTORS)}")
    return builder(cfg, int(audio_dim), int(lm_dim), int(num_layers))
