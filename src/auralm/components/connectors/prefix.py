"""Early fusion: stack encoder frames, project them to the LM's width, splice them into the token embeddings.

``StackProjector``: ``(B, T, D)`` encoder states + lengths -> ``(B, ceil(T/S), H)`` + ``ceil(lengths/S)``.
S consecutive frames are concatenated (frames past an item's length are zeroed first, so padding never
leaks into its last stacked frame), layer-normalised, and mapped to the LM width H by a linear layer or
a 2-layer MLP (GELU), optionally followed by ``adapter_layers`` pre-norm Transformer encoder layers at
the LM width (self-attention over the clip's projected frames, padding masked): a frozen encoder's
states are not token-like, and a little context at this rate lets the projector shape them (cheap:
the layers run at the stacked frame rate). ``splice_audio`` writes each item's *valid*
projected frames over the audio placeholder positions of its token embeddings in one ``index_copy``.
"""

from __future__ import annotations

import torch
from torch import nn

from auralm.core.errors import AuralmError

PROJECTORS = ("mlp", "linear")


class SpliceError(AuralmError, ValueError):
    """The number of audio placeholder positions and of audio frames disagree."""


def lengths_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B,)`` lengths -> ``(B, size)`` bool, True on the first ``lengths[b]`` steps of each row (the valid ones)."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class StackProjector(nn.Module):
    """Stack ``stack`` frames and project ``audio_dim * stack -> lm_dim`` (``linear`` or 2-layer ``mlp``)."""

    def __init__(self, audio_dim: int, lm_dim: int, stack: int = 4, projector: str = "mlp", hidden: int = 0,
                 adapter_layers: int = 0, adapter_heads: int = 4, adapter_dropout: float = 0.1):
        super().__init__()
        if projector not in PROJECTORS:
            raise ValueError(f"unknown projector {projector!r}; valid: {', '.join(PROJECTORS)}")
        self.stack = int(stack)
        self.audio_dim, self.lm_dim = int(audio_dim), int(lm_dim)
        in_dim = self.audio_dim * self.stack
        self.norm = nn.LayerNorm(in_dim)
        if projector == "linear":
            self.net: nn.Module = nn.Linear(in_dim, lm_dim)
        else:
            width = hidden or lm_dim
            self.net = nn.Sequential(nn.Linear(in_dim, width), nn.GELU(), nn.Linear(width, lm_dim))
        self.adapter = None
        if adapter_layers > 0:
            if lm_dim % adapter_heads:
                raise ValueError(f"adapter_heads {adapter_heads} must divide the LM width {lm_dim}")
            layer = nn.TransformerEncoderLayer(lm_dim, adapter_heads, 2 * lm_dim, adapter_dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.adapter = nn.TransformerEncoder(layer, adapter_layers, enable_nested_tensor=False)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Projected frames per item: ``ceil(lengths / stack)``."""
        return (lengths + self.stack - 1) // self.stack

    def forward(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, D = states.shape
        if D != self.audio_dim:
            raise SpliceError(f"audio states have width {D}, but the projector was built for width {self.audio_dim}")
        lengths = lengths.to(states.device).long()
        dtype = self.norm.weight.dtype
        keep = lengths_mask(lengths, T)  # B, T
        x = states.to(dtype) * keep[:, :, None].to(dtype)  # B, T, D (padding zeroed)
        pad = (-T) % self.stack
        x = nn.functional.pad(x, (0, 0, 0, pad))  # B, T + pad, D
        x = x.reshape(B, (T + pad) // self.stack, self.stack * D)  # B, T/S, S*D
        out, out_lengths = self.net(self.norm(x)), self.output_lengths(lengths)  # B, T', H ; (B,)
        if self.adapter is not None:
            out = self.adapter(out, src_key_padding_mask=~lengths_mask(out_lengths, out.shape[1]))  # B, T', H
        return out, out_lengths


def splice_media(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    items: torch.Tensor,
    item_lengths: torch.Tensor,
    token_id: int,
    what: str = "audio",
) -> torch.Tensor:
    """Overwrite the ``token_id`` placeholder positions of ``embeds`` with the valid frames of ``items``.

    ``embeds (B, L, H)``, ``input_ids (B, L)``, ``items (M, T', H)``, ``item_lengths (M,)``: any number of
    media items (clips, images) per row, in the order their placeholders appear, row by row (frames past
    an item's length are padding and are never spliced). One vectorised ``index_copy``; when the
    placeholder positions and the valid frames disagree in number a :class:`SpliceError` names both.
    """
    slots = input_ids == token_id  # B, L
    valid = lengths_mask(item_lengths.to(items.device), items.shape[1])  # M, T'
    n_slots, n_frames = int(slots.sum()), int(valid.sum())
    if n_slots != n_frames:
        raise SpliceError(
            f"{n_slots} {what} placeholder positions but {n_frames} {what} frames "
            f"(placeholders per example {slots.sum(1).tolist()}, frames per {what} item {valid.sum(1).tolist()}); "
            f"each {what} item needs exactly one placeholder in its prompt"
        )
    frames = items[valid].to(embeds.dtype)  # N, H  (the valid frames, row-major = placeholder order)
    B, L, H = embeds.shape
    where = slots.reshape(-1).nonzero().squeeze(1)  # N flat positions, row-major = placeholder order
    return embeds.reshape(B * L, H).index_copy(0, where, frames).reshape(B, L, H)  # B, L, H (6x masked_scatter's speed)


def splice_audio(
    embeds: torch.Tensor,
    input_ids: torch.Tensor,
    audio: torch.Tensor,
    audio_lengths: torch.Tensor,
    audio_token_id: int,
) -> torch.Tensor:
    """Overwrite the placeholder positions of ``embeds`` with the valid projected audio frames.

    ``embeds (B, L, H)``, ``input_ids (B, L)``, ``audio (B, T', H)``, ``audio_lengths (B,)``. Row ``b`` must
    hold exactly ``audio_lengths[b]`` placeholders (frames past that length are padding and are never
    spliced); otherwise a :class:`SpliceError` names both counts.
    """
    slots = input_ids == audio_token_id  # B, L
    valid = lengths_mask(audio_lengths.to(audio.device), audio.shape[1])  # B, T'
    n_slots, n_frames = slots.sum(1).cpu(), valid.sum(1).cpu()
    if slots.shape[0] != valid.shape[0] or not torch.equal(n_slots, n_frames):
        raise SpliceError(
            f"{int(n_slots.sum())} audio placeholder positions but {int(n_frames.sum())} audio frames "
            f"(per example: placeholders {n_slots.tolist()}, frames {n_frames.tolist()}); "
            "each clip needs exactly one placeholder in its prompt"
        )
    return splice_media(embeds, input_ids, audio, audio_lengths, audio_token_id)
