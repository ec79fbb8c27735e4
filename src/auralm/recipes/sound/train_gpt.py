"""Training recipes for the token GPT (``kind: class``) and the GPT-VAE (``kind: vae``), with exact resume.

Read :func:`train_gpt` top to bottom: load the token set, fill the model shape from it, build a
:class:`GPTTask` (the model, initialised for stage 2 from stage 1) and hand it to the training engine
(:func:`auralm.training.loop.fit`), which owns the run: resume, optimizer and schedule (warm-up, cosine to
``optim.min_lr_frac``), processes (the global batch is split over them; gradients are all-reduced), caps,
validation cadence, checkpoints and logs. The task supplies the global batch of a step (rows drawn with its
seeded data generator, label dropout included), the loss of a part of it (summed over target tokens),
the KL weight and anneal step (extra state, saved and restored) and the validation.

A token set (:class:`TokenSet`) is a folder with ``codes.safetensors`` (codes (N, T) padded,
lengths (N,), labels (N,)) and ``tokens.json`` (codebook size, label names, ids, splits, the
tokenizer that made it). A checkpoint is the engine's folder ``out/checkpoints/step-N`` (``out/latest``
names the newest)::

    config.yaml        the resolved TrainGPTConfig (model shape included)
    model.safetensors  the weights
    meta.json          kind, stage, label names, codebook size, clip length in tokens, tokenizer, metrics
    trainer_state.pt   optimizer, scheduler, step, KL weight and anneal step, RNG states (the engine's)
    metrics.json       the latest logged scalars, stopped_by (the engine's)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from auralm.core.config import check_recipe, help_field, recipe_field
from auralm.core.errors import AuralmError, ConfigError
from auralm.core.io import atomic_dir, atomic_write_json
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
from auralm.training.checkpoint import resolve_checkpoint
from auralm.training.config import OptimConfig, RunConfig
from auralm.training.loop import Task


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
class GPTOptimConfig(OptimConfig):
    """The engine's optimizer settings with the token GPT's defaults (AdamW (0.9, 0.95), cosine to 10 %)."""

    weight_decay: float = help_field(0.01, "AdamW weight decay (matrices only; biases and norms have none)")
    betas: list = help_field([0.9, 0.95], "AdamW betas")
    warmup_steps: int = help_field(100, "linear warm-up steps from 0 to lr")
    min_lr_frac: float = help_field(0.1, "the cosine decay ends at lr * this")
    batch_size: int = help_field(32, "GLOBAL sequences per optimizer step")
    max_steps: int = help_field(2000, "optimizer steps of the whole run")


@dataclasses.dataclass
class TrainGPTConfig(RunConfig):
    """Settings of ``auralm sound train-gpt``: the run (:class:`auralm.training.config.RunConfig`) and the model."""

    recipe: str = recipe_field("sound")
    out: str = help_field("runs/sound-gpt", "run folder: config.yaml, train_log.jsonl, tb/, checkpoints/step-N/, latest")
    optim: GPTOptimConfig = help_field(default_factory=GPTOptimConfig, help="optimizer + run length")
    eval_every: int = help_field(200, "validate every K steps (and at the end)")
    save_every: int = help_field(500, "write a checkpoint every K steps (and always at the end)")
    kind: str = help_field("class", "class (class-conditioned token GPT) or vae (GPT-VAE)")
    tokens: str = help_field("", "token set folder (codes.safetensors + tokens.json)")
    gpt: GPTConfig = dataclasses.field(default_factory=GPTConfig, metadata={"help": "token GPT shape (kind=class)"})
    vae: GPTVAEConfig = dataclasses.field(default_factory=GPTVAEConfig, metadata={"help": "GPT-VAE shape (kind=vae)"})
    stage: str = help_field("ae", "vae only: ae (stage 1, z = mu, no KL) or vae (stage 2, needs init_from)")
    init_from: str = help_field("", "stage 2: the stage-1 checkpoint (or run folder) whose encoder and decoder start the VAE")
    beta: float = help_field(1.0, "final KL weight")
    kl_schedule: str = help_field("linear", "KL weight schedule: constant, linear or cyclical")
    anneal_steps: int = help_field(500, "steps over which the KL weight rises from 0 to beta")
    kl_cycles: int = help_field(4, "cycles of the cyclical schedule")
    free_bits: str = help_field("per_dim", "free-bits mode: none, per_dim (sum max(t, KL_i)) or total (max(t, sum KL_i))")
    free_bits_target: float = help_field(0.25, "free nats: per dimension (per_dim) or in all (total)")

    def validate(self) -> None:
        check_recipe(self, 'sound')
        super().validate()
        if self.kind not in ("class", "vae"):
            raise ConfigError(f"kind must be class or vae, got {self.kind!r}")
        if self.stage not in ("ae", "vae"):
            raise ConfigError(f"stage must be ae or vae, got {self.stage!r}")
        if self.kl_schedule not in ANNEAL_SCHEDULES:
            raise ConfigError(f"kl_schedule must be one of {', '.join(ANNEAL_SCHEDULES)}, got {self.kl_schedule!r}")
        if self.free_bits not in FREE_BITS_MODES:
            raise ConfigError(f"free_bits must be one of {', '.join(FREE_BITS_MODES)}, got {self.free_bits!r}")
        if self.kl_cycles < 1:
            raise ConfigError("kl_cycles must be >= 1")

    @property
    def annealed(self) -> bool:
        """Stage 2 of the GPT-VAE: the KL term (with its weight schedule) is on."""
        return self.kind == "vae" and self.stage == "vae"


def resolve_model(cfg: TrainGPTConfig, tokens: TokenSet) -> TrainGPTConfig:
    """Fill codebook size, labels and block size from the token set."""
    need = int(tokens.lengths.max()) + 1
    gpt = cfg.gpt.replace(codebook_size=tokens.codebook_size, n_labels=len(tokens.label_names),
                          block_size=max(cfg.gpt.block_size, need))
    vae = cfg.vae.replace(codebook_size=tokens.codebook_size, block_size=max(cfg.vae.block_size, need))
    return cfg.replace(gpt=gpt, vae=vae)


def build_model(cfg: TrainGPTConfig) -> torch.nn.Module:
    return TokenGPT(cfg.gpt) if cfg.kind == "class" else GPTVAE(cfg.vae)


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise AuralmError(f"{folder}: weights do not fit the model (missing {missing[:4]}, unexpected {unexpected[:4]})")


class GPTTask(Task):
    """The token GPT / GPT-VAE of ``cfg`` (resolved with :func:`resolve_model`) on a token set."""

    def __init__(self, cfg: TrainGPTConfig, tokens: TokenSet):
        self.cfg, self.tokens = cfg, tokens
        self.train_rows = tokens.rows("train")
        self.val_rows = tokens.rows("valid") or tokens.rows("test")
        if not self.train_rows:
            raise AuralmError("the token set has no rows in split 'train'")
        torch.manual_seed(cfg.optim.seed)
        self.model = build_model(cfg)
        self.gen = torch.Generator().manual_seed(cfg.optim.seed)  # batches, label dropout, latent noise
        self.generators = {"data": self.gen}
        self.anneal_step, self.kl_weight, self.initialised_from = 0, 0.0, ""
        self.metrics: dict[str, Any] = {}
        if cfg.annealed:  # stage 2 starts from the stage-1 encoder AND decoder (a resume then loads its own weights)
            if not cfg.init_from:
                raise ConfigError("stage vae starts from a stage-1 (ae) checkpoint: set init_from=DIR")
            try:
                src = resolve_checkpoint(cfg.init_from)
            except AuralmError:
                raise ConfigError(f"init_from={cfg.init_from} is not a GPT-VAE checkpoint") from None
            src_cfg = TrainGPTConfig.from_yaml(src / "config.yaml")
            if src_cfg.kind != "vae":
                raise ConfigError(f"init_from={src} is not a GPT-VAE checkpoint")
            if src_cfg.vae != cfg.vae:
                raise ConfigError(f"stage-1 checkpoint {src} has model {src_cfg.vae.to_dict()}, this run {cfg.vae.to_dict()}")
            _load_weights(self.model, src)  # strict: every key must be there
            self.initialised_from = str(src)

    def parameter_groups(self) -> dict[str, list[dict[str, Any]]]:
        named = list(self.model.named_parameters())
        return {"main": [{"params": [p for _, p in named if p.dim() >= 2]},  # optim.weight_decay
                         {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}]}

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """(row, first input token) of each sequence: rows drawn with the data generator, then (class GPT) the
        label dropout of the whole global batch, so every process draws the same."""
        if self.cfg.annealed:
            c = self.cfg
            self.kl_weight = kl_weight(self.anneal_step, c.kl_schedule, c.beta, c.anneal_steps, c.kl_cycles)
        pick = torch.randint(0, len(self.train_rows), (self.cfg.optim.batch_size,), generator=self.gen)
        rows = [self.train_rows[int(i)] for i in pick]
        if self.cfg.kind == "class":
            first = class_inputs(self.cfg.gpt, self.tokens.labels[rows], self.gen, self.cfg.gpt.cfg_dropout)
        else:
            first = torch.full((len(rows),), self.cfg.vae.decoder_config().null)
        return list(zip(rows, first.tolist()))

    def loss(self, examples: list[tuple[int, int]]) -> dict[str, Any]:
        out = compute_loss(self.cfg, self.model, self.tokens, [r for r, _ in examples], torch.tensor([f for _, f in examples]),
                           self.gen, self.kl_weight, train=True)
        if self.cfg.annealed:
            out["kl_weight"] = self.kl_weight
        return out

    def end_step(self, step: int) -> None:
        if self.cfg.annealed:
            self.anneal_step += 1

    def validate(self, step: int, logger: Any) -> dict[str, float] | None:
        self.metrics = {"step": step}
        if self.val_rows:
            self.metrics["val"] = validate(self.cfg, self.model, self.tokens, self.val_rows, self.kl_weight)
        if self.cfg.kind == "vae":
            self.metrics["latent"] = vae_report(self.cfg, self.model, self.tokens, self.val_rows or self.train_rows)
        scores = {f"valid/{k}": v for k, v in self.metrics.get("val", {}).items()}
        if "latent" in self.metrics:
            scores["valid/active_units"] = float(self.metrics["latent"]["active_units"])
        return scores

    def save_weights(self, folder: Path, step: int) -> None:
        from safetensors.torch import save_file

        t = self.tokens
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(folder / "model.safetensors"))
        atomic_write_json(folder / "meta.json", {
            "kind": self.cfg.kind, "stage": self.cfg.stage if self.cfg.kind == "vae" else None, "step": step,
            "label_names": t.label_names, "codebook_size": t.codebook_size, "clip_tokens": t.clip_tokens,
            "max_tokens": int(t.lengths.max()), "variable_length": bool((t.lengths != t.lengths[0]).any()),
            "tokenizer": t.tokenizer, "kl_weight": self.kl_weight, "anneal_step": self.anneal_step,
            "initialised_from": self.initialised_from, "metrics": self.metrics,
        })

    def load_weights(self, folder: Path) -> None:
        _load_weights(self.model, folder)

    def state_dict(self) -> dict[str, Any]:
        return {"anneal_step": self.anneal_step, "kl_weight": self.kl_weight, "initialised_from": self.initialised_from,
                "metrics": self.metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anneal_step, self.kl_weight = state["anneal_step"], state["kl_weight"]
        self.initialised_from, self.metrics = state.get("initialised_from", ""), state.get("metrics", {})

    def fingerprint(self) -> str:
        """The token set's codes, lengths and labels: a run is not continued on other tokens."""
        h = hashlib.sha256()
        for t in (self.tokens.codes, self.tokens.lengths, self.tokens.labels):
            h.update(t.long().contiguous().numpy().tobytes())
        return h.hexdigest()


