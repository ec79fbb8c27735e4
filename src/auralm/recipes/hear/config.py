"""``TrainConfig``: everything one ``auralm hear train`` run needs, saved as ``config.yaml`` beside every checkpoint.

A preset (``presets/NAME.yaml``) is a mapping of these fields; ``key.sub=value`` overrides refine it::

    auralm hear train --preset hear-tiny --out runs/x optim.lr=1e-3 optim.max_steps=50 model.connector.kind=cross

The run settings (``optim.*``, ``out``, ``resume``, ``log_every``, ``eval_every``, ``save_every``, ``keep_last``,
``logger``) are the training engine's, shared by every recipe (:mod:`auralm.training.config`).

Batch semantics: ``optim.batch_size`` is the **global** number of examples per optimizer step. Each of
the N processes runs ``grad_accum`` micro-batches of ``batch_size / (N * grad_accum)`` examples, so
changing ``grad_accum`` or the process count changes memory use, not the training (up to float rounding).
"""

from __future__ import annotations

import dataclasses

from auralm.core.config import Config, apply_overrides, check_recipe, help_field, load_preset, recipe_field
from auralm.core.errors import ConfigError
from auralm.recipes.hear.model import HearConfig
from auralm.training.config import GroupedOptimConfig, RunConfig

PRECISIONS = ("auto", "bf16", "fp32")


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
class HearOptimConfig(GroupedOptimConfig):
    """The engine's optimizer and run-length settings with length-grouped batches
    (:class:`auralm.training.config.GroupedOptimConfig`) plus S1's own."""

    connector_lr_scale: float = help_field(1.0, "learning rate of the connector and CTC head as a multiple of lr "
                                                "(stage 2: 0 freezes them and trains LoRA alone)")

    def validate(self) -> None:
        super().validate()
        if self.connector_lr_scale < 0:
            raise ConfigError(f"optim.connector_lr_scale must be >= 0, got {self.connector_lr_scale}")


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """Settings of ``auralm hear train``: the run (:class:`auralm.training.config.RunConfig`), the model, the data."""

    recipe: str = recipe_field("hear")
    optim: HearOptimConfig = dataclasses.field(default_factory=HearOptimConfig, metadata={"help": "optimizer + run length"})
    model: HearConfig = dataclasses.field(default_factory=HearConfig, metadata={"help": "the audio LM"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "the examples"})
    stage: int = help_field(1, "1: train the connector (encoder and LM frozen); 2: connector + LoRA on the LM")
    init_from: str = help_field("", "checkpoint (or run folder) whose trained weights start this run (stage 2)")
    precision: str = help_field("auto", "auto (bf16 on CUDA with bf16 / CPUs with AVX512-BF16 or AMX, else fp32), bf16, fp32")
    eval_rows: int = help_field(64, "at most this many valid rows for the validation loss")
    eval_wer_rows: int = help_field(8, "valid rows transcribed greedily for the validation WER (0: none)")

    RESUMABLE = RunConfig.RESUMABLE | {"eval_rows", "eval_wer_rows"}

    def validate(self) -> None:
        check_recipe(self, 'hear')
        super().validate()
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (connector) or 2 (connector + LoRA), got {self.stage}")
        r = self.model.lora.r
        if self.stage == 1 and r:
            raise ConfigError(f"stage 1 trains the connector only, but model.lora.r={r}; set stage=2 or model.lora.r=0")
        if self.stage == 2 and not r:
            raise ConfigError("stage 2 adds LoRA to the LM: set model.lora.r to a positive rank (e.g. 8)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name in ("eval_rows", "eval_wer_rows"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


def config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``presets/NAME.yaml``) or YAML path, with ``key=value`` overrides, validated."""
    return apply_overrides(TrainConfig.from_dict(load_preset(preset)), list(overrides))
