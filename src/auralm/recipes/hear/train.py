"""The S1 training recipe, one function per stage, each read top to bottom: set up, train, return the checkpoint.

* stage 1 (:func:`train_stage1`): the connector learns to speak the LM's embedding language; encoder and
  LM stay frozen.
* stage 2 (:func:`train_stage2`): starts from a stage-1 checkpoint (``init_from``; its frozen parts are
  checked), wraps the LM with LoRA (peft), and trains connector + LoRA.

Both hand a :class:`HearTask` to the training engine (:func:`auralm.training.loop.fit`), which owns the run:
resume, optimizer, schedule, accumulation, processes, caps, checkpoints and logs. The task says what S1
trains (its parameter groups), the batch of a step (the seeded index stream of the training rows), the loss
of a micro-batch (summed over answer tokens) and the validation (loss, the projector's CTC WER, the LM's WER).

:func:`train` dispatches on ``cfg.stage`` (a config field, never a folder name). Resuming is decided by
:func:`auralm.training.loop.check_resume` before anything is written: see ``TrainConfig.resume``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auralm.core.errors import ConfigError
from auralm.data.collate import AudioTextDataset, check_rows, collate, select_split
from auralm.data.manifest import read_manifest
from auralm.recipes.hear.config import TrainConfig
from auralm.training.checkpoint import load_trainable, save_trainable
from auralm.training.loop import Task, check_resume, index_stream


def log(msg: str) -> None:
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[train] {msg}", file=sys.stderr, flush=True)


def setup(cfg: TrainConfig) -> None:
    """The checks that must pass before anything is written (the resume policy among them)."""
    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("logger=wandb but wandb is not installed (pip install wandb, or logger=tensorboard)") from None
    if not cfg.data.manifest:
        raise ConfigError("data.manifest is not set (data.manifest=path/to/manifest.jsonl)")
    if check_resume(cfg) is not None:
        log(f"resuming {cfg.out}")


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


def _ctc_vocab(model: Any, train_set: Any, log: Callable[[str], None]) -> None:
    """``ctc_vocab: train``: the CTC classes are the training transcripts' tokens, unless already loaded."""
    if getattr(model.config, "ctc_weight", 0) > 0 and model.config.ctc_vocab == "train" and model.ctc_vocab.numel() == 0:
        model.set_ctc_vocab([r.text or "" for r in train_set.rows])
        log(f"CTC vocabulary: {len(model.ctc_vocab)} tokens of the training transcripts")


def _phone_lexicon(cfg: TrainConfig, model: Any, train_set: Any, log: Callable[[str], None]) -> None:
    """``phone_weight`` > 0: the pronouncing lexicon (and so the phone head), unless a checkpoint brought one: the
    words of the training transcripts and of the named text sources, leaving out every sentence of another split."""
    if getattr(model.config, "phone_weight", 0) <= 0 or model.lexicon is not None:
        return
    from auralm.components.phones import Lexicon

    held = [r.text or "" for r in read_manifest(cfg.data.manifest) if r.split != cfg.data.train_split]
    model.set_lexicon(Lexicon.build(lexicon_texts(model.config.phone_lexicon, [r.text or "" for r in train_set.rows], held)))
    log(f"phone lexicon: {len(model.lexicon)} words, {len(model.lexicon.inventory)} phones")


def lexicon_texts(names: str, train_texts: list[str], held: list[str]) -> list[str]:
    """The texts a phone lexicon is built from: ``names`` comma-separated, ``train`` for ``train_texts``, any other
    a text source (:func:`auralm.data.text_sources.load_source`); every sentence of ``held`` left out."""
    from auralm.data.text_sources import load_source, sentence_key

    keys = {sentence_key(t) for t in held}
    texts: list[str] = []
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        texts += [t for t in (train_texts if name == "train" else load_source(name)) if sentence_key(t) not in keys]
    return texts


