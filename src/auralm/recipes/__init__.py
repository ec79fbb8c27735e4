"""The recipes: hear (S1), caption (S2), chat (S3), imagine (S4) and sound (S5). Each is a package of config,
model, data, train, evaluate, pipeline, demo, cli and presets/, and imports no other recipe.

:func:`load` is what ``auralm.load()`` calls: it reads the ``recipe`` field of a checkpoint folder's
``config.yaml`` (never its folder name) and returns that recipe's pipeline. The table names the pipeline
classes as strings, so importing this package imports no recipe.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from auralm.core.errors import ConfigError, ModelNotFoundError

# recipe -> "module:Pipeline class"; each class has from_checkpoint(path, **kwargs)
PIPELINES: dict[str, str] = {
    "hear": "auralm.recipes.hear.pipeline:HearPipeline",
    "sound": "auralm.recipes.sound.pipeline:SoundPipeline",
    "chat": "auralm.recipes.chat.pipeline:ChatPipeline",
    "imagine": "auralm.recipes.imagine.pipeline:ImaginePipeline",
    "caption": "auralm.recipes.caption.pipeline:CaptionPipeline",
}


def recipe_of(path: str | Path) -> str:
    """The ``recipe`` a checkpoint folder's ``config.yaml`` names; a clear error when there is none."""
    import yaml

    folder = Path(path)
    cfg = folder / "config.yaml"
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder} is not a folder: auralm.load() takes a checkpoint folder")
    if not cfg.is_file():
        raise ModelNotFoundError(f"{folder} has no config.yaml: not a checkpoint folder (a demo's output folder "
                                 "holds its model in checkpoint/)")
    try:
        data = yaml.safe_load(cfg.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg}: not valid YAML: {exc}") from None
    recipe = data.get("recipe") if isinstance(data, dict) else None
    if recipe is None:
        raise ConfigError(f"{cfg} names no recipe (a 'recipe:' field, one of {', '.join(PIPELINES)}): "
                          "auralm.load() cannot tell which pipeline reads it")
    if recipe not in PIPELINES:
        raise ConfigError(f"{cfg}: unknown recipe {recipe!r}; known recipes: {', '.join(PIPELINES)}")
    return recipe


def load(path: str | Path, **kwargs: Any) -> Any:
    """The pipeline of the checkpoint folder ``path`` (see the module docstring)."""
    module, name = PIPELINES[recipe_of(path)].split(":")
    return getattr(importlib.import_module(module), name).from_checkpoint(path, **kwargs)
