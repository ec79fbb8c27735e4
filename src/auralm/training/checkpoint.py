"""The one checkpoint writer: folders that hold what was trained and everything needed to resume exactly.

A run folder ``OUT`` (every recipe) holds ``checkpoints/step-000120/`` folders and a ``latest`` file naming
the newest::

    OUT/latest                                 "checkpoints/step-000120" (replaced atomically)
    OUT/checkpoints/step-000120/config.yaml    the full resolved train config (its `recipe:` field included)
    OUT/checkpoints/step-000120/...            the recipe's weights (its `save_weights` hook writes them)
    OUT/checkpoints/step-000120/trainer_state.pt   optimizers, schedulers, step, RNG states, the recipe's extra state
    OUT/checkpoints/step-000120/metrics.json   latest logged scalars, stopped_by, steps done / planned, time

Each folder is built in a temporary folder and renamed into place (:func:`auralm.core.io.atomic_dir`), so a
killed run leaves the previous checkpoint intact; then ``latest`` is replaced atomically.

For models with a frozen pretrained part (the ``trainable_state_dict()`` / ``load_trainable_state_dict()`` /
``frozen_parts()`` surface) :func:`save_trainable` and :func:`load_trainable` write and read
``trainable.safetensors`` + ``frozen_parts.json``; loading refuses weights trained on another frozen part.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auralm.core.config import save_config
from auralm.core.errors import AuralmError
from auralm.core.io import atomic_dir, atomic_write_json, atomic_write_text

STATE = "trainer_state.pt"


# -- RNG ------------------------------------------------------------------------------------------
def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) generator states of this process, plus the
    states of ``generators`` (the recipe's own ``torch.Generator`` objects, by name)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generators:
        state["generators"] = {k: g.get_state() for k, g in generators.items()}
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name not in saved:
            raise AuralmError(f"the checkpoint holds no state of the generator {name!r} (it has {sorted(saved)})")
        gen.set_state(saved[name])


# -- finding --------------------------------------------------------------------------------------
def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.yaml").is_file() and (
        (path / STATE).is_file() or any(path.glob("*.safetensors")))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose ``latest`` file names one."""
    path = Path(path)
    if (path / "latest").is_file():
        target = path / (path / "latest").read_text().strip()
        if _is_checkpoint(target):
            return target
        raise AuralmError(f"{path}/latest names {target}, which is not a checkpoint folder")
    if _is_checkpoint(path):
        return path
    raise AuralmError(f"{path} is not a checkpoint folder (no config.yaml with weights) nor a run folder (no latest)")


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint ``OUT/latest`` names, or None when the run has none yet."""
    out = Path(out)
    return resolve_checkpoint(out) if (out / "latest").is_file() else None


# -- writing and reading --------------------------------------------------------------------------
def save_checkpoint(out: str | Path, step: int, cfg: Any, write_weights: Callable[[Path], None],
                    trainer_state: dict[str, Any], metrics: dict[str, Any], keep_last: int = 2) -> Path:
    """Write ``OUT/checkpoints/step-{step:06d}`` atomically (config.yaml, what ``write_weights(folder)`` writes,
    trainer_state.pt, metrics.json), point ``OUT/latest`` at it, prune all but the last ``keep_last``."""
    out = Path(out)
    name = f"step-{step:06d}"
    final = out / "checkpoints" / name
    with atomic_dir(final) as tmp:
        save_config(cfg, tmp)
        write_weights(tmp)
        torch.save(trainer_state, tmp / STATE)
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
    path = Path(ckpt) / STATE
    if not path.is_file():
        raise AuralmError(f"{ckpt} has no {STATE}; it cannot be resumed (it can still be loaded)")
    return torch.load(path, map_location="cpu", weights_only=False)


# -- models with frozen pretrained parts ----------------------------------------------------------
class CheckpointMismatchError(AuralmError):
    """Trained weights that do not fit this model (another LM width, encoder, connector, branches or LoRA)."""


def copy_trained(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], strict: bool = True,
                 built_with: str = "") -> None:
    """Copy ``state`` into the model's trained tensors ``own`` (name -> parameter or buffer), in place.

    A weight of another shape, and (``strict``) a missing or unexpected name, is a
    :class:`CheckpointMismatchError` that names it; ``built_with`` says what this model was built with (LM,
    widths), so the message says what the checkpoint must have been trained with. Nothing is copied unless
    everything fits."""
    for key, value in state.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointMismatchError(
                f"trained weight {key} has shape {tuple(value.shape)} but this model needs {tuple(own[key].shape)}: "
                f"it was trained with another LM width, encoder, connector or branch{f' (this model: {built_with})' if built_with else ''}")
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        hint = " (LoRA weights: build the model with the checkpoint's lora.r)" if any("lora_" in k for k in unexpected) else ""
        raise CheckpointMismatchError(f"trained weights do not match this model: missing {missing[:5]}, "
                                      f"unexpected {unexpected[:5]}{hint}")
    with torch.no_grad():
        for key in set(own) & set(state):
            own[key].copy_(state[key])


def save_trainable(model: Any, folder: Path) -> None:
    """``trainable.safetensors`` (what trained), ``frozen_parts.json`` (name + revision of the frozen parts) and
    the JSON files of the model's ``extra_files()``, when it has one (read back by its ``load_extra_files(folder)``)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.trainable_state_dict().items()}
    save_file(tensors, str(folder / "trainable.safetensors"))
    atomic_write_json(folder / "frozen_parts.json", model.frozen_parts())
    for name, data in (model.extra_files() if hasattr(model, "extra_files") else {}).items():
        atomic_write_json(folder / name, data)  # what the weights mean beyond tensors (e.g. S1's phone lexicon)


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
    """Check the frozen parts, then load ``trainable.safetensors`` into ``model``."""
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(ckpt)
    if not (ckpt / "trainable.safetensors").is_file():
        raise AuralmError(f"{ckpt} has no trainable.safetensors: not a checkpoint of this kind of model")
    check_frozen_parts(read_frozen_parts(ckpt), model.frozen_parts(), ckpt)
    state = load_file(str(ckpt / "trainable.safetensors"))
    if hasattr(model, "load_extra_files"):
        model.load_extra_files(ckpt)
    try:
        model.load_trainable_state_dict(state, strict=strict)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise AuralmError(f"checkpoint {ckpt}: trained weights do not fit this model ({exc})") from None


def stop_record(ckpt: str | Path) -> dict[str, Any]:
    """Why the run that wrote checkpoint ``ckpt`` stopped: ``stopped_by`` (max_steps, stop_after or
    max_minutes), ``steps_done`` and ``steps_planned``, from its ``metrics.json`` (for a demo's report)."""
    try:
        metrics = json.loads((Path(ckpt) / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AuralmError(f"{ckpt}: cannot read metrics.json ({exc})") from None
    return {k: metrics.get(k) for k in ("stopped_by", "steps_done", "steps_planned")}


def guard_cut(name: str, record: dict[str, Any]) -> str | None:
    """``"NAME was cut by its time guard at step N of M"`` when the run of ``record`` (:func:`stop_record`, or a
    checkpoint's whole metrics) stopped on ``max_minutes`` before its last step; None when it ran its steps."""
    if record.get("stopped_by") != "max_minutes":
        return None
    return f"{name} was cut by its time guard at step {record.get('steps_done')} of {record.get('steps_planned')}"
