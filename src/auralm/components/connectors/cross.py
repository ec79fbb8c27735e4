"""Deep fusion: gated cross-attention blocks run before every N-th decoder layer of a causal LM.

The blocks live in the connector, **not** inside the LM: :meth:`CrossConnector.attach` registers a
forward *pre-hook* on decoder layers ``0, N, 2N, ...`` that rewrites the layer's input hidden states
``x (B, L, H)`` with its block's output. The LM's modules and state-dict keys are untouched, so its
pretrained weights load unchanged, and with no audio set (:meth:`CrossConnector.audio`) the hooks do
nothing and the LM is exactly the plain LM.

Audio keys/values are the stacked-and-projected audio ``(B, T', H)`` (the same :class:`StackProjector`
as the prefix family), masked by their lengths. Two gates, both an exact identity at initialisation:

* ``tanh`` (Flamingo): ``x = x + tanh(g_att) * XAttn(LN(x), audio)``, then
  ``x = x + tanh(g_ff) * FFW(LN(x))``, with ``g_att = g_ff = 0`` at init, so ``x`` passes unchanged.
* ``sigmoid`` (VisualGPT's self-resurrecting activation unit): ``h = LN(x)``, ``s = sigmoid(alpha * h)``,
  ``B_vis = s * [s > tau]``, ``B_lan = (1 - s) * [(1 - s) > tau]`` (element-wise, complementary) and
  ``y = B_vis * XAttn(h, audio) + B_lan * x``. Because ``y != x`` for any finite gate input, the block
  returns ``x + m * (y - x)`` with a learned scalar ``m`` initialised to 0 (a zero-init blend from the LM
  path to VisualGPT's mix); the FFW sub-layer is tanh-gated as above. At init ``m = 0`` gives ``x``.

``x + 0 * finite == x`` bit for bit, which is what the gate-zero parity tests check.

Several branches (S2 caption): :class:`MultiBranchCrossConnector` projects each encoder branch (audio,
tags, metadata ...) with its own ``Linear -> GELU -> Dropout -> LayerNorm`` and hooks a
:class:`MultiBranchCrossAttention` in front of every N-th layer: one cross-attention per branch, summed,
then a gate: ``resurrect`` (VisualGPT's self-resurrecting unit over the LM stream and the summed
branches, with tau), ``tanh`` (zero-initialised) or ``sum``. Each is an exact identity at initialisation;
masks come from lengths, and a branch with no rows in an item contributes nothing to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from auralm.components.connectors.prefix import StackProjector, lengths_mask

GATES = ("tanh", "sigmoid")


class GatedCrossAttention(nn.Module):
    """One block: multi-head cross-attention from the LM stream to the audio, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int = 4, gate: str = "tanh", tau: float = 0.2, alpha: float = 1.0):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"unknown gate {gate!r}; valid: {', '.join(GATES)}")
        if dim % heads:
            raise ValueError(f"LM width {dim} is not divisible by connector.heads={heads}")
        self.heads, self.gate_kind, self.tau, self.alpha = heads, gate, float(tau), float(alpha)
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        # zero-initialised gates: tanh(0) = 0 and blend 0 leave the LM's hidden states unchanged
        self.gate_attn = nn.Parameter(torch.zeros(1))  # tanh gate, or the sigmoid family's blend m
        self.gate_ff = nn.Parameter(torch.zeros(1))

    def attend(self, h: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h (B, L, H)`` queries, ``audio (B, T', H)`` keys/values, ``mask (B, T')`` -> ``(B, L, H)``."""
        B, L, H = h.shape
        T = audio.shape[1]

        def split(t: torch.Tensor, n: int) -> torch.Tensor:
            return t.view(B, n, self.heads, H // self.heads).transpose(1, 2)  # B, n, H -> B, heads, n, H/heads

        q, k, v = split(self.q(h), L), split(self.k(audio), T), split(self.v(audio), T)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # B, heads, L, H/heads
        return self.o(out.transpose(1, 2).reshape(B, L, H))  # B, L, H

    def forward(self, x: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dtype = self.norm.weight.dtype
        xs = x.to(dtype)
        h = self.norm(xs)  # B, L, H
        att = self.attend(h, audio.to(dtype), mask)
        if self.gate_kind == "tanh":
            xs = xs + torch.tanh(self.gate_attn) * att
        else:
            s = torch.sigmoid(self.alpha * h)
            b_vis = s * (s > self.tau)
            b_lan = (1 - s) * ((1 - s) > self.tau)
            mixed = b_vis * att + b_lan * xs
            xs = xs + self.gate_attn * (mixed - xs)
        xs = xs + torch.tanh(self.gate_ff) * self.ff(self.ff_norm(xs))
        return xs.to(x.dtype)


class CrossConnector(nn.Module):
    """Projector + one :class:`GatedCrossAttention` per hooked decoder layer (every ``every_n``-th)."""

    def __init__(
        self, audio_dim: int, lm_dim: int, num_layers: int, *, stack: int = 4, projector: str = "mlp",
        hidden: int = 0, every_n: int = 1, heads: int = 4, gate: str = "tanh", tau: float = 0.2, alpha: float = 1.0,
        adapter_layers: int = 0, adapter_heads: int = 4, adapter_dropout: float = 0.1,
    ):
        super().__init__()
        if num_layers <= 0:
            raise ValueError("the cross connector needs the LM's number of decoder layers (num_layers > 0)")
        self.projector = StackProjector(audio_dim, lm_dim, stack, projector, hidden, adapter_layers, adapter_heads,
                                        adapter_dropout)
        self.layer_ids = list(range(0, num_layers, every_n))
        self.blocks = nn.ModuleDict({str(i): GatedCrossAttention(lm_dim, heads, gate, tau, alpha) for i in self.layer_ids})
        self._audio: tuple[torch.Tensor, torch.Tensor] | None = None
        self._handles: list[Any] = []

    def project(self, states: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, D)`` -> ``(B, T', H)`` and projected lengths."""
        return self.projector(states, lengths)

    def attach(self, layers: nn.ModuleList) -> None:
        """Hook the blocks in front of their decoder layers (once; re-attaching replaces the hooks)."""
        self.detach()
        if len(layers) <= self.layer_ids[-1]:
            raise ValueError(f"the LM has {len(layers)} decoder layers; the connector was built for {self.layer_ids[-1] + 1}+")
        for i in self.layer_ids:
            self._handles.append(layers[i].register_forward_pre_hook(self._hook(self.blocks[str(i)]), with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def audio(self, audio: torch.Tensor, lengths: torch.Tensor) -> Iterator[None]:
        """Make ``audio (B, T', H)`` with ``lengths (B,)`` visible to the blocks inside the ``with``."""
        self._audio = (audio, lengths_mask(lengths.to(audio.device), audio.shape[1]))
        try:
            yield
        finally:
            self._audio = None

    def _hook(self, block: GatedCrossAttention):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if self._audio is None:
                return None  # no audio set: the plain LM
            x = args[0] if args else kwargs["hidden_states"]  # B, L, H
            audio, mask = self._audio
            if x.shape[0] != audio.shape[0]:  # beam search / num_return_sequences expand the batch
                if x.shape[0] % audio.shape[0]:
                    raise ValueError(f"hidden batch {x.shape[0]} is not a multiple of the audio batch {audio.shape[0]}")
                k = x.shape[0] // audio.shape[0]
                audio, mask = audio.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
            y = block(x, audio, mask)
            if args:
                return (y, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": y}

        return hook


# -- several encoder branches (S2 caption) ------------------------------------------------------------
BRANCH_GATES = ("resurrect", "tanh", "sum")


class BranchProjector(nn.Module):
    """One branch's rows to the LM width: ``Linear -> GELU -> Dropout -> LayerNorm`` (``(B, T, D) -> (B, T, H)``)."""

    def __init__(self, in_dim: int, lm_dim: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, lm_dim), nn.GELU(), nn.Dropout(dropout), nn.LayerNorm(lm_dim))
        self.in_dim = int(in_dim)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.shape[-1] != self.in_dim:
            raise ValueError(f"branch rows have width {rows.shape[-1]}, the projector takes {self.in_dim}")
        return self.net(rows)


def stream_rms(x: torch.Tensor, clamp: float = 4.0) -> torch.Tensor:
    """``(B, L, 1)``: each position's RMS of the LM stream ``x (B, L, H)`` (no gradient), capped at ``clamp`` x
    the row's median (attention-sink positions carry RMS in the hundreds). The branch outputs (LayerNorm
    scale, RMS ~1) are multiplied by it, so they speak as loud as the stream they join: in SmolLM2-135M's
    top layers the stream's RMS is 15 to 26, and an unscaled branch would need hundreds of steps to be heard."""
    rms = x.detach().float().pow(2).mean(-1, keepdim=True).sqrt()  # B, L, 1
    cap = clamp * rms.median(dim=1, keepdim=True).values  # B, 1, 1
    return torch.minimum(rms, cap).to(x.dtype)


def resurrect_mix(lang: torch.Tensor, enc: torch.Tensor, alpha: torch.Tensor, tau: float) -> torch.Tensor:
    """VisualGPT's self-resurrecting activation unit, element-wise:
    ``alpha * [alpha > tau] * lang + (1 - alpha) * [alpha < 1 - tau] * enc``."""
    return alpha * (alpha > tau) * lang + (1 - alpha) * (alpha < 1 - tau) * enc


class MultiBranchCrossAttention(nn.Module):
    """One block: a cross-attention per branch (own q/k/v/o) from ``LN(x)`` to that branch's rows, summed
    into ``enc (B, L, H)``, then the gate:

    * ``resurrect``: ``alpha = sigmoid(W [LN(x); enc])``, ``y = resurrect_mix(x, enc, alpha, tau)`` and
      ``out = x + m * (y - x)`` with a learned scalar ``m`` initialised to 0 (``y != x`` for any finite
      ``alpha``, so the blend is what makes the block an identity at initialisation);
    * ``tanh``: ``out = x + tanh(g) * enc``, ``g = 0`` at init (Flamingo, Llama-3.2-Vision);
    * ``sum``: ``out = x + enc``, the output projections zero-initialised (so ``enc = 0`` at init).

    A row whose branch has no valid positions (length 0: a playlist without tags) gets no contribution
    from that branch (its attention output is zeroed, never a softmax over padding). With
    ``stream_scale`` (default) ``enc`` is multiplied by the stream's RMS per position (:func:`stream_rms`).
    """

    def __init__(self, dim: int, branches: list[str], heads: int = 4, gate: str = "resurrect", tau: float = 0.2,
                 stream_scale: bool = True):
        super().__init__()
        self.stream_scale = bool(stream_scale)
        if gate not in BRANCH_GATES:
            raise ValueError(f"unknown gate {gate!r}; valid: {', '.join(BRANCH_GATES)}")
        if dim % heads:
            raise ValueError(f"LM width {dim} is not divisible by heads={heads}")
        self.heads, self.gate_kind, self.tau = heads, gate, float(tau)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict({b: nn.ModuleDict({k: nn.Linear(dim, dim) for k in "qkvo"}) for b in branches})
        if gate == "resurrect":
            self.gate_proj = nn.Linear(2 * dim, dim)
            self.blend = nn.Parameter(torch.zeros(1))
        elif gate == "tanh":
            self.gate_attn = nn.Parameter(torch.zeros(1))
        else:
            for a in self.attn.values():
                nn.init.zeros_(a["o"].weight)
                nn.init.zeros_(a["o"].bias)

    def attend(self, branch: str, h: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h (B, L, H)`` queries, ``rows (B, T, H)`` keys/values, ``mask (B, T)`` -> ``(B, L, H)``."""
        B, L, H = h.shape
        T = rows.shape[1]
        a = self.attn[branch]

        def split(t: torch.Tensor, n: int) -> torch.Tensor:
            return t.view(B, n, self.heads, H // self.heads).transpose(1, 2)  # B, n, H -> B, heads, n, H/heads

        has = mask.any(1)  # B: rows with at least one valid position
        safe = mask | ~has[:, None]  # an empty row attends somewhere harmless; its output is zeroed below
        q, k, v = split(a["q"](h), L), split(a["k"](rows), T), split(a["v"](rows), T)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])  # B, heads, L, H/h
        out = a["o"](out.transpose(1, 2).reshape(B, L, H))  # B, L, H
        return out * has[:, None, None].to(out.dtype)

    def forward(self, x: torch.Tensor, memories: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        dtype = self.norm.weight.dtype
        xs = x.to(dtype)
        h = self.norm(xs)  # B, L, H
        enc = torch.zeros_like(xs)
        for name, (rows, mask) in memories.items():
            enc = enc + self.attend(name, h, rows.to(dtype), mask)
        if self.stream_scale:
            enc = enc * stream_rms(xs)
        if self.gate_kind == "tanh":
            out = xs + torch.tanh(self.gate_attn) * enc
        elif self.gate_kind == "sum":
            out = xs + enc
        else:
            alpha = torch.sigmoid(self.gate_proj(torch.cat([h, enc], -1)))  # B, L, H
            out = xs + self.blend * (resurrect_mix(xs, enc, alpha, self.tau) - xs)
        return out.to(x.dtype)


class MultiBranchCrossConnector(nn.Module):
    """Deep fusion of several encoder branches: a :class:`BranchProjector` per branch and a
    :class:`MultiBranchCrossAttention` hooked in front of decoder layers ``F, F+N, F+2N, ...`` (``F`` =
    ``first_layer``, negative: counted from the top; as :class:`CrossConnector`: the LM's modules and
    state-dict keys stay unchanged). Blocks only in the top layers make training much cheaper: the layers
    below the first block see text alone, so no gradient runs through them.

    ``branch_dims``: branch name -> width of its rows. Inside ``with connector.memories(rows)``, with
    ``rows`` = name -> ``(states (B, T, D), lengths (B,))``, the hooked blocks attend to the projected rows;
    a branch left out (or with length 0 in a row) contributes nothing. Masks come from the lengths only.
    """

    def __init__(self, branch_dims: dict[str, int], lm_dim: int, num_layers: int, *, every_n: int = 1, heads: int = 4,
                 gate: str = "resurrect", tau: float = 0.2, dropout: float = 0.1, first_layer: int = 0,
                 stream_scale: bool = True):
        super().__init__()
        if not branch_dims:
            raise ValueError("the multi-branch connector needs at least one branch")
        if num_layers <= 0 or every_n <= 0:
            raise ValueError(f"need num_layers > 0 and every_n > 0, got {num_layers}, {every_n}")
        self.branches = list(branch_dims)
        self.projectors = nn.ModuleDict({b: BranchProjector(d, lm_dim, dropout) for b, d in branch_dims.items()})
        first = first_layer if first_layer >= 0 else num_layers + first_layer
        if not 0 <= first < num_layers:
            raise ValueError(f"first_layer {first_layer} is outside the LM's {num_layers} decoder layers")
        self.layer_ids = list(range(first, num_layers, every_n))
        self.blocks = nn.ModuleDict({str(i): MultiBranchCrossAttention(lm_dim, self.branches, heads, gate, tau, stream_scale)
                                     for i in self.layer_ids})
        self._memories: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._handles: list[Any] = []

    def project(self, rows: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> ``(states (B, T, D), lengths (B,))`` -> name -> ``(projected (B, T, H), mask (B, T))``."""
        unknown = sorted(set(rows) - set(self.branches))
        if unknown:
            raise ValueError(f"unknown branch(es) {unknown}; this connector has {', '.join(self.branches)}")
        out = {}
        for name, (states, lengths) in rows.items():
            if states.ndim != 3 or lengths.shape != states.shape[:1]:
                raise ValueError(f"branch {name}: expected states (B, T, D) and lengths (B,), got "
                                 f"{tuple(states.shape)} and {tuple(lengths.shape)}")
            if (lengths < 0).any() or (lengths > states.shape[1]).any():
                raise ValueError(f"branch {name}: lengths must be in 0..{states.shape[1]}, got {lengths.tolist()}")
            out[name] = (self.projectors[name](states), lengths_mask(lengths.to(states.device), states.shape[1]))
        return out

    def attach(self, layers: nn.ModuleList) -> None:
        """Hook the blocks in front of their decoder layers (re-attaching replaces the hooks)."""
        self.detach()
        if len(layers) <= self.layer_ids[-1]:
            raise ValueError(f"the LM has {len(layers)} decoder layers; the connector was built for {self.layer_ids[-1] + 1}+")
        for i in self.layer_ids:
            self._handles.append(layers[i].register_forward_pre_hook(self._hook(self.blocks[str(i)]), with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @contextlib.contextmanager
    def memories(self, rows: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """Make the branches' rows (name -> ``(states, lengths)``) visible to the blocks inside the ``with``."""
        self._memories = self.project(rows)
        try:
            yield
        finally:
            self._memories = None

    def _hook(self, block: MultiBranchCrossAttention):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if not self._memories:
                return None  # no branch set: the plain LM
            x = args[0] if args else kwargs["hidden_states"]  # B, L, H
            memories = {}
            for name, (rows, mask) in self._memories.items():
                if x.shape[0] != rows.shape[0]:  # beam search / num_return_sequences expand the batch
                    if x.shape[0] % rows.shape[0]:
                        raise ValueError(f"hidden batch {x.shape[0]} is not a multiple of the branch batch {rows.shape[0]}")
                    k = x.shape[0] // rows.shape[0]
                    rows, mask = rows.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
                memories[name] = (rows, mask)
            y = block(x, memories)
            if args:
                return (y, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": y}

        return hook
