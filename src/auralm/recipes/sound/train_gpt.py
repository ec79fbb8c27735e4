"""Training recipes for the token GPT (``kind: class``) and the GPT-VAE (``kind: vae``), with exact resume.

Read :func:`train_gpt` top to bottom: load the token set, :func:`setup` (build, or resume from the
checkpoint, or initialise stage 2 from stage 1), then the loop: one :func:`train_step` per step,
validation every ``eval_every`` steps, a checkpoint every ``save_every`` steps and at the end.

A token set (:class:`TokenSet`) is a folder with ``codes.safetensors`` (codes (N, T) padded,
lengths (N,), labels (N,)) and ``tokens.json`` (codebook size, label names, ids, splits, the
tokenizer that made it). A checkpoint is a folder (written whole with :func:`auralm.core.io.atomic_dir`)::

    config.yaml        the resolved TrainGPTConfig (model shape included)
    model.safetensors  the weights
    state.pt           optimizer, scheduler, step, KL weight and anneal step, RNG states, history
    meta.json          kind, stage, label names, codebook size, clip length in tokens, tokenizer, metrics
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from auralm.core.config import Config, check_recipe, help_field, recipe_field, save_config
from auralm.core.errors import AuralmError, ConfigError
from auralm.core.io import atomic_dir, atomic_write_json
from auralm.core.progress import progress
from auralm.recipes.sound.gpt import GPTConfig, TokenGPT, class_inputs, make_batch
from auralm.recipes.sound.gpt_vae import (
    ANNEAL_SCHEDULES,
    FREE_BITS_MODES,
    GPTVAE,
    GPTVAEConfig,
    kl_per_dim,
    kl_term,
    kl_weight,
    latent_report,
)


@dataclasses.dataclass
class TokenSet:
    """Code sequences with labels and splits (what a tokenizer made of a manifest)."""

    codes: torch.Tensor  # N, T (padded with 0 past each length)
    lengths: torch.Tensor  # N
    labels: torch.Tensor  # N, index into label_names
    label_names: list[str]
    codebook_size: int
    ids: list[str]
    splits: list[str]
    tokenizer: str = ""  # the tokenizer checkpoint that made the codes

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        with atomic_dir(folder) as tmp:
            save_file({"codes": self.codes.long().contiguous(), "lengths": self.lengths.long(),
                       "labels": self.labels.long()}, str(tmp / "codes.safetensors"))
            meta = {k: getattr(self, k) for k in ("label_names", "codebook_size", "ids", "splits", "tokenizer")}
            atomic_write_json(tmp / "tokens.json", meta)
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> TokenSet:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "tokens.json").is_file():
            raise AuralmError(f"{folder} is not a token set (no tokens.json); make one with the tokenizer first")
        t = load_file(str(folder / "codes.safetensors"))
        meta = json.loads((folder / "tokens.json").read_text())
        return cls(codes=t["codes"], lengths=t["lengths"], labels=t["labels"], **meta)

    @classmethod
    def random(cls, n: int, length: int, codebook_size: int, label_names: list[str], seed: int = 0) -> TokenSet:
        """Random codes (for development and tests); every fifth row is held out as ``valid``."""
        g = torch.Generator().manual_seed(seed)
        return cls(codes=torch.randint(0, codebook_size, (n, length), generator=g), lengths=torch.full((n,), length),
                   labels=torch.arange(n) % max(1, len(label_names)), label_names=list(label_names),
                   codebook_size=codebook_size, ids=[f"r{i}" for i in range(n)],
                   splits=["valid" if i % 5 == 4 else "train" for i in range(n)])

    def rows(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def seq(self, i: int) -> torch.Tensor:
        return self.codes[i, : int(self.lengths[i])]

    @property
    def clip_tokens(self) -> int:
        """The most common sequence length (what a generated clip should have)."""
        return Counter(int(n) for n in self.lengths).most_common(1)[0][0]


@dataclasses.dataclass
class TrainGPTConfig(Config):
    """Settings of ``auralm sound train-gpt``."""

    recipe: str = recipe_field("sound")
    kind: str = help_field("class", "class (class-conditioned token GPT) or vae (GPT-VAE)")
    tokens: str = help_field("", "token set folder (codes.safetensors + tokens.json)")
    out: str = help_field("runs/sound-gpt", "run folder: checkpoint/ and tb/ go here")
    steps: int = help_field(2000, "optimizer steps in all")
    stop_after: int = help_field(0, "stop (with a checkpoint) once this step is reached, 0: run all steps")
    resume: bool = help_field(True, "continue from out/checkpoint when it exists")
    batch_size: int = help_field(32, "sequences per step")
    lr: float = help_field(1e-3, "peak learning rate (AdamW)")
    min_lr_frac: float = help_field(0.1, "cosine decay ends at lr * this")
    warmup_steps: int = help_field(100, "linear warm-up steps")
    weight_decay: float = help_field(0.01, "AdamW weight decay")
    grad_clip: float = help_field(1.0, "clip the gradient norm to this (0: off)")
    seed: int = help_field(0, "seed of weights, batches, dropout and latent noise")
    eval_every: int = help_field(200, "validate every N steps")
    save_every: int = help_field(500, "checkpoint every N steps")
    tensorboard: bool = help_field(True, "log scalars to out/tb")
    gpt: GPTConfig = dataclasses.field(default_factory=GPTConfig, metadata={"help": "token GPT shape (kind=class)"})
    vae: GPTVAEConfig = dataclasses.field(default_factory=GPTVAEConfig, metadata={"help": "GPT-VAE shape (kind=vae)"})
    stage: str = help_field("ae", "vae only: ae (stage 1, z = mu, no KL) or vae (stage 2, needs init_from)")
    init_from: str = help_field("", "stage 2: the stage-1 checkpoint whose encoder and decoder start the VAE")
    beta: float = help_field(1.0, "final KL weight")
    kl_schedule: str = help_field("linear", "KL weight schedule: constant, linear or cyclical")
    anneal_steps: int = help_field(500, "steps over which the KL weight rises from 0 to beta")
    kl_cycles: int = help_field(4, "cycles of the cyclical schedule")
    free_bits: str = help_field("per_dim", "free-bits mode: none, per_dim (sum max(t, KL_i)) or total (max(t, sum KL_i))")
    free_bits_target: float = help_field(0.25, "free nats: per dimension (per_dim) or in all (total)")

    def validate(self) -> None:
        check_recipe(self, 'sound')
        if self.kind not in ("class", "vae"):
            raise ConfigError(f"kind must be class or vae, got {self.kind!r}")
        if self.stage not in ("ae", "vae"):
            raise ConfigError(f"stage must be ae or vae, got {self.stage!r}")
        if self.kl_schedule not in ANNEAL_SCHEDULES:
            raise ConfigError(f"kl_schedule must be one of {', '.join(ANNEAL_SCHEDULES)}, got {self.kl_schedule!r}")
        if self.free_bits not in FREE_BITS_MODES:
            raise ConfigError(f"free_bits must be one of {', '.join(FREE_BITS_MODES)}, got {self.free_bits!r}")
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("steps and batch_size must be >= 1 and lr > 0")
        if self.eval_every < 1 or self.save_every < 1 or self.stop_after < 0 or self.kl_cycles < 1:
            raise ConfigError("eval_every, save_every and kl_cycles must be >= 1, stop_after >= 0")


@dataclasses.dataclass
class TrainState:
    """Everything a resume needs (and the model)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator  # batches, label dropout, latent noise
    step: int = 0
    anneal_step: int = 0
    kl_weight: float = 0.0
    history: list[dict] = dataclasses.field(default_factory=list)
    initialised_from: str = ""


