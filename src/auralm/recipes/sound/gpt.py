"""A compact GPT over audio-tokenizer codes, class-conditioned through a prefix token.

Read it top to bottom (nanoGPT-style): config, attention, block, the model, then sampling.

Vocabulary (``V = codebook_size + 2 + n_labels`` input ids; the head predicts ``codebook_size + 1``)::

    0 .. K-1        the tokenizer's codes (K = codebook_size)
    K               EOS: the clip ended
    K + 1           NULL class: "no label" (classifier-free guidance) and BOS of the GPT-VAE decoder
    K + 2 + i       the class token of label i

A training sequence is ``[class, c_1, ..., c_T, EOS]``; inputs are all but the last id, targets all
but the first, so position 0 (the class token) predicts ``c_1``. Padding in targets is ``-100``.

Sampling is named for what it does: ``greedy`` (argmax), ``sample`` with ``temperature``, after
optional ``top_k`` (keep the k most likely) and ``top_p`` (nucleus: keep the smallest set of most
likely tokens whose probability sums to at least p) filters. With ``guidance_scale`` s != 1 the
logits are ``uncond + s * (cond - uncond)`` (classifier-free guidance; the model must have been
trained with label dropout ``cfg_dropout`` > 0 to have learnt the unconditional distribution).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError


@dataclasses.dataclass
class GPTConfig(Config):
    """Shape of the token GPT."""

    codebook_size: int = help_field(128, "number of tokenizer codes K")
    n_labels: int = help_field(10, "number of class labels (one prefix token each); 0 for an unconditional model")
    block_size: int = help_field(128, "longest input sequence (class token + codes)")
    n_layer: int = help_field(4, "transformer blocks")
    n_head: int = help_field(4, "attention heads")
    n_embd: int = help_field(128, "model width C")
    dropout: float = help_field(0.0, "dropout in attention and MLP")
    cfg_dropout: float = help_field(0.0, "probability of replacing the class token by NULL in training (classifier-free guidance)")

    def validate(self) -> None:
        if self.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.n_labels < 0 or self.block_size < 2 or self.n_layer < 1:
            raise ConfigError("n_labels must be >= 0, block_size >= 2 and n_layer >= 1")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0 <= self.dropout < 1 or not 0 <= self.cfg_dropout < 1:
            raise ConfigError("dropout and cfg_dropout must be in [0, 1)")

    @property
    def eos(self) -> int:
        return self.codebook_size

    @property
    def null(self) -> int:
        return self.codebook_size + 1

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 2 + self.n_labels

    @property
    def n_out(self) -> int:
        return self.codebook_size + 1  # codes + EOS

    def class_token(self, label_index: int) -> int:
        return self.codebook_size + 2 + label_index


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``; causal or bidirectional."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # B, T, C -> B, H, T, C/H
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        mask = None
        if key_padding is not None:  # (B, T) True = real token; bidirectional use only
            mask = key_padding[:, None, None, :]  # B, 1, 1, T (broadcast over heads and queries)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=self.causal
        )  # B, H, T, C/H
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # B, H, T, C/H -> B, T, C
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, causal: bool = True) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout, causal)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_padding)
        return x + self.mlp(self.ln2(x))


class TokenGPT(nn.Module):
    """Causal transformer over ``[class, codes...]``; optional ``cond`` vector added at every position."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.n_embd, cfg.n_head, cfg.dropout) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.n_out, bias=False)
        self.apply(_init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``idx`` (B, T) input ids, ``cond`` (B, C) or None -> logits (B, T, K + 1)."""
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of {T} ids is longer than block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(pos)  # B, T, C
        if cond is not None:
            x = x + cond[:, None, :]  # B, C -> B, 1, C: the same vector at every position
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # B, T, C -> B, T, K + 1


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


# -- training batches ------------------------------------------------------------------------------
def make_batch(
    seqs: list[torch.Tensor], first: torch.Tensor, eos: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Code sequences + one first id per row -> (inputs (B, T), targets (B, T)), targets padded with -100.

    Row b is ``[first_b, c_1, ..., c_n, EOS]``; inputs drop its last id, targets its first.
    """
    T = max(len(s) for s in seqs) + 1
    inputs = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    targets = torch.full((len(seqs), T), -100, dtype=torch.long)
    for b, s in enumerate(seqs):
        full = torch.cat([first[b : b + 1], s.long(), torch.tensor([eos])])  # n + 2 ids
        inputs[b, : len(s) + 1] = full[:-1]
        targets[b, : len(s) + 1] = full[1:]
    return inputs, targets


def class_inputs(cfg: GPTConfig, labels: torch.Tensor, generator: torch.Generator | None = None,
                 drop: float = 0.0) -> torch.Tensor:
    """Class token ids (B,) for label indices (B,); with ``drop`` > 0 each is NULL with that probability."""
    ids = labels.long() + cfg.codebook_size + 2
    if drop > 0:
        nulls = torch.rand(labels.shape, generator=generator) < drop
        ids = torch.where(nulls, torch.full_like(ids, cfg.null), ids)
    return ids


# -- sampling --------------------------------------------------------------------------------------
def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th kept), set the rest to -inf."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # B, 1
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probabilities sum to >= ``p``.

    A token is kept when the probability of the tokens ranked above it is still below ``p``; the most
    likely token is always kept.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # probability mass ranked above each token
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@dataclasses.dataclass
class SamplingConfig(Config):
    """How the next code is chosen."""

    strategy: str = help_field("sample", "greedy (argmax) or sample (temperature, then top_k/top_p)")
    temperature: float = help_field(1.0, "divide logits by this before sampling")
    top_k: int = help_field(0, "keep only the k most likely tokens (0: off)")
    top_p: float = help_field(1.0, "nucleus: keep the most likely tokens up to this probability mass (1: off)")
    guidance_scale: float = help_field(1.0, "classifier-free guidance s: uncond + s*(cond - uncond); 1 = off")

    def validate(self) -> None:
        if self.strategy not in ("greedy", "sample"):
            raise ConfigError(f"strategy must be greedy or sample, got {self.strategy!r}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("top_k must be >= 0 and top_p in (0, 1]")


def choose_next(logits: torch.Tensor, sc: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits (B, V) -> next ids (B,) by ``sc.strategy``."""
    if sc.strategy == "greedy":
        return logits.argmax(-1)
    logits = filter_top_p(filter_top_k(logits / sc.temperature, sc.top_k), sc.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: TokenGPT,
    first: torch.Tensor,
    n_tokens: int,
    sc: SamplingConfig | None = None,
    *,
    cond: torch.Tensor | None = None,
    stop_at_eos: bool = False,
    min_tokens: int = 1,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Continue each first id (B,) with codes: exactly ``n_tokens`` (EOS masked), or with
    ``stop_at_eos`` until EOS (masked for the first ``min_tokens``) or ``n_tokens``.
    ``cond`` (B, C) is passed to the model. Returns B LongTensors of codes.

    Guidance (``sc.guidance_scale`` != 1) runs each row twice, once with NULL as its first id.
    """
    sc = sc or SamplingConfig()
    cfg = model.cfg
    if n_tokens < 1 or n_tokens + 1 > cfg.block_size:
        raise ConfigError(f"n_tokens must be in [1, {cfg.block_size - 1}] for this model, got {n_tokens}")
    was_training = model.training
    model.eval()
    B = first.shape[0]
    guided = sc.guidance_scale != 1.0
    idx = first.long()[:, None]  # B, 1
    if guided:
        idx = torch.cat([idx, torch.full_like(idx, cfg.null)])  # 2B, 1: conditional rows, then NULL rows
        cond = None if cond is None else torch.cat([cond, cond])
    done = torch.zeros(B, dtype=torch.bool)
    lengths = torch.full((B,), n_tokens)
    for t in range(n_tokens):
        logits = model(idx, cond)[:, -1, :]  # (2)B, K + 1
        if guided:
            c, u = logits[:B], logits[B:]
            logits = u + sc.guidance_scale * (c - u)
        if not stop_at_eos or t < min_tokens:
            logits[:, cfg.eos] = float("-inf")
        nxt = choose_next(logits, sc, generator)  # B
        if stop_at_eos:
            ended = (nxt == cfg.eos) & ~done
            lengths[ended] = t
            done |= ended
            nxt = nxt.masked_fill(done, 0)
        step = torch.cat([nxt, nxt]) if guided else nxt
        idx = torch.cat([idx, step[:, None]], dim=1)
        if stop_at_eos and bool(done.all()):
            break
    model.train(was_training)
    codes = idx[:B, 1:]
    return [codes[b, : int(lengths[b])].clone() for b in range(B)]
