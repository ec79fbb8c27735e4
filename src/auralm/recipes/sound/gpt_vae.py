"""GPT-VAE over code sequences: a bidirectional transformer encoder -> latent z -> a causal GPT decoder.

::

    codes (B, T) --embed + pos--> bidirectional blocks --masked mean over T--> (B, C)
                 --linear--> mu, logvar (B, L)            z = mu (stage 1, "ae")
                                                          z = mu + exp(logvar/2) * eps (stage 2, "vae")
    z --linear--> (B, C), ADDED TO EVERY POSITION of the decoder's input embeddings
    decoder = TokenGPT with no labels: input [BOS, c_1, ..., c_T] (BOS = the NULL id), target [c_1, ..., c_T, EOS]

Adding z at every position (rather than only as a prefix embedding) keeps the latent in reach of
every step, which makes the decoder less likely to ignore it (posterior collapse).

Training (see :mod:`auralm.recipes.sound.train_gpt`): stage 1 is a plain autoencoder (z = mu, no KL term);
stage 2 initialises encoder and decoder from the stage-1 checkpoint and adds ``w(step) * KL`` where
the weight ``w`` is annealed from 0 to ``beta`` (:func:`kl_weight`) and the KL term is shaped by a
free-bits mode (:func:`kl_term`). :func:`kl_per_dim` and :func:`active_units` report how much of
the latent is used.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError
from auralm.recipes.sound.gpt import Block, GPTConfig, SamplingConfig, TokenGPT, generate

FREE_BITS_MODES = ("none", "per_dim", "total")
ANNEAL_SCHEDULES = ("constant", "linear", "cyclical")


@dataclasses.dataclass
class GPTVAEConfig(Config):
    """Shape of the GPT-VAE (encoder and decoder share width and head count)."""

    codebook_size: int = help_field(128, "number of tokenizer codes K")
    block_size: int = help_field(128, "longest sequence (BOS + codes)")
    latent_dim: int = help_field(16, "size L of the latent z")
    enc_layers: int = help_field(2, "bidirectional encoder blocks")
    dec_layers: int = help_field(4, "causal decoder blocks")
    n_head: int = help_field(4, "attention heads")
    n_embd: int = help_field(128, "model width C")
    dropout: float = help_field(0.0, "dropout in attention and MLP")

    def validate(self) -> None:
        if self.latent_dim < 1 or self.enc_layers < 1:
            raise ConfigError("latent_dim and enc_layers must be at least 1")
        self.decoder_config()  # validates the rest

    def decoder_config(self) -> GPTConfig:
        return GPTConfig(codebook_size=self.codebook_size, n_labels=0, block_size=self.block_size,
                         n_layer=self.dec_layers, n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)


class GPTVAE(nn.Module):
    """Encoder (bidirectional) + latent + decoder (causal :class:`TokenGPT`)."""

    def __init__(self, cfg: GPTVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.n_embd
        self.enc_tok = nn.Embedding(cfg.codebook_size, C)
        self.enc_pos = nn.Embedding(cfg.block_size, C)
        self.enc_blocks = nn.ModuleList(Block(C, cfg.n_head, cfg.dropout, causal=False) for _ in range(cfg.enc_layers))
        self.enc_ln = nn.LayerNorm(C)
        self.to_stats = nn.Linear(C, 2 * cfg.latent_dim)
        self.z_proj = nn.Linear(cfg.latent_dim, C)
        self.decoder = TokenGPT(cfg.decoder_config())
        for m in (self.enc_tok, self.enc_pos):
            nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(self.to_stats.bias)
        nn.init.normal_(self.to_stats.weight, 0.0, 0.02)

    def encode(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``codes`` (B, T) (padding anywhere past ``lengths``) -> mu, logvar (B, L)."""
        B, T = codes.shape
        if lengths is None:
            lengths = torch.full((B,), T)
        real = torch.arange(T)[None, :] < lengths[:, None]  # B, T
        x = self.enc_tok(codes.clamp(0, self.cfg.codebook_size - 1)) + self.enc_pos(torch.arange(T))  # B, T, C
        for block in self.enc_blocks:
            x = block(x, key_padding=real)
        x = self.enc_ln(x)
        pooled = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # B, T, C -> B, C
        mu, logvar = self.to_stats(pooled).chunk(2, dim=-1)  # B, 2L -> 2 x (B, L)
        return mu, logvar.clamp(-10.0, 10.0)

    def decode_logits(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decoder inputs (B, T) starting with BOS, latent (B, L) -> logits (B, T, K + 1)."""
        return self.decoder(inputs, self.z_proj(z))

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor, inputs: torch.Tensor, *, stochastic: bool,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> logits (B, T, K + 1), mu, logvar. ``stochastic`` samples z (VAE), else z = mu (AE)."""
        mu, logvar = self.encode(codes, lengths)
        z = mu
        if stochastic:
            eps = torch.randn(mu.shape, generator=generator)
            z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation
        return self.decode_logits(inputs, z), mu, logvar

    @torch.no_grad()
    def decode(self, z: torch.Tensor, n_tokens: int, sc: SamplingConfig | None = None) -> list[torch.Tensor]:
        """Latents (B, L) -> B code sequences of ``n_tokens`` (greedy unless ``sc`` says otherwise)."""
        bos = torch.full((z.shape[0],), self.decoder.cfg.null)
        return generate(self.decoder, bos, n_tokens, sc or SamplingConfig(strategy="greedy"), cond=self.z_proj(z))

    @torch.no_grad()
    def interpolate(self, a_codes: torch.Tensor, b_codes: torch.Tensor, steps: int,
                    n_tokens: int | None = None) -> list[torch.Tensor]:
        """Decode (greedily) ``steps`` points on the line from mu(a) to mu(b), both ends included."""
        if steps < 2:
            raise ConfigError(f"steps must be at least 2 (the two ends), got {steps}")
        self.eval()
        mu_a, _ = self.encode(a_codes.long()[None])
        mu_b, _ = self.encode(b_codes.long()[None])
        t = torch.linspace(0, 1, steps)[:, None]  # S, 1
        z = (1 - t) * mu_a + t * mu_b  # S, L
        n = n_tokens or max(len(a_codes), len(b_codes))
        return self.decode(z, n)


# -- KL, annealing, free bits, active units ----------------------------------------------------------
def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, averaged over the batch: (B, L) -> (L,)."""
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean(0)


def kl_term(kl_dims: torch.Tensor, mode: str, target: float) -> torch.Tensor:
    """The KL term of the loss from the batch-averaged KL per dimension (L,).

    * ``none``: sum_i KL_i
    * ``per_dim``: sum_i max(target, KL_i)   (each dimension gets ``target`` nats for free)
    * ``total``: max(target, sum_i KL_i)     (the whole latent gets ``target`` nats for free)
    """
    if mode == "none":
        return kl_dims.sum()
    if mode == "per_dim":
        return torch.clamp(kl_dims, min=target).sum()
    if mode == "total":
        return torch.clamp(kl_dims.sum(), min=target)
    raise ConfigError(f"unknown free-bits mode {mode!r}; choose one of {', '.join(FREE_BITS_MODES)}")


def kl_weight(step: int, schedule: str, beta: float, anneal_steps: int, cycles: int = 4) -> float:
    """The KL weight after ``step`` annealing steps.

    * ``constant``: beta
    * ``linear``: beta * min(1, step / anneal_steps)
    * ``cyclical`` (Fu et al. 2019): ``anneal_steps`` is split into ``cycles`` periods; in each the
      weight rises linearly from 0 to beta over the first half and holds beta for the second; after
      ``anneal_steps`` it stays at beta.
    """
    if schedule == "constant" or anneal_steps <= 0:
        return float(beta)
    if schedule == "linear":
        return float(beta * min(1.0, step / anneal_steps))
    if schedule == "cyclical":
        if step >= anneal_steps:
            return float(beta)
        period = anneal_steps / cycles
        phase = (step % period) / period
        return float(beta * min(1.0, 2.0 * phase))
    raise ConfigError(f"unknown KL schedule {schedule!r}; choose one of {', '.join(ANNEAL_SCHEDULES)}")


def active_units(mus: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Burda et al. (2016): dimension i is active when Cov_x(E_q[z_i|x]) = Var over data of mu_i > threshold.

    ``mus`` (N, L) posterior means over a data set -> (number active, variance per dimension (L,)).
    """
    var = mus.var(0, unbiased=True) if mus.shape[0] > 1 else torch.zeros(mus.shape[1])
    return int((var > threshold).sum()), var


def latent_report(model: GPTVAE, batches: list[tuple[torch.Tensor, torch.Tensor]], threshold: float = 0.01) -> dict:
    """KL per dimension (nats, averaged over the data) and active units of the encoder on ``batches``."""
    model.eval()
    mus, logvars = [], []
    with torch.no_grad():
        for codes, lengths in batches:
            mu, logvar = model.encode(codes, lengths)
            mus.append(mu)
            logvars.append(logvar)
    mu, logvar = torch.cat(mus), torch.cat(logvars)
    kl = kl_per_dim(mu, logvar)
    n_active, var = active_units(mu, threshold)
    return {
        "n": int(mu.shape[0]),
        "latent_dim": int(mu.shape[1]),
        "kl_total": round(float(kl.sum()), 4),
        "kl_per_dim": [round(float(v), 4) for v in kl],
        "active_units": n_active,
        "active_threshold": threshold,
        "mu_variance_per_dim": [round(float(v), 4) for v in var],
        "kl_total_bits": round(float(kl.sum()) / math.log(2), 4),
    }
