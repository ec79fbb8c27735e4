"""The run settings every recipe's training config shares: :class:`OptimConfig` (:class:`GroupedOptimConfig` with
length-grouped batches) and :class:`RunConfig`.

A recipe's train config derives from :class:`RunConfig` (its ``recipe`` field first, then the run's
bookkeeping, then ``optim``, then the recipe's own fields) and may derive its ``optim`` section from
:class:`OptimConfig` to change the defaults or add fields. The names are the same in every recipe::

    optim.max_steps  optim.stop_after  optim.max_minutes  optim.seed  optim.lr  optim.batch_size ...
    resume  out  log_every  eval_every  save_every  keep_last  logger

This module imports no torch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")
LOGGERS = ("tensorboard", "wandb", "none")
RESUME = ("auto", "true", "false")


@dataclasses.dataclass
class OptimConfig(Config):
    """Optimizer (AdamW), schedule, batch and run length."""

    lr: float = help_field(1e-3, "peak learning rate (AdamW)")
    weight_decay: float = help_field(0.0, "AdamW weight decay")
    betas: list = help_field([0.9, 0.999], "AdamW betas")
    grad_clip: float = help_field(1.0, "clip the global gradient norm to this (0: no clipping)")
    warmup_steps: int = help_field(0, "linear warm-up steps from 0 to lr")
    schedule: str = help_field("cosine", f"decay after warm-up: {', '.join(SCHEDULES)} (to lr * min_lr_frac at max_steps)")
    min_lr_frac: float = help_field(0.0, "the cosine/linear decay ends at lr * this (0.1: 'cosine to 10%')")
    batch_size: int = help_field(8, "GLOBAL examples per optimizer step (over processes and accumulation)")
    grad_accum: int = help_field(1, "micro-batches accumulated per optimizer step on each process")
    max_steps: int = help_field(100, "optimizer steps of the whole run (what defines the run and the schedule's length)")
    stop_after: int = help_field(0, "stop (with a checkpoint) at this step although the run is longer; 0: none")
    max_minutes: float = help_field(0.0, "a guard: stop (with a checkpoint and a WARNING) after this many minutes of "
                                         "this invocation; 0: none")
    seed: int = help_field(0, "seed of the data order, initial weights and dropout")

    def validate(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"optim.{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ConfigError("optim.lr must be > 0 and optim.weight_decay, grad_clip, warmup_steps >= 0")
        if not 0 <= self.min_lr_frac <= 1:
            raise ConfigError(f"optim.min_lr_frac must be in [0, 1], got {self.min_lr_frac}")
        if self.max_minutes < 0 or self.stop_after < 0:
            raise ConfigError("optim.max_minutes and optim.stop_after must be >= 0")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = [float(b) for b in self.betas]
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"optim.batch_size ({self.batch_size}) must be a multiple of optim.grad_accum ({self.grad_accum})")


@dataclasses.dataclass
class GroupedOptimConfig(OptimConfig):
    """:class:`OptimConfig` plus ``group_by_length``, for recipes whose examples vary in length (hear, chat): the
    recipe gives :func:`auralm.training.schedule.index_stream` one length per example."""

    group_by_length: bool = help_field(False, "batch examples of similar length together (shuffled pools of 50 "
                                              "batches, each sorted by length): less padding, faster steps")


@dataclasses.dataclass
class RunConfig(Config):
    """The bookkeeping of a training run; every recipe's train config derives from it."""

    recipe: str = help_field("", "the recipe that reads this config (auralm.load() dispatches on it)")
    out: str = help_field("runs/train", "run folder: config.yaml, train_log.jsonl, tb/, checkpoints/step-N/, latest")
    resume: str | bool = help_field("auto", "auto: continue a run in `out` made with the same config; true: must "
                                            "continue one; false: refuse an `out` that holds a run")
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig, metadata={"help": "optimizer + run length"})
    log_every: int = help_field(10, "log the means of the last log_every steps")
    eval_every: int = help_field(0, "validate every K steps (and at the end); 0: only at the end")
    save_every: int = help_field(0, "write a checkpoint every K steps (and always at the end); 0: only at the end")
    keep_last: int = help_field(2, "checkpoints kept (older ones are deleted; the one `latest` names never is)")
    logger: str = help_field("tensorboard", f"{', '.join(LOGGERS)} (train_log.jsonl is always written)")

    # keys that may differ between a run and its continuation (run length and bookkeeping, not the training);
    # a subclass adds its own with ``RESUMABLE = RunConfig.RESUMABLE | {...}``
    RESUMABLE = frozenset({"optim.max_steps", "optim.max_minutes", "optim.stop_after", "resume", "out", "log_every",
                           "eval_every", "save_every", "keep_last", "logger"})

    def validate(self) -> None:
        if self.logger not in LOGGERS:
            raise ConfigError(f"logger must be one of {', '.join(LOGGERS)}, got {self.logger!r}")
        resume = str(self.resume).lower()
        if resume not in RESUME:
            raise ConfigError(f"resume must be one of {', '.join(RESUME)}, got {self.resume!r}")
        self.resume = resume
        for name in ("log_every", "keep_last"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.out:
            raise ConfigError("out (the run folder) must be set")


def flat_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(a: Config | dict, b: Config | dict, ignore: frozenset[str] | set[str] = RunConfig.RESUMABLE) -> list[str]:
    """Dotted keys whose values differ between two configs (or their dicts), minus ``ignore``."""
    fa = flat_dict(a if isinstance(a, dict) else a.to_dict())
    fb = flat_dict(b if isinstance(b, dict) else b.to_dict())
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def merge_dicts(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of config mappings, later layers winning: ``merge_dicts({"optim": {"seed": 0}}, preset)``."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
