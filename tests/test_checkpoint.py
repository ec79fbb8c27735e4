"""Checkpoint folders with a stand-in model: files, `latest`, pruning, atomicity, RNG, frozen-part checks."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from auralm.core.config import Config
from auralm.core.errors import AuralmError
from auralm.training.checkpoint import (
    check_frozen_parts,
    latest_checkpoint,
    load_trainable,
    load_trainer_state,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    save_trainable,
    set_rng_state,
)

FILES = ("config.yaml", "trainable.safetensors", "frozen_parts.json", "trainer_state.pt", "metrics.json")


@dataclasses.dataclass
class StubConfig(Config):
    lm: str = "stub-lm"


class Stub(nn.Module):
    """Same checkpoint surface as AudioLM: trainable_state_dict, load_trainable_state_dict, frozen_parts."""

    def __init__(self, lm_revision: str = "r1"):
        super().__init__()
        self.connector = nn.Linear(3, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)
        self.lm_revision = lm_revision

    def trainable_state_dict(self):
        return {k: v.detach().clone() for k, v in self.named_parameters() if k.startswith("connector.")}

    def load_trainable_state_dict(self, state, strict=True):
        own = dict(self.named_parameters())
        if strict and set(state) != {k for k in own if k.startswith("connector.")}:
            raise KeyError(f"keys differ: {sorted(state)}")
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def frozen_parts(self):
        return {"encoder": {"name": "enc", "revision": "e1"}, "lm": {"name": "stub-lm", "revision": self.lm_revision}}


def save(out, step, model, keep_last=2):
    return save_checkpoint(out, step, StubConfig(), lambda folder: save_trainable(model, folder),
                           {"step": step, "rng": [rng_state()]}, {"loss": 1.0}, keep_last)


def test_save_writes_every_file_and_points_latest(tmp_path):
    model = Stub()
    ckpt = save(tmp_path, 3, model)
    assert ckpt == tmp_path / "checkpoints" / "step-000003"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(FILES)
    assert (tmp_path / "latest").read_text().strip() == "checkpoints/step-000003"
    assert latest_checkpoint(tmp_path) == ckpt == resolve_checkpoint(tmp_path) == resolve_checkpoint(ckpt)
    assert json.loads((ckpt / "metrics.json").read_text()) == {"step": 3, "loss": 1.0}
    assert load_trainer_state(ckpt)["step"] == 3
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary leftovers


def test_old_checkpoints_are_pruned_and_weights_round_trip(tmp_path):
    model = Stub()
    for step in (1, 2, 3, 4):
        with torch.no_grad():
            model.connector.weight.fill_(step)
        save(tmp_path, step, model, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    fresh = Stub()
    load_trainable(fresh, tmp_path)
    assert torch.equal(fresh.connector.weight, torch.full((2, 3), 4.0))


def test_a_checkpoint_from_another_base_lm_is_refused(tmp_path):
    save(tmp_path, 1, Stub("r1"))
    with pytest.raises(AuralmError, match=r"trained on lm stub-lm@r1, but stub-lm@r2 was loaded.*another base lm"):
        load_trainable(Stub("r2"), tmp_path)
    with pytest.raises(AuralmError, match="another base encoder"):
        check_frozen_parts({"encoder": {"name": "a", "revision": "1"}}, {"encoder": {"name": "b", "revision": "1"}}, "x")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    model = Stub()
    save(tmp_path, 1, model)

    class Boom(Stub):
        def frozen_parts(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        save(tmp_path, 2, Boom())
    assert latest_checkpoint(tmp_path).name == "step-000001"
    assert not (tmp_path / "checkpoints" / "step-000002").exists() and not list(tmp_path.rglob("*.tmp"))


def test_resolve_errors_name_the_folder(tmp_path):
    with pytest.raises(AuralmError, match="not a checkpoint folder"):
        resolve_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("checkpoints/step-000009\n")
    with pytest.raises(AuralmError, match="step-000009, which is not a checkpoint folder"):
        resolve_checkpoint(tmp_path)


def test_rng_state_round_trips_with_the_recipes_generators():
    gen = torch.Generator().manual_seed(5)
    state = rng_state({"data": gen})
    a = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    set_rng_state(state, {"data": gen})
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()) == a
    with pytest.raises(AuralmError, match="no state of the generator 'other'"):
        set_rng_state(state, {"other": gen})


def test_copy_trained_names_what_does_not_fit_and_copies_nothing_then():
    from auralm.training.checkpoint import CheckpointMismatchError, copy_trained

    own = {"connector.w": torch.zeros(2, 3), "connector.b": torch.zeros(3)}
    with pytest.raises(CheckpointMismatchError, match=r"connector.w has shape \(3, 3\).*this model: LM x"):
        copy_trained(own, {"connector.w": torch.ones(3, 3), "connector.b": torch.ones(3)}, built_with="LM x")
    with pytest.raises(CheckpointMismatchError, match=r"missing \['connector.b'\].*lora.r"):
        copy_trained(own, {"connector.w": torch.ones(2, 3), "lm.q.lora_A.weight": torch.ones(1)})
    assert not own["connector.w"].any()  # a failed load leaves the model as it was
    copy_trained(own, {"connector.w": torch.ones(2, 3)}, strict=False)  # the subset that is there
    assert own["connector.w"].all() and not own["connector.b"].any()
