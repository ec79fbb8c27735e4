"""The S2 captioner: a frozen causal LM that cross-attends to several encoder branches, read top to bottom.

::

    playlist ──► branches, each a variable number of rows (masks from lengths):
                 audio     (B, n_tracks, D_a)  one pooled encoder vector per track (data.Featurizer)
                 tags      (B, n_tags,   D_t)  one text-encoder embedding per tag word (0 rows: no tags)
                 metadata  (B, 1,        D_m)  the numeric metadata vector (tempo histogram)
        ──connector.project──► per branch Linear -> GELU -> Dropout -> LayerNorm -> (B, n, H)
        ──LM (frozen)──► one cross-attention per branch in front of every N-th decoder layer, summed,
                         then the gate (resurrect / tanh / sum) ──► logits (B, L, V)
        ──► loss on the caption tokens (+ the end token) only

The prompt says what to describe ("Describe the playlist." / "Describe the track."); the caption is the
answer. ``CaptionModel.forward(batch)`` takes ``{"branches": {name: (rows (B, T, D), lengths (B,))},
"prompts": [...], "texts": [...]}``. Decoding goes through :func:`auralm.components.generation.generate`
(greedy, beam, sampling). See docs/caption.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from auralm.components.connectors import BRANCH_GATES, MultiBranchCrossConnector
from auralm.components.lm import build_example, decoder_layers, frozen_lm, pad_ids
from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError
from auralm.training.checkpoint import copy_trained

BRANCHES = ("audio", "tags", "metadata")
AUDIO_POOLING = ("mean", "meanstd")


@dataclasses.dataclass
class CaptionConfig(Config):
    """The S2 model: the LM, the encoders of the branches, and the cross-attention connector."""

    lm: str = help_field("smollm2-135m-instruct", "causal LM: hub name (smollm2-135m-instruct, gpt2 ...) or tiny-gpt2 / tiny-llama")
    branches: list = help_field(list(BRANCHES), f"branches the LM attends to, a subset of {', '.join(BRANCHES)}")
    audio_encoder: str = help_field("whisper-tiny.en", "audio encoder (auralm.components.encoders), e.g. whisper-tiny.en, conv-tiny")
    audio_pooling: str = help_field("meanstd", "one vector per track from the encoder states: mean, or meanstd (mean and std, concatenated)")
    tag_encoder: str = help_field("all-minilm-l6-v2", "tag words: a text encoder name (mean-pooled, L2-normalised), or "
                                                      "vocab (one-hot over the closed tag vocabulary: an unknown tag is an error)")
    metadata_dim: int = help_field(10, "width of the metadata vector")
    every_n: int = help_field(1, "a cross-attention block before every N-th decoder layer from first_layer")
    first_layer: int = help_field(0, "the first decoder layer with a block (negative: from the top, -6 = the last 6 "
                                     "layers): the layers below see text alone and need no backward pass")
    gate: str = help_field("resurrect", f"gate of the blocks: {', '.join(BRANCH_GATES)}")
    tau: float = help_field(0.2, "resurrect gate: threshold of the self-resurrecting unit")
    stream_scale: bool = help_field(True, "scale the branches' output by the LM stream's RMS at each position "
                                          "(so they are heard from the first steps; see cross.stream_rms)")
    heads: int = help_field(4, "attention heads of each branch's cross-attention")
    dropout: float = help_field(0.1, "dropout in the branch projectors")
    playlist_prompt: str = help_field("Describe the playlist.", "instruction given with a playlist")
    track_prompt: str = help_field("Describe the track.", "instruction given with a single track")
    system: str | None = help_field("", "chat system message (null: the template's default)")

    def validate(self) -> None:
        if not self.branches or not isinstance(self.branches, list) or set(self.branches) - set(BRANCHES):
            raise ConfigError(f"branches must be a non-empty subset of {', '.join(BRANCHES)}, got {self.branches!r}")
        if len(set(self.branches)) != len(self.branches):
            raise ConfigError(f"branches repeats a name: {self.branches}")
        if self.gate not in BRANCH_GATES:
            raise ConfigError(f"gate must be one of {', '.join(BRANCH_GATES)}, got {self.gate!r}")
        if self.audio_pooling not in AUDIO_POOLING:
            raise ConfigError(f"audio_pooling must be one of {', '.join(AUDIO_POOLING)}, got {self.audio_pooling!r}")
        for name in ("metadata_dim", "every_n", "heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.tau < 0.5 or not 0 <= self.dropout < 1:
            raise ConfigError(f"need 0 <= tau < 0.5 and 0 <= dropout < 1, got {self.tau}, {self.dropout}")


class CaptionModel(nn.Module):
    """Frozen LM + :class:`MultiBranchCrossConnector` (trained). ``dims``: branch name -> row width;
    ``frozen``: the frozen feature encoders' names and revisions (recorded with the weights)."""

    def __init__(self, cfg: CaptionConfig, dims: dict[str, int], frozen: dict[str, dict[str, str]] | None = None,
                 lm: nn.Module | None = None, tokenizer: Any = None):
        super().__init__()
        self.config = cfg
        f = frozen_lm(cfg.lm, lm, tokenizer, owner="CaptionModel")
        self.lm, self.tokenizer, self.lm_revision = f.lm, f.tokenizer, f.revision
        self.end_token_id, self.pad_token_id, self.vocab_size, self.lm_dim = f.end_token_id, f.pad_token_id, f.vocab_size, f.dim
        lm = self.lm
        missing = [b for b in cfg.branches if b not in dims]
        if missing:
            raise ConfigError(f"no row width given for branch(es) {missing}")
        self.dims = {b: int(dims[b]) for b in cfg.branches}
        layers = decoder_layers(lm)
        try:
            self.connector = MultiBranchCrossConnector(self.dims, self.lm_dim, len(layers), every_n=cfg.every_n,
                                                       heads=cfg.heads, gate=cfg.gate, tau=cfg.tau, dropout=cfg.dropout,
                                                       first_layer=cfg.first_layer, stream_scale=cfg.stream_scale)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.connector.attach(layers)
        self.frozen = dict(frozen or {})

    def train(self, mode: bool = True) -> CaptionModel:
        super().train(mode)
        self.lm.eval()  # the frozen LM never drops out
        return self

    @property
    def device(self) -> torch.device:
        return next(self.connector.parameters()).device

    # -- weights ------------------------------------------------------------------------------------
    def frozen_parts(self) -> dict[str, dict[str, str]]:
        return {"lm": {"name": getattr(self.lm, "auralm_name", self.config.lm),
                       "revision": getattr(self.lm, "auralm_revision", "")}, **self.frozen}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"connector.{k}": v.detach().clone() for k, v in self.connector.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        own = {f"connector.{k}": v for k, v in self.connector.state_dict().items()}
        copy_trained(own, state, strict, f"LM {self.config.lm}, gate {self.config.gate}, branches {', '.join(self.config.branches)}")

    # -- inputs -------------------------------------------------------------------------------------
    def _branches(self, batch: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        rows = batch.get("branches")
        if not isinstance(rows, dict):
            raise ConfigError("a batch needs 'branches': name -> (rows (B, T, D), lengths (B,))")
        out = {}
        for name, (states, lengths) in rows.items():
            if name not in self.dims:
                raise ConfigError(f"branch {name!r} is not one this model attends to ({', '.join(self.dims)})")
            out[name] = (states.to(self.device), torch.as_tensor(lengths).to(self.device))
        return out

    def build_inputs(self, batch: dict[str, Any], answers: bool, left_pad: bool) -> dict[str, Any]:
        """Token embeddings of prompt (+ caption), attention mask from lengths, labels, and the branches."""
        branches = self._branches(batch)
        prompts = batch["prompts"]
        B = len(prompts)
        texts = batch.get("texts") if answers else None
        if answers and texts is None:
            raise ConfigError("training needs batch['texts'] (the captions)")
        if any(s.shape[0] != B for s, _ in branches.values()) or (texts is not None and len(texts) != B):
            raise ConfigError(f"{B} prompts but branches of batch {[s.shape[0] for s, _ in branches.values()]} "
                              f"and {len(texts or [])} captions")
        examples = [build_example(self.tokenizer, p, 0, texts[i] if texts is not None else None, self.config.system)
                    for i, p in enumerate(prompts)]
        ids = pad_ids([e[0] for e in examples], self.pad_token_id, left_pad).to(self.device)  # B, L
        labels = pad_ids([e[1] for e in examples], -100, left_pad).to(self.device)  # B, L
        mask = pad_ids([[1] * len(e[0]) for e in examples], 0, left_pad).to(self.device)  # B, L (from lengths)
        embeds = self.lm.get_input_embeddings()(ids.clamp(max=self.vocab_size - 1))  # B, L, H
        return {"embeds": embeds, "mask": mask, "labels": labels, "audio": branches, "audio_lengths": None}

    def audio_context(self, branches: dict[str, tuple[torch.Tensor, torch.Tensor]], _lengths: Any = None) -> Any:
        """Make the branches visible to the hooked cross-attention blocks (the name generation.py calls)."""
        return self.connector.memories(branches)

    # -- training and decoding ----------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"loss", "n_tokens"}``: the mean cross-entropy over caption tokens (and end tokens)."""
        x = self.build_inputs(batch, answers=True, left_pad=False)
        targets = x["labels"][:, 1:]  # B, L-1: token t is predicted at position t-1
        keep = (targets != -100).any(0).nonzero().squeeze(1)  # K columns with a caption token
        with self.audio_context(x["audio"]):
            logits = self.lm(inputs_embeds=x["embeds"], attention_mask=x["mask"], use_cache=False,
                             logits_to_keep=keep).logits  # B, K, V
        targets = targets[:, keep]  # B, K
        n_tokens = (targets != -100).sum()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                               reduction="sum") / n_tokens.clamp(min=1)
        return {"loss": loss, "n_tokens": n_tokens}

    def generate(self, batch: dict[str, Any], gen: Any = None) -> list[str]:
        """Captions for a batch (``gen``: :class:`auralm.components.generation.GenerationConfig`, default greedy)."""
        from auralm.components.generation import generate

        return generate(self, batch, gen)
