"""``TrainConfig``: everything one ``auralm caption train`` run needs, saved as ``config.yaml`` beside every
checkpoint (its ``recipe: caption`` is what ``auralm.load()`` dispatches on).

    auralm caption train --preset caption-tiny --out runs/x optim.max_steps=50 model.gate=tanh data.fraction=0.5

The run settings (``optim.*``, ``out``, ``resume``, ``log_every``, ``eval_every``, ``save_every``, ``keep_last``,
``logger``) are the training engine's (:mod:`auralm.training.config`).
"""

from __future__ import annotations

import dataclasses

from auralm.components.generation import GenerationConfig
from auralm.core.config import Config, apply_overrides, check_recipe, help_field, load_preset, recipe_field
from auralm.core.errors import ConfigError
from auralm.recipes.caption.model import CaptionConfig
from auralm.training.config import RunConfig

PRECISIONS = ("auto", "bf16", "fp32")


@dataclasses.dataclass
class DataConfig(Config):
    """Where the examples come from."""

    corpus: str = help_field("", "music corpus folder (`auralm synth music --out DIR`)")
    cache_dir: str = help_field("", "embedding cache of the audio encoder (empty: CORPUS/cache/<encoder>)")
    fraction: float = help_field(1.0, "share of the training playlists (and tracks) used (data-efficiency study)")
    track_examples: bool = help_field(True, "also train on single tracks with their track captions")
    seed: int = help_field(0, "seed of the fraction's draw")

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"data.fraction must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """Settings of ``auralm caption train``: the run, the model, the data, the decoding of validation."""

    recipe: str = recipe_field("caption")
    model: CaptionConfig = dataclasses.field(default_factory=CaptionConfig, metadata={"help": "the captioner"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig, metadata={"help": "the examples"})
    generation: GenerationConfig = dataclasses.field(
        default_factory=lambda: GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=48),
        metadata={"help": "decoding of validation and, by default, of the checkpoint (beam 3 as the seed)"})
    precision: str = help_field("fp32", "auto (bf16 where it helps), bf16, fp32")
    eval_rows: int = help_field(16, "valid playlists captioned (greedy) for the validation CIDEr-D (0: loss only)")

    RESUMABLE = (RunConfig.RESUMABLE | {"eval_rows"}
                 | {f"generation.{f.name}" for f in dataclasses.fields(GenerationConfig)})

    def validate(self) -> None:
        check_recipe(self, "caption")
        super().validate()
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.eval_rows < 0:
            raise ConfigError(f"eval_rows must be >= 0, got {self.eval_rows}")


def config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``presets/NAME.yaml``) or YAML path, with ``key=value`` overrides, validated."""
    return apply_overrides(TrainConfig.from_dict(load_preset(preset)), list(overrides))
