"""``TrainConfig``: everything one ``auralm hear train`` run needs, saved as ``config.yaml`` beside every checkpoint.

A preset (``presets/NAME.yaml``) is a mapping of these fields; ``key.sub=value`` overrides refine it::

    auralm hear train --preset hear-tiny --out runs/x optim.lr=1e-3 optim.max_steps=50 model.connector.kind=cross

Batch semantics: ``optim.batch_size`` is the **global** number of examples per optimizer step. Each of
the N processes runs ``grad_accum`` micro-batches of ``batch_size / (N * grad_accum)`` examples, so
changing ``grad_accum`` or the process count changes memory use, not the training (up to float rounding).
"""

from __future__ import annotations

import dataclasses

from auralm.core.config import Config, apply_overrides, check_recipe, help_field, load_preset, recipe_field
from auralm.core.errors import ConfigError
from auralm.recipes.hear.model import HearConfig

SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
LOGGERS = ("tensorboard", "wandb", "none")
RESUME = ("auto", "true", "false")


@dataclasses.dataclass
class DataConfig(Config):
    """Where the examples come from."""

    manifest: str = help_field("", "JSONL manifest with audio + text rows and a split column")
    cache_dir: str = help_field("", "embedding cache of `auralm embed` (used when it holds every row, "
                                    "else the encoder runs on the fly); empty: always run the encoder")
    prompt: str = help_field("", "instruction given with every clip (empty: the row's prompt, else model.prompt)")
    max_seconds: float = help_field(30.0, "rows longer than this are dropped (with a count in the log)")
    train_split: str = help_field("train", "split trained on")
    valid_split: str = help_field("valid", "split evaluated every eval_every steps (absent: no validation)")

    def validate(self) -> None:
        if self.max_seconds <= 0:
            raise ConfigError(f"data.max_seconds must be positive, got {self.max_seconds}")


@dataclasses.dataclass
class OptimConfig(Config):
    """Optimizer, schedule, batch and run length."""

    lr: float = help_field(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = help_field(0.0, "AdamW weight decay")
    betas: list = help_field([0.9, 0.999], "AdamW betas")
    grad_clip: float = help_field(1.0, "clip the global gradient norm to this (0: no clipping)")
    warmup_steps: int = help_field(0, "linear warm-up steps from 0 to lr")
    schedule: str = help_field("cosine", f"decay after warm-up: {', '.join(SCHEDULES)} (to 0 at max_steps)")
    batch_size: int = help_field(8, "GLOBAL examples per optimizer step (over processes and accumulation)")
    grad_accum: int = help_field(1, "micro-batches accumulated per optimizer step on each process")
    max_steps: int = help_field(100, "optimizer steps of the whole run (the schedule's length)")
    max_minutes: float = help_field(0.0, "stop (with a checkpoint) after this many minutes of this invocation; 0: none")
    stop_after: int = help_field(0, "stop (with a checkpoint) at this step although the run is longer; 0: none")
    seed: int = help_field(0, "seed of data order, initial weights and dropout")
    connector_lr_scale: float = help_field(1.0, "learning rate of the connector and CTC head as a multiple of lr "
                                                "(stage 2: 0 freezes them and trains LoRA alone)")
    group_by_length: bool = help_field(False, "batch clips of similar length together (shuffled pools of 50 "
                                              "batches, each sorted by length): less padding, faster steps")

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"optim.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ConfigError("optim.lr must be > 0 and weight_decay, grad_clip, warmup_steps >= 0")
        if self.connector_lr_scale < 0:
            raise ConfigError(f"optim.connector_lr_scale must be >= 0, got {self.connector_lr_scale}")
        if self.max_minutes < 0 or self.stop_after < 0:
            raise ConfigError("optim.max_minutes and optim.stop_after must be >= 0")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in self.betas]
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"optim.batch_size ({self.batch_size}) must be a multiple of grad_accum ({self.grad_accum})")


@dataclasses.dataclass
class TrainConfig(Config):
    """Settings of ``auralm hear train``: the model, the data, the optimizer and the bookkeeping."""

    recipe: str = recipe_field("hear")
    model: HearConfig = dataclasses.field(default_factory=HearConfig, metadata={"help": "the audio LM"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "the examples"})
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig, metadata={"help": "optimizer + run length"})
    stage: int = help_field(1, "1: train the connector (encoder and LM frozen); 2: connector + LoRA on the LM")
    init_from: str = help_field("", "checkpoint (or run folder) whose trained weights start this run (stage 2)")
    precision: str = help_field("auto", "auto (bf16 on CUDA with bf16 / CPUs with AVX512-BF16 or AMX, else fp32), bf16, fp32")
    out: str = help_field("runs/train", "run folder: config.yaml, train_log.jsonl, tb/, checkpoints/, latest")
    resume: str = help_field("auto", "auto: continue a run in `out` with the same config; true: must; false: refuse a used `out`")
    log_every: int = help_field(10, "log the mean of the last log_every steps' losses")
    eval_every: int = help_field(0, "validate every K steps (and at the end); 0: only at the end")
    eval_rows: int = help_field(64, "at most this many valid rows for the validation loss")
    eval_wer_rows: int = help_field(8, "valid rows transcribed greedily for the validation WER (0: none)")
    save_every: int = help_field(0, "write a checkpoint every K steps (and always at the end); 0: only at the end")
    keep_last: int = help_field(2, "checkpoints kept (older ones are deleted; `latest` is never deleted)")
    logger: str = help_field("tensorboard", f"{', '.join(LOGGERS)} (train_log.jsonl is always written)")

    def validate(self) -> None:
        check_recipe(self, 'hear')
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (connector) or 2 (connector + LoRA), got {self.stage}")
        r = self.model.lora.r
        if self.stage == 1 and r:
            raise ConfigError(f"stage 1 trains the connector only, but model.lora.r={r}; set stage=2 or model.lora.r=0")
        if self.stage == 2 and not r:
            raise ConfigError("stage 2 adds LoRA to the LM: set model.lora.r to a positive rank (e.g. 8)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.logger not in LOGGERS:
            raise ConfigError(f"logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        if str(self.resume).lower() not in RESUME:
            raise ConfigError(f"resume must be one of {', '.join(RESUME)}, got {self.resume!r}")
        self.resume = str(self.resume).lower()
        for name in ("log_every", "keep_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "eval_rows", "eval_wer_rows", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.out:
            raise ConfigError("out (the run folder) must be set")


# fields that may change between a run and its resumption (run length and bookkeeping, not the training)
RESUMABLE_CHANGES = {"optim.max_steps", "optim.max_minutes", "optim.stop_after", "resume", "out", "log_every", "eval_every",
                     "eval_rows", "eval_wer_rows", "save_every", "keep_last", "logger"}


def config_differences(a: TrainConfig, b: TrainConfig, ignore: set[str] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted keys whose values differ between two configs, minus ``ignore``."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``presets/NAME.yaml``) or YAML path, with ``key=value`` overrides, validated."""
    return apply_overrides(TrainConfig.from_dict(load_preset(preset)), list(overrides))
