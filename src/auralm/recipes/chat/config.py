"""``TrainConfig``: everything one ``auralm chat train`` run needs, saved as ``config.yaml`` beside every checkpoint.

Stage 1 trains the two projectors with the LM frozen: the image projector on captions (the LM reads the
picture and must say its caption), the audio projector on the CTC loss of spoken questions and number
words (the LM does not run for those: cheap). Stage 2 starts from stage 1 (``init_from``), adds LoRA and
trains on multi-turn conversations mixing typed and spoken questions, pictures and sound clips.
The run settings (``optim.*``, ``out``, ``resume`` ...) are the training engine's (:mod:`auralm.training.config`).
"""

from __future__ import annotations

import dataclasses

from auralm.core.config import Config, apply_overrides, check_recipe, help_field, load_preset, recipe_field
from auralm.core.errors import ConfigError
from auralm.recipes.chat.model import ChatModelConfig
from auralm.training.config import GroupedOptimConfig, RunConfig

PRECISIONS = ("auto", "bf16", "fp32")


@dataclasses.dataclass
class ChatDataSource(Config):
    """Where the examples come from: the folder of ``auralm chat synth`` (examples.jsonl, caches)."""

    dataset: str = help_field("", "folder written by `auralm chat synth` (examples.jsonl, scenes/, speech/, cache/)")
    train_split: str = help_field("train", "split trained on")
    valid_split: str = help_field("valid", "split validated on")
    ctc_batch: int = help_field(32, "stage 1: spoken clips per step for the audio projector's CTC loss (0: none)")
    ctc_steps: int = help_field(0, "stage 1: the first steps train the projectors alone (CTC on clips and pictures, "
                                   "the LM does not run: cheap); the caption steps follow (part of optim.max_steps)")
    image_ctc_batch: int = help_field(0, "pictures per step for the image CTC loss against their scene's canonical "
                                         "caption (needs model.image_ctc_weight > 0; 0: none)")  # fmt: skip
    oversample: dict[str, int] = help_field({}, "stage 2: question type -> how many times each training conversation "
                                               "holding a turn of that type is drawn (e.g. {cross: 3}; default once)")
    describe_count: bool = help_field(False, "the image CTC target (the scene's canonical caption) ends with the number "
                                             "of shapes ('... at the bottom: two shapes.'), a word the LM can set "
                                             "beside a heard number word")

    def validate(self) -> None:
        if self.ctc_batch < 0 or self.ctc_steps < 0 or self.image_ctc_batch < 0:
            raise ConfigError(f"data.ctc_batch, data.ctc_steps and data.image_ctc_batch must be >= 0, got "
                              f"{self.ctc_batch}, {self.ctc_steps}, {self.image_ctc_batch}")  # fmt: skip
        from auralm.recipes.chat.data import QA_TYPES

        for t, k in dict(self.oversample).items():
            if t not in QA_TYPES + ("caption",) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"data.oversample: {t}: {k} - the keys are question types ({', '.join(QA_TYPES)}, "
                                  "caption) and the values whole numbers >= 1")  # fmt: skip


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """Settings of ``auralm chat train``."""

    recipe: str = recipe_field("chat")
    optim: GroupedOptimConfig = dataclasses.field(default_factory=GroupedOptimConfig,
                                                  metadata={"help": "optimizer + run length"})  # fmt: skip
    model: ChatModelConfig = dataclasses.field(default_factory=ChatModelConfig, metadata={"help": "the chat model"})
    data: ChatDataSource = dataclasses.field(default_factory=ChatDataSource, metadata={"help": "the examples"})
    stage: int = help_field(1, "1: projectors on captions + CTC (LM frozen); 2: projectors + LoRA on conversations")
    init_from: str = help_field("", "checkpoint whose trained weights start this run (stage 2: stage 1's)")
    precision: str = help_field("auto", "auto (bf16 where the hardware runs it fast, else fp32), bf16, fp32")
    eval_rows: int = help_field(64, "validation conversations for the validation loss")
    eval_answers: int = help_field(64, "validation questions answered greedily for the validation accuracy (0: none)")
    eval_media: int = help_field(32, "with CTC heads: validation pictures described and spoken questions transcribed "
                                     "for valid/image_wer, valid/image_exact and valid/ctc_wer")

    RESUMABLE = RunConfig.RESUMABLE | {"eval_rows", "eval_answers", "eval_media"}

    def validate(self) -> None:
        check_recipe(self, "chat")
        super().validate()
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (projectors) or 2 (projectors + LoRA), got {self.stage}")
        r = self.model.lora.r
        if self.stage == 1 and r:
            raise ConfigError(f"stage 1 trains the projectors only, but model.lora.r={r}; set stage=2 or model.lora.r=0")
        if self.stage == 2 and not r:
            raise ConfigError("stage 2 adds LoRA to the LM: set model.lora.r to a positive rank (e.g. 8)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        d = self.data
        if self.stage == 1 and d.ctc_steps and (d.ctc_steps > self.optim.max_steps or not (d.ctc_batch or d.image_ctc_batch)):
            raise ConfigError(f"data.ctc_steps={d.ctc_steps} warm-up steps need data.ctc_batch or data.image_ctc_batch "
                              f"> 0 and at most optim.max_steps={self.optim.max_steps} steps")  # fmt: skip
        if d.image_ctc_batch and self.model.image_ctc_weight <= 0:
            raise ConfigError(f"data.image_ctc_batch={d.image_ctc_batch} needs model.image_ctc_weight > 0")
        if self.eval_rows < 0 or self.eval_answers < 0 or self.eval_media < 0:
            raise ConfigError("eval_rows, eval_answers and eval_media must be >= 0")


def config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``presets/NAME.yaml`` of this recipe) or YAML path, with ``key=value`` overrides."""
    return apply_overrides(TrainConfig.from_dict(load_preset(preset)), list(overrides))