def resolve_model(cfg: TrainGPTConfig, tokens: TokenSet) -> TrainGPTConfig:
    """Fill codebook size, labels and block size from the token set."""
    need = int(tokens.lengths.max()) + 1
    gpt = cfg.gpt.replace(codebook_size=tokens.codebook_size, n_labels=len(tokens.label_names),
                          block_size=max(cfg.gpt.block_size, need))
    vae = cfg.vae.replace(codebook_size=tokens.codebook_size, block_size=max(cfg.vae.block_size, need))
    return cfg.replace(gpt=gpt, vae=vae)


def build_model(cfg: TrainGPTConfig) -> torch.nn.Module:
    return TokenGPT(cfg.gpt) if cfg.kind == "class" else GPTVAE(cfg.vae)


def _lr_lambda(cfg: TrainGPTConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


def setup(cfg: TrainGPTConfig) -> TrainState:
    """Build model and optimizer; resume from ``out/checkpoint`` or initialise stage 2 from stage 1."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    state = TrainState(model, optimizer, scheduler, torch.Generator().manual_seed(cfg.seed))
    ckpt = Path(cfg.out) / "checkpoint"
    if cfg.resume and (ckpt / "state.pt").is_file():
        _load_weights(model, ckpt)
        saved = torch.load(ckpt / "state.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.gen.set_state(saved["gen"])
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        state.step, state.anneal_step, state.kl_weight = saved["step"], saved["anneal_step"], saved["kl_weight"]
        state.history, state.initialised_from = saved["history"], saved.get("initialised_from", "")
        _log(f"resumed from {ckpt} at step {state.step} (KL weight {state.kl_weight:.4g}, anneal step {state.anneal_step})")
    elif cfg.kind == "vae" and cfg.stage == "vae":
        if not cfg.init_from:
            raise ConfigError("stage vae starts from a stage-1 (ae) checkpoint: set init_from=DIR")
        src = Path(cfg.init_from)
        src_cfg = TrainGPTConfig.from_yaml(src / "config.yaml") if (src / "config.yaml").is_file() else None
        if src_cfg is None or src_cfg.kind != "vae":
            raise ConfigError(f"init_from={src} is not a GPT-VAE checkpoint")
        if src_cfg.vae != cfg.vae:
            raise ConfigError(f"stage-1 checkpoint {src} has model {src_cfg.vae.to_dict()}, this run {cfg.vae.to_dict()}")
        _load_weights(model, src)  # encoder AND decoder (strict: every key must be there)
        state.initialised_from = str(src)
        _log(f"stage 2: encoder and decoder initialised from {src}")
    return state


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise AuralmError(f"{folder}: weights do not fit the model (missing {missing[:4]}, unexpected {unexpected[:4]})")


def _batch(cfg: TrainGPTConfig, model, tokens: TokenSet, rows: list[int], gen: torch.Generator | None,
           drop: float = 0.0):
    seqs = [tokens.seq(i) for i in rows]
    if cfg.kind == "class":
        first = class_inputs(cfg.gpt, tokens.labels[rows], gen, drop)
        return make_batch(seqs, first, cfg.gpt.eos, 0), None
    first = torch.full((len(rows),), cfg.vae.decoder_config().null)
    inputs, targets = make_batch(seqs, first, cfg.vae.decoder_config().eos, 0)
    return (inputs, targets), (tokens.codes[rows, : inputs.shape[1]], tokens.lengths[rows])


def compute_loss(cfg: TrainGPTConfig, state: TrainState, tokens: TokenSet, rows: list[int], *, train: bool) -> dict:
    """Loss of one batch. Class GPT: cross-entropy. VAE: cross-entropy (+ w * KL term in stage 2)."""
    model = state.model
    gen = state.gen if train else None
    (inputs, targets), enc = _batch(cfg, model, tokens, rows, gen, cfg.gpt.cfg_dropout if train else 0.0)
    if cfg.kind == "class":
        logits = model(inputs)  # B, T, K + 1
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return {"loss": ce, "ce": ce}
    stochastic = train and cfg.stage == "vae"
    logits, mu, logvar = model(enc[0], enc[1], inputs, stochastic=stochastic, generator=gen)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    kl_dims = kl_per_dim(mu, logvar)
    out = {"ce": ce, "kl": kl_dims.sum()}
    if cfg.stage == "vae":
        out["kl_term"] = kl_term(kl_dims, cfg.free_bits, cfg.free_bits_target)
        out["loss"] = ce + state.kl_weight * out["kl_term"]
    else:
        out["loss"] = ce
    return out


def train_step(cfg: TrainGPTConfig, state: TrainState, tokens: TokenSet, train_rows: list[int]) -> dict:
    """One optimizer step; advances ``step`` and (stage 2) the KL anneal step and weight."""
    if cfg.kind == "vae" and cfg.stage == "vae":
        state.kl_weight = kl_weight(state.anneal_step, cfg.kl_schedule, cfg.beta, cfg.anneal_steps, cfg.kl_cycles)
    state.model.train()
    pick = torch.randint(0, len(train_rows), (cfg.batch_size,), generator=state.gen)
    out = compute_loss(cfg, state, tokens, [train_rows[int(i)] for i in pick], train=True)
    state.optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    lr = state.optimizer.param_groups[0]["lr"]
    state.optimizer.step()
    state.scheduler.step()
    state.step += 1
    if cfg.kind == "vae" and cfg.stage == "vae":
        state.anneal_step += 1
    record = {"step": state.step, "lr": lr, "kl_weight": state.kl_weight, "anneal_step": state.anneal_step}
    record.update({k: float(v.detach()) for k, v in out.items()})
    state.history.append(record)
    return record


@torch.no_grad()
def validate(cfg: TrainGPTConfig, state: TrainState, tokens: TokenSet, rows: list[int]) -> dict:
    """Mean per-batch losses on ``rows`` (deterministic: no dropout, z = mu, no label dropout)."""
    state.model.eval()
    sums: dict[str, float] = {}
    batches = [rows[i : i + cfg.batch_size] for i in range(0, len(rows), cfg.batch_size)]
    for b in batches:
        for k, v in compute_loss(cfg, state, tokens, b, train=False).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(b)
    return {k: v / max(1, len(rows)) for k, v in sums.items()}


def vae_report(cfg: TrainGPTConfig, model: GPTVAE, tokens: TokenSet, rows: list[int]) -> dict:
    """KL per dimension and active units on ``rows``."""
    batches = [(tokens.codes[rows[i : i + 64]], tokens.lengths[rows[i : i + 64]]) for i in range(0, len(rows), 64)]
    return latent_report(model, batches)


def save_checkpoint(cfg: TrainGPTConfig, state: TrainState, tokens: TokenSet, metrics: dict | None = None) -> Path:
    """Write ``out/checkpoint`` whole (atomically): config, weights, full training state, meta."""
    from safetensors.torch import save_file

    folder = Path(cfg.out) / "checkpoint"
    with atomic_dir(folder) as tmp:
        save_config(cfg, tmp)
        save_file({k: v.contiguous() for k, v in state.model.state_dict().items()}, str(tmp / "model.safetensors"))
        torch.save({
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "step": state.step, "anneal_step": state.anneal_step, "kl_weight": state.kl_weight,
            "gen": state.gen.get_state(), "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(), "history": state.history, "initialised_from": state.initialised_from,
        }, tmp / "state.pt")
        atomic_write_json(tmp / "meta.json", {
            "kind": cfg.kind, "stage": cfg.stage if cfg.kind == "vae" else None, "step": state.step,
            "label_names": tokens.label_names, "codebook_size": tokens.codebook_size,
            "clip_tokens": tokens.clip_tokens, "max_tokens": int(tokens.lengths.max()),
            "variable_length": bool((tokens.lengths != tokens.lengths[0]).any()), "tokenizer": tokens.tokenizer,
            "kl_weight": state.kl_weight, "anneal_step": state.anneal_step,
            "initialised_from": state.initialised_from, "metrics": metrics or {},
        })
    return folder


def load_token_model(folder: str | Path) -> tuple[torch.nn.Module, TrainGPTConfig, dict]:
    """A trained GPT or GPT-VAE (eval mode), its config and meta.json, from a checkpoint folder."""
    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "meta.json").is_file():
        raise AuralmError(f"{folder} is not a token-GPT checkpoint (no model.safetensors / meta.json)")
    cfg = TrainGPTConfig.from_yaml(folder / "config.yaml")
    model = build_model(cfg)
    _load_weights(model, folder)
    return model.eval(), cfg, json.loads((folder / "meta.json").read_text())


def train_gpt(cfg: TrainGPTConfig, tokens: TokenSet | None = None) -> Path:
    """Train (or resume) a token GPT / GPT-VAE; returns the checkpoint folder."""
    tokens = tokens or TokenSet.load(cfg.tokens)
    cfg = resolve_model(cfg, tokens)
    train_rows = tokens.rows("train")
    val_rows = tokens.rows("valid") or tokens.rows("test")
    if not train_rows:
        raise AuralmError("the token set has no rows in split 'train'")
    state = setup(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=state.step or None)
    last = cfg.stop_after if cfg.stop_after else cfg.steps
    metrics: dict = {}
    bar = progress(range(state.step, min(last, cfg.steps)), desc=f"train-gpt ({cfg.kind}{'/' + cfg.stage if cfg.kind == 'vae' else ''})")
    for _ in bar:
        rec = train_step(cfg, state, tokens, train_rows)
        if writer:
            for k in ("loss", "ce", "kl", "kl_term", "kl_weight", "lr"):
                if k in rec:
                    writer.add_scalar(f"train/{k}", rec[k], state.step)
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics = {"step": state.step, "val": validate(cfg, state, tokens, val_rows)} if val_rows else {}
            if cfg.kind == "vae":
                metrics["latent"] = vae_report(cfg, state.model, tokens, val_rows or train_rows)
            if writer and metrics:
                for k, v in metrics["val"].items():
                    writer.add_scalar(f"val/{k}", v, state.step)
                if "latent" in metrics:
                    writer.add_scalar("val/active_units", metrics["latent"]["active_units"], state.step)
        if state.step % cfg.save_every == 0:
            save_checkpoint(cfg, state, tokens, metrics)
    if writer:
        writer.close()
    return save_checkpoint(cfg, state, tokens, metrics)


def _log(msg: str) -> None:
    print(f"[train-gpt] {msg}", file=sys.stderr, flush=True)
