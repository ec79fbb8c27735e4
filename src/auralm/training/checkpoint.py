"""Checkpoint folders: what was trained, what it was trained on, and everything needed to resume exactly.

A run folder ``OUT`` holds ``checkpoints/step-000120/`` folders and a ``latest`` file naming the newest::

    OUT/latest                                   "checkpoints/step-000120" (replaced atomically)
    OUT/checkpoints/step-000120/config.yaml      the full TrainConfig (model config included)
    OUT/checkpoints/step-000120/trainable.safetensors   connector (+ CTC blank) (+ LoRA) weights only
    OUT/checkpoints/step-000120/frozen_parts.json       {"encoder": {name, revision}, "lm": {name, revision}}
    OUT/checkpoints/step-000120/trainer_state.pt        optimizer, scheduler, step, data position, RNG
    OUT/checkpoints/step-000120/metrics.json            losses, WER, trainable parameter count, time

Each folder is built in a temporary folder and renamed into place (:func:`auralm.core.io.atomic_dir`), so a
killed run leaves the previous checkpoint intact. Loading compares ``frozen_parts.json`` with the parts
resolved now and refuses a checkpoint trained on another encoder or LM.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.core.config import save_config
from auralm.core.errors import AuralmError
from auralm.core.io import atomic_dir, atomic_write_json, atomic_write_text

FILES = ("config.yaml", "trainable.safetensors", "frozen_parts.json", "trainer_state.pt", "metrics.json")


# -- RNG ------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) generator states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- finding and checking -------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose ``latest`` file names one."""
    path = Path(path)
    if (path / "trainable.safetensors").is_file():
        return path
    if (path / "latest").is_file():
        target = path / (path / "latest").read_text().strip()
        if (target / "trainable.safetensors").is_file():
            return target
        raise AuralmError(f"{path}/latest names {target}, which is not a checkpoint folder")
    if (path / "checkpoint" / "trainable.safetensors").is_file():
        return path / "checkpoint"
    raise AuralmError(f"{path} is not a checkpoint folder (no trainable.safetensors) nor a run folder (no latest)")


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint ``OUT/latest`` names, or None when the run has none yet."""
    out = Path(out)
    return resolve_checkpoint(out) if (out / "latest").is_file() else None


def check_frozen_parts(saved: dict[str, Any], current: dict[str, Any], where: str | Path) -> None:
    """Raise when the checkpoint's frozen encoder/LM differ from those loaded now (name or revision)."""
    for part in sorted(set(saved) | set(current)):
        s, c = saved.get(part) or {}, current.get(part) or {}
        if (s.get("name"), s.get("revision")) != (c.get("name"), c.get("revision")):
            raise AuralmError(
                f"checkpoint {where} was trained on {part} {s.get('name')}@{s.get('revision')}, but "
                f"{c.get('name')}@{c.get('revision')} was loaded: a checkpoint from another base {part} "
                "cannot be used with this one"
            )


def read_frozen_parts(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / "frozen_parts.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AuralmError(f"{path}: cannot read the frozen parts of the checkpoint ({exc})") from None


def load_trainable(model: Any, ckpt: str | Path, strict: bool = True) -> None:
    """Check the frozen parts, then load ``trainable.safetensors`` into ``model`` (an AudioLM)."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(ckpt)
    check_frozen_parts(read_frozen_parts(ckpt), model.frozen_parts(), ckpt)
    state = load_file(str(ckpt / "trainable.safetensors"))
    try:
        model.load_trainable_state_dict(state, strict=strict)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise AuralmError(f"checkpoint {ckpt}: trained weights do not fit this model ({exc})") from None


# -- writing --------------------------------------------------------------------------------------
def save_checkpoint(out: str | Path, step: int, cfg: Any, model: Any, trainer_state: dict[str, Any],
                    metrics: dict[str, Any], keep_last: int = 2) -> Path:
    """Write ``OUT/checkpoints/step-{step:06d}`` atomically, point ``OUT/latest`` at it, prune old ones."""
    from safetensors.torch import save_file

    out = Path(out)
    name = f"step-{step:06d}"
    final = out / "checkpoints" / name
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.trainable_state_dict().items()}
    with atomic_dir(final) as tmp:
        save_config(cfg, tmp)
        save_file(tensors, str(tmp / "trainable.safetensors"), metadata={"step": str(step)})
        atomic_write_json(tmp / "frozen_parts.json", model.frozen_parts())
        torch.save(trainer_state, tmp / "trainer_state.pt")
        atomic_write_json(tmp / "metrics.json", {"step": step, **metrics})
    atomic_write_text(out / "latest", f"checkpoints/{name}\n")
    _prune(out / "checkpoints", keep_last, keep=name)
    return final


def _prune(folder: Path, keep_last: int, keep: str) -> None:
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def load_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / "trainer_state.pt"
    if not path.is_file():
        raise AuralmError(f"{ckpt} has no trainer_state.pt; it cannot be resumed (it can still be loaded)")
    return torch.load(path, map_location="cpu", weights_only=False)


def trainable_parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
