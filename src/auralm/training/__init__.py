"""Training: one loop on Accelerate (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), one recipe per stage
(:mod:`.stages`), and ``auralm train`` (:mod:`.cli`).

Python use (what ``auralm demo`` does)::

    from auralm.training import TrainConfig, train, config_from_preset
    cfg = config_from_preset("hear-tiny", ["data.manifest=m.jsonl", "out=runs/x"])
    checkpoint_dir = train(cfg)          # OUT/checkpoints/step-N, loadable by auralm.inference.load_checkpoint

Importing this package does not import accelerate, peft or tensorboard (the stages import them when run).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auralm.training.config import TrainConfig

__all__ = ["TrainConfig", "config_from_preset", "train"]


def __getattr__(name: str):  # TrainConfig is loaded lazily: it imports the model module (torch)
    if name == "TrainConfig":
        from auralm.training.config import TrainConfig

        return TrainConfig
    raise AttributeError(name)


def config_from_preset(preset: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A preset name (``presets/NAME.yaml``) or YAML path, with ``key=value`` overrides, validated."""
    from auralm.config import apply_overrides, load_preset
    from auralm.training.config import TrainConfig

    return apply_overrides(TrainConfig.from_dict(load_preset(preset)), list(overrides))


def train(cfg: TrainConfig) -> Path:
    """Train per ``cfg`` (stage 1 or 2); returns the final checkpoint folder."""
    from auralm.training.stages import train as _train

    return _train(cfg)
