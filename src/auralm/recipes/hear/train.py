"""The training recipes, one function per stage, each read top to bottom: set up, train, return the checkpoint.

* stage 1 (:func:`train_stage1`): the connector learns to speak the LM's embedding language; encoder and
  LM stay frozen.
* stage 2 (:func:`train_stage2`): starts from a stage-1 checkpoint (``init_from``; its frozen parts are
  checked), wraps the LM with LoRA (peft), and trains connector + LoRA.

:func:`train` dispatches on ``cfg.stage`` (a config field, never a folder name). Resuming is decided by
:func:`resolve_resume` before anything is written: see ``TrainConfig.resume``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auralm.core.config import save_config
from auralm.core.errors import ConfigError
from auralm.data.collate import AudioTextDataset, check_rows, collate, select_split
from auralm.data.manifest import read_manifest
from auralm.recipes.hear.config import TrainConfig, config_differences
from auralm.training.checkpoint import latest_checkpoint, load_trainable


def _log(accelerator: Any) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if accelerator.is_main_process:
            print(f"[train] {msg}", file=sys.stderr, flush=True)

    return log


def resolve_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint this run continues from, or None for a fresh run; errors instead of mixing two runs."""
    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if ckpt is None:
        if cfg.resume == "true":
            raise ConfigError(f"resume=true but {out} has no checkpoint to resume from")
        return None
    if cfg.resume == "false":
        raise ConfigError(f"{out} already holds a run (latest: {ckpt.name}); resume=false will not overwrite it: "
                          "pass another --out, delete it, or resume=auto to continue it")
    saved = TrainConfig.from_yaml(ckpt / "config.yaml")
    diffs = config_differences(saved, cfg)
    if diffs:
        raise ConfigError(f"{out} holds a run with another config (differs in {', '.join(diffs)}); "
                          "it cannot be resumed with this one: pass another --out")
    return ckpt


def setup(cfg: TrainConfig) -> tuple[Any, Callable[[str], None]]:
    """Accelerator, logger, and the checks that must pass before anything is written."""
    from accelerate import Accelerator

    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("logger=wandb but wandb is not installed (pip install wandb, or logger=tensorboard)") from None
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is not set (data.manifest=path/to/manifest.jsonl)")
    import torch

    # cpu=True on a machine without CUDA: then `torchrun`/`accelerate launch --multi_gpu` workers form a gloo group
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    return accelerator, _log(accelerator)


def load_data(cfg: TrainConfig, model: Any, log: Callable[[str], None]) -> tuple[AudioTextDataset, AudioTextDataset | None]:
    """Train and valid datasets; every row is checked (audio present, not empty, text) before training."""
    from auralm.data.embed_cache import EmbeddingCache

    d = cfg.data
    rows = read_manifest(d.manifest)
    encoder = getattr(model, "encoder", None)
    limit = d.max_seconds
    if encoder is not None and getattr(encoder, "max_samples", None):
        limit = min(limit, encoder.max_samples / encoder.sample_rate)
    train_rows = select_split(rows, d.train_split, d.manifest)
    train_rows, dropped = check_rows(train_rows, limit, what=f"{d.manifest} (split {d.train_split})")
    valid_rows = [r for r in rows if r.split == d.valid_split] if d.valid_split else []
    if valid_rows:
        valid_rows, _ = check_rows(valid_rows, limit, what=f"{d.manifest} (split {d.valid_split})")
    if dropped:
        log(f"dropped {dropped} training row(s) longer than {limit:g} s")
    cache = None
    if d.cache_dir and Path(d.cache_dir).is_dir():
        enc = model.frozen_parts()["encoder"]
        cache = EmbeddingCache(d.cache_dir, enc["name"], enc["revision"])
    elif d.cache_dir:
        log(f"no embedding cache at {d.cache_dir}: the encoder runs on the fly")
    make = lambda rs: AudioTextDataset(rs, cache, encoder, d.prompt, cfg.model.prompt)  # noqa: E731
    train_set, valid_set = make(train_rows), (make(valid_rows) if valid_rows else None)
    if cache is not None and not train_set.uses_cache:
        log(f"{train_set.missing} training row(s) are not in {d.cache_dir}: the encoder runs on the fly")
    log(f"{len(train_set)} training rows, {len(valid_set) if valid_set else 0} validation rows")
    return train_set, valid_set


def _start(cfg: TrainConfig, accelerator: Any) -> None:
    """Write the run's config.yaml (main process) once the run is known to be valid."""
    if accelerator.is_main_process:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        save_config(cfg, cfg.out)
    accelerator.wait_for_everyone()


def _ctc_vocab(model: Any, train_set: Any, log: Callable[[str], None]) -> None:
    """``ctc_vocab: train``: the CTC classes are the training transcripts' tokens, unless already loaded."""
    if getattr(model.config, "ctc_weight", 0) > 0 and model.config.ctc_vocab == "train" and model.ctc_vocab.numel() == 0:
        model.set_ctc_vocab([r.text or "" for r in train_set.rows])
        log(f"CTC vocabulary: {len(model.ctc_vocab)} tokens of the training transcripts")


def train_stage1(cfg: TrainConfig) -> Path:
    """Stage 1: train the connector (+ CTC blank) with the encoder and the LM frozen."""
    from accelerate.utils import set_seed

    from auralm.recipes.hear.model import AudioLM
    from auralm.training.loop import fit

    accelerator, log = setup(cfg)
    resume_from = resolve_resume(cfg)
    set_seed(cfg.optim.seed)
    model = AudioLM(cfg.model)  # encoder + LM frozen, connector freshly initialised from the seed
    if cfg.init_from:
        load_trainable(model, cfg.init_from)
    train_set, valid_set = load_data(cfg, model, log)
    _ctc_vocab(model, train_set, log)
    _start(cfg, accelerator)
    set_seed(cfg.optim.seed + accelerator.process_index)  # dropout streams differ per process
    if resume_from is not None:
        log(f"resuming {cfg.out}")
    return fit(model, cfg, train_set, valid_set, collate, accelerator, log)


def train_stage2(cfg: TrainConfig) -> Path:
    """Stage 2: load the stage-1 connector, add LoRA to the LM, train both."""
    from accelerate.utils import set_seed

    from auralm.recipes.hear.model import AudioLM
    from auralm.training.loop import fit

    accelerator, log = setup(cfg)
    resume_from = resolve_resume(cfg)
    set_seed(cfg.optim.seed)
    model = AudioLM(cfg.model.replace(lora=cfg.model.lora.replace(r=0)))  # the stage-1 model shape
    if cfg.init_from:
        load_trainable(model, cfg.init_from)  # checks the frozen encoder/LM are the ones stage 1 used
        log(f"initialised the connector from {cfg.init_from}")
    else:
        log("stage 2 without init_from: the connector starts from random weights")
    model.add_lora(cfg.model.lora)  # LoRA on the LM; only connector + LoRA weights train
    train_set, valid_set = load_data(cfg, model, log)
    _ctc_vocab(model, train_set, log)
    _start(cfg, accelerator)
    set_seed(cfg.optim.seed + accelerator.process_index)
    if resume_from is not None:
        log(f"resuming {cfg.out}")
    return fit(model, cfg, train_set, valid_set, collate, accelerator, log)


STAGES: dict[int, Callable[[TrainConfig], Path]] = {1: train_stage1, 2: train_stage2}


def train(cfg: TrainConfig) -> Path:
    """Run the stage ``cfg.stage`` names; return the final checkpoint folder (``OUT/checkpoints/step-N``)."""
    return STAGES[cfg.stage](cfg)
