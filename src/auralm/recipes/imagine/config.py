"""The training configs of S4 (one per trainer in :mod:`.train`); saved beside every checkpoint, read by the
loaders in :mod:`.pipeline`. Imports no torch."""

from __future__ import annotations

import dataclasses

from auralm.components.contrastive import AlignLossConfig
from auralm.core.config import check_recipe, help_field, recipe_field
from auralm.core.errors import ConfigError
from auralm.recipes.imagine.model import AlignerConfig, DiffusionConfig, JudgeConfig
from auralm.training.config import OptimConfig, RunConfig


@dataclasses.dataclass
class AlignerOptimConfig(OptimConfig):
    lr: float = help_field(5e-4, "peak learning rate (AdamW)")
    weight_decay: float = help_field(0.01, "AdamW weight decay")
    warmup_steps: int = help_field(100, "linear warm-up steps")
    batch_size: int = help_field(32, "GLOBAL clips per optimizer step")
    max_steps: int = help_field(1500, "optimizer steps")
    min_lr_frac: float = help_field(0.05, "the cosine decay ends at lr * this")


@dataclasses.dataclass
class AlignerTrainConfig(RunConfig):
    """Settings of ``auralm imagine train-aligner``."""

    recipe: str = recipe_field("imagine")
    kind: str = help_field("aligner", "always 'aligner' (what loaders read)")
    out: str = help_field("runs/imagine-aligner", "run folder")
    optim: AlignerOptimConfig = help_field(default_factory=AlignerOptimConfig, help="optimizer + run length")
    eval_every: int = help_field(250, "validate every K steps (and at the end)")
    corpus: str = help_field("", "corpus folder (imagine.data.build_corpus)")
    model: AlignerConfig = help_field(default_factory=AlignerConfig, help="aligner shape (widths and N are set "
                                      "from the encoders)")  # fmt: skip
    loss: AlignLossConfig = help_field(default_factory=AlignLossConfig, help="alignment loss")
    length_weight: float = help_field(0.1, "weight of the token-count cross-entropy")
    text_max_length: int = help_field(40, "tokens N of the text encoder's fixed-length states")
    max_eval: int = help_field(100, "valid clips scored by the validation")

    RESUMABLE = RunConfig.RESUMABLE | {"max_eval"}

    def validate(self) -> None:
        check_recipe(self, "imagine")
        super().validate()
        if self.kind != "aligner":
            raise ConfigError(f"AlignerTrainConfig.kind must be 'aligner', got {self.kind!r}")
        if self.length_weight < 0 or self.max_eval < 2:
            raise ConfigError("AlignerTrainConfig: length_weight must be >= 0 and max_eval >= 2")


@dataclasses.dataclass
class DiffusionOptimConfig(OptimConfig):
    lr: float = help_field(1e-3, "peak learning rate (AdamW)")
    warmup_steps: int = help_field(100, "linear warm-up steps")
    batch_size: int = help_field(32, "GLOBAL images per optimizer step")
    max_steps: int = help_field(1500, "optimizer steps")
    min_lr_frac: float = help_field(0.1, "the cosine decay ends at lr * this")


@dataclasses.dataclass
class DiffusionTrainConfig(RunConfig):
    """Settings of ``auralm imagine train-diffusion``."""

    recipe: str = recipe_field("imagine")
    kind: str = help_field("diffusion", "always 'diffusion' (what loaders read)")
    out: str = help_field("runs/imagine-diffusion", "run folder")
    optim: DiffusionOptimConfig = help_field(default_factory=DiffusionOptimConfig, help="optimizer + run length")
    eval_every: int = help_field(500, "validate every K steps (and at the end)")
    corpus: str = help_field("", "corpus folder (its train scenes' images and captions)")
    model: DiffusionConfig = help_field(default_factory=DiffusionConfig, help="UNet and noise schedule")
    text_encoder: str = help_field("all-minilm-l6-v2", "text encoder whose states condition the UNet")
    text_max_length: int = help_field(40, "tokens N of the conditioning states")
    cfg_dropout: float = help_field(0.1, "fraction of images trained with the null condition (classifier-free guidance)")
    ema: float = help_field(0.0, "EMA decay of the weights used for sampling (0: none)")
    captions: int = help_field(0, "captions of each train scene it learns from: the first k (the canonical full "
                                  "description first); 0: all of them")
    snr_gamma: float = help_field(0.0, "Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is theirs); 0: the plain DDPM loss")
    max_eval: int = help_field(64, "valid scenes scored by the validation loss")

    RESUMABLE = RunConfig.RESUMABLE | {"max_eval"}

    def validate(self) -> None:
        check_recipe(self, "imagine")
        super().validate()
        if self.kind != "diffusion":
            raise ConfigError(f"DiffusionTrainConfig.kind must be 'diffusion', got {self.kind!r}")
        if not 0 <= self.cfg_dropout < 1 or not 0 <= self.ema < 1:
            raise ConfigError("DiffusionTrainConfig: cfg_dropout and ema must be in [0, 1)")
        if self.captions < 0:
            raise ConfigError(f"DiffusionTrainConfig.captions must be >= 0, got {self.captions}")
        if self.snr_gamma < 0:
            raise ConfigError(f"DiffusionTrainConfig.snr_gamma must be >= 0, got {self.snr_gamma}")


@dataclasses.dataclass
class JudgeOptimConfig(OptimConfig):
    lr: float = help_field(2e-3, "peak learning rate (AdamW)")
    weight_decay: float = help_field(1e-4, "AdamW weight decay")
    warmup_steps: int = help_field(50, "linear warm-up steps")
    batch_size: int = help_field(64, "GLOBAL images per optimizer step")
    max_steps: int = help_field(600, "optimizer steps")


@dataclasses.dataclass
class JudgeTrainConfig(RunConfig):
    """Settings of ``auralm imagine train-judge`` (the demo trains it; it never sees a generated image)."""

    recipe: str = recipe_field("imagine")
    kind: str = help_field("judge", "always 'judge' (what loaders read)")
    out: str = help_field("runs/imagine-judge", "run folder")
    optim: JudgeOptimConfig = help_field(default_factory=JudgeOptimConfig, help="optimizer + run length")
    eval_every: int = help_field(200, "validate every K steps (and at the end)")
    corpus: str = help_field("", "corpus folder (its train scenes)")
    model: JudgeConfig = help_field(default_factory=JudgeConfig, help="judge shape and classes")
    alt_frac: float = help_field(0.5, "fraction of training drawings made by the other renderer (render_scene_alt)")
    noise: float = help_field(0.05, "largest std of the pixel noise added in training (images in [0, 1])")

    def validate(self) -> None:
        check_recipe(self, "imagine")
        super().validate()
        if self.kind != "judge":
            raise ConfigError(f"JudgeTrainConfig.kind must be 'judge', got {self.kind!r}")
        if not 0 <= self.alt_frac <= 1 or self.noise < 0:
            raise ConfigError("JudgeTrainConfig: alt_frac must be in [0, 1] and noise >= 0")