def compute_loss(cfg: TrainGPTConfig, model: torch.nn.Module, tokens: TokenSet, rows: list[int], first: torch.Tensor,
                 gen: torch.Generator | None, kl_w: float, *, train: bool) -> dict[str, Any]:
    """Loss of one batch (``n``: its target tokens). Class GPT: cross-entropy. VAE: cross-entropy (+ w * KL term
    in stage 2). ``first``: each sequence's first input (class token, NULL, or the VAE decoder's start)."""
    seqs = [tokens.seq(i) for i in rows]
    if cfg.kind == "class":
        inputs, targets = make_batch(seqs, first, cfg.gpt.eos, 0)
        logits = model(inputs)  # B, T, K + 1
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return {"loss": ce, "ce": ce, "n": int((targets != -100).sum())}
    inputs, targets = make_batch(seqs, first, cfg.vae.decoder_config().eos, 0)
    codes, lengths = tokens.codes[rows, : inputs.shape[1]], tokens.lengths[rows]
    logits, mu, logvar = model(codes, lengths, inputs, stochastic=train and cfg.annealed, generator=gen)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    kl_dims = kl_per_dim(mu, logvar)
    out = {"ce": ce, "kl": kl_dims.sum(), "n": int((targets != -100).sum())}
    if cfg.annealed:
        out["kl_term"] = kl_term(kl_dims, cfg.free_bits, cfg.free_bits_target)
        out["loss"] = ce + kl_w * out["kl_term"]
    else:
        out["loss"] = ce
    return out


