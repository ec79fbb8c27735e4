"""`auralm.load()`: one entry point that returns a recipe's pipeline, dispatching on the saved `recipe` field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import auralm
from auralm.__main__ import main
from auralm.core.errors import ConfigError, ModelNotFoundError
from test_collate import make_corpus


@pytest.fixture(scope="module")
def hear_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("load")
    manifest = make_corpus(root / "corpus")
    out = root / "run"
    assert main(["hear", "train", "--preset", "hear-tiny", "--out", str(out), f"data.manifest={manifest}",
                 "optim.max_steps=2", "data.valid_split=", "logger=none"]) == 0
    return out, manifest


def test_load_round_trips_a_hear_checkpoint(hear_run):
    import torch
    from safetensors.torch import load_file

    from auralm.recipes.hear.pipeline import HearPipeline
    from auralm.training.checkpoint import resolve_checkpoint

    out, manifest = hear_run
    ckpt = resolve_checkpoint(out)
    for folder in (ckpt, out):  # a checkpoint folder, or the run folder (its config.yaml names the recipe too)
        pipe = auralm.load(folder)
        assert isinstance(pipe, HearPipeline) and pipe.recipe == "hear"
        saved = load_file(str(ckpt / "trainable.safetensors"))
        mine = pipe.model.trainable_state_dict()
        assert saved.keys() == mine.keys() and all(torch.equal(saved[k], mine[k]) for k in saved)
    clip = manifest.parent / "clip0.wav"
    one = pipe.transcribe(str(clip), generation={"max_new_tokens": 5})
    many = pipe.transcribe([str(clip), np.zeros(8000, np.float32) + 0.01], generation={"max_new_tokens": 5})
    assert isinstance(one, str) and isinstance(many, list) and len(many) == 2 and many[0] == one


def test_load_refuses_folders_without_a_known_recipe(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.yaml"):
        auralm.load(tmp_path)
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        auralm.load(tmp_path / "missing")
    (tmp_path / "config.yaml").write_text("kind: bundle\ntokenizer: tok\n")
    with pytest.raises(ConfigError, match="names no recipe"):
        auralm.load(tmp_path)
    (tmp_path / "config.yaml").write_text("recipe: paint\n")
    with pytest.raises(ConfigError, match="unknown recipe 'paint'; known recipes: hear, sound"):
        auralm.load(tmp_path)
    (tmp_path / "config.yaml").write_text("recipe: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        auralm.load(tmp_path)


def test_importing_auralm_imports_no_torch():
    code = "import sys, auralm; assert callable(auralm.load); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