class HearTask(Task):
    """What S1 trains, on which batches, with which loss and validation (the engine does the rest)."""

    def __init__(self, cfg: TrainConfig, model: Any, train_set: AudioTextDataset, valid_set: AudioTextDataset | None):
        self.cfg, self.model, self.train_set, self.valid_set = cfg, model, train_set, valid_set
        o = cfg.optim
        self.lengths = train_set.lengths() if o.group_by_length and hasattr(train_set, "lengths") else None
        self.device, self.micro = None, 1

    def bind(self, ctx: Any) -> None:
        self.device, self.micro, self.amp = ctx.device, ctx.micro, ctx.autocast

    def parameter_groups(self) -> dict[str, list[dict[str, Any]]]:
        """The connector and CTC head at ``lr * connector_lr_scale`` (frozen at 0), the rest (LoRA) at ``lr``."""
        from auralm.recipes.hear.model import TRAINABLE_PREFIXES

        lr, scale = self.cfg.optim.lr, self.cfg.optim.connector_lr_scale
        own, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (own if name.startswith(TRAINABLE_PREFIXES) else rest).append(p)
        if scale == 0:
            for p in own:
                p.requires_grad_(False)
            own = []
        if not own and not rest:
            raise ConfigError("the model has no trainable parameters (optim.connector_lr_scale=0 freezes the connector)")
        return {"main": [g for g in ({"params": own, "lr": lr * scale}, {"params": rest, "lr": lr}) if g["params"]]}

    def global_batch(self, step: int) -> list[int]:
        o = self.cfg.optim
        return index_stream(len(self.train_set), o.seed, step * o.batch_size, o.batch_size, self.lengths, o.batch_size)

    def loss(self, examples: Sequence[int]) -> dict[str, Any]:
        batch = collate([self.train_set[i] for i in examples])
        res = self.model(_batch_to(batch, self.device))
        n = float(res.get("n_tokens", len(batch["ids"])))
        out = {"loss": res["loss"], "n": n, "count/tokens": n}  # lm_loss only where the LM ran (not in a CTC warm-up)
        out.update({k: res[k] for k in ("lm_loss", "ctc_loss", "pool_align_loss", "phone_loss") if k in res})
        if "wavs" in batch:
            out["count/audio_s"] = sum(len(w) for w in batch["wavs"]) / 16000
        return out

    def validate(self, step: int, logger: Any) -> dict[str, float] | None:
        """Token-mean loss (and, with a CTC head, the projector's greedy CTC WER) on the first ``eval_rows`` valid
        rows, and the LM's greedy WER on the first ``eval_wer_rows``."""
        import torch

        from auralm.components.generation import GenerationConfig
        from auralm.metrics.text import wer

        if self.valid_set is None:
            return None
        model, dataset, micro, cfg = self.model, self.valid_set, self.micro, self.cfg
        model.eval()
        out: dict[str, float] = {}
        with torch.no_grad(), self.amp():
            n_rows = min(len(dataset), cfg.eval_rows)
            total = tokens = 0.0
            for i in range(0, n_rows, micro):
                res = model(_batch_to(collate([dataset[j] for j in range(i, min(n_rows, i + micro))]), self.device))
                n = float(res.get("n_tokens", 1))
                total, tokens = total + float(res["loss"]) * n, tokens + n
            out["valid/loss"] = total / max(tokens, 1.0)
            if getattr(model.config, "ctc_weight", 0) > 0:  # the projector's own greedy CTC transcript: cheap, no LM
                refs, hyps = [], []
                for i in range(0, n_rows, micro):
                    batch = collate([dataset[j] for j in range(i, min(n_rows, i + micro))])
                    refs += batch["texts"]
                    hyps += model.ctc_greedy_decode(_batch_to(batch, self.device))
                with contextlib.suppress(ValueError):  # references empty after normalisation
                    out["valid/ctc_wer"] = wer(refs, hyps)
            n_wer = min(len(dataset), cfg.eval_wer_rows)
            if n_wer:
                refs, hyps = [], []
                for i in range(0, n_wer, micro):
                    batch = collate([dataset[j] for j in range(i, min(n_wer, i + micro))])
                    refs += batch["texts"]
                    longest = max(len(model.tokenizer(t or "")["input_ids"]) for t in batch["texts"])
                    batch = {**_batch_to(batch, self.device), "texts": None}
                    hyps += model.generate(batch, GenerationConfig(strategy="greedy", max_new_tokens=2 * longest + 8))
                with contextlib.suppress(ValueError):  # references empty after normalisation
                    out["valid/wer"] = wer(refs, hyps)
        return out

    def save_weights(self, folder: Path, step: int) -> None:
        save_trainable(self.model, folder)  # trainable.safetensors + frozen_parts.json

    def load_weights(self, folder: Path) -> None:
        load_trainable(self.model, folder)


def _batch_to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch

    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _fit(cfg: TrainConfig, model: Any) -> Path:
    from auralm.training.loop import fit

    train_set, valid_set = load_data(cfg, model, log)
    _ctc_vocab(model, train_set, log)
    _phone_lexicon(cfg, model, train_set, log)
    log("cached embeddings" if getattr(train_set, "uses_cache", False) else "the encoder runs on the fly")
    return fit(HearTask(cfg, model, train_set, valid_set), cfg, name=f"train stage {cfg.stage}", precision=cfg.precision)


def train_stage1(cfg: TrainConfig) -> Path:
    """Stage 1: train the connector (+ CTC blank) with the encoder and the LM frozen."""
    from accelerate.utils import set_seed

    from auralm.recipes.hear.model import AudioLM

    setup(cfg)
    set_seed(cfg.optim.seed)
    model = AudioLM(cfg.model)  # encoder + LM frozen, connector freshly initialised from the seed
    if cfg.init_from:
        load_trainable(model, cfg.init_from)
    return _fit(cfg, model)


def train_stage2(cfg: TrainConfig) -> Path:
    """Stage 2: load the stage-1 connector, add LoRA to the LM, train both."""
    from accelerate.utils import set_seed

    from auralm.recipes.hear.model import AudioLM

    setup(cfg)
    set_seed(cfg.optim.seed)
    model = AudioLM(cfg.model.replace(lora=cfg.model.lora.replace(r=0)))  # the stage-1 model shape
    if cfg.init_from:
        load_trainable(model, cfg.init_from)  # checks the frozen encoder/LM are the ones stage 1 used
        log(f"initialised the connector from {cfg.init_from}")
    else:
        log("stage 2 without init_from: the connector starts from random weights")
    model.add_lora(cfg.model.lora)  # LoRA on the LM; only connector + LoRA weights train
    return _fit(cfg, model)


STAGES: dict[int, Callable[[TrainConfig], Path]] = {1: train_stage1, 2: train_stage2}


def train(cfg: TrainConfig) -> Path:
    """Run the stage ``cfg.stage`` names; return the final checkpoint folder (``OUT/checkpoints/step-N``)."""
    return STAGES[cfg.stage](cfg)