@torch.no_grad()
def validate(cfg: TrainGPTConfig, model: torch.nn.Module, tokens: TokenSet, rows: list[int], kl_w: float = 0.0) -> dict:
    """Mean per-row losses on ``rows`` (deterministic: no dropout, z = mu, no label dropout)."""
    was = model.training
    model.eval()
    sums: dict[str, float] = {}
    batch = cfg.optim.batch_size
    for i in range(0, len(rows), batch):
        b = rows[i : i + batch]
        first = (class_inputs(cfg.gpt, tokens.labels[b]) if cfg.kind == "class"
                 else torch.full((len(b),), cfg.vae.decoder_config().null))
        res = compute_loss(cfg, model, tokens, b, first, None, kl_w, train=False)
        res.pop("n")
        for k, v in res.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(b)
    model.train(was)
    return {k: v / max(1, len(rows)) for k, v in sums.items()}


def vae_report(cfg: TrainGPTConfig, model: GPTVAE, tokens: TokenSet, rows: list[int]) -> dict:
    """KL per dimension and active units on ``rows``."""
    batches = [(tokens.codes[rows[i : i + 64]], tokens.lengths[rows[i : i + 64]]) for i in range(0, len(rows), 64)]
    return latent_report(model, batches)


def load_token_model(folder: str | Path) -> tuple[torch.nn.Module, TrainGPTConfig, dict]:
    """A trained GPT or GPT-VAE (eval mode), its config and meta.json, from a checkpoint (or run) folder."""
    folder = Path(folder)
    if (folder / "latest").is_file():
        folder = resolve_checkpoint(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "meta.json").is_file():
        raise AuralmError(f"{folder} is not a token-GPT checkpoint (no model.safetensors / meta.json)")
    cfg = TrainGPTConfig.from_yaml(folder / "config.yaml")
    model = build_model(cfg)
    _load_weights(model, folder)
    return model.eval(), cfg, json.loads((folder / "meta.json").read_text())


def train_gpt(cfg: TrainGPTConfig, tokens: TokenSet | None = None) -> Path:
    """Train (or resume, per ``cfg.resume``) a token GPT / GPT-VAE; returns the checkpoint folder."""
    from auralm.training.loop import fit

    tokens = tokens or TokenSet.load(cfg.tokens)
    cfg = resolve_model(cfg, tokens)
    name = f"train-gpt {cfg.kind}{'/' + cfg.stage if cfg.kind == 'vae' else ''}"
    return fit(GPTTask(cfg, tokens), cfg, name=name, device="cpu")
