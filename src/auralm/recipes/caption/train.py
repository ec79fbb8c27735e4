"""The S2 training recipe, read top to bottom: features, examples, model, then the training engine.

:func:`train` builds the :class:`~auralm.recipes.caption.data.Featurizer` (frozen audio and tag encoders),
turns the corpus into examples (track features through the embedding cache), builds the
:class:`~auralm.recipes.caption.model.CaptionModel` (frozen LM + multi-branch connector) and hands a
:class:`CaptionTask` to :func:`auralm.training.loop.fit`, which owns the run (resume, AdamW, schedule,
gradient accumulation, checkpoints, logs). The task says what trains (the connector), the examples of a
step (the seeded index stream over the training playlists and tracks; each example's reference caption
drawn from a generator seeded by the step), the loss (summed over caption tokens) and the validation
(token loss, and CIDEr-D of greedy captions of the first ``eval_rows`` valid playlists).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.errors import ConfigError
from auralm.recipes.caption.config import TrainConfig
from auralm.recipes.caption.data import Featurizer, collate, load_examples
from auralm.training.checkpoint import load_trainable, save_trainable
from auralm.training.loop import Task, check_resume, index_stream


def log(msg: str) -> None:
    print(f"[caption train] {msg}", file=sys.stderr, flush=True)


def select_training(examples: dict[str, Any], cfg: TrainConfig) -> list[dict[str, Any]]:
    """The training examples: ``data.fraction`` of the train playlists (and of the train tracks)."""
    split = examples.get("train")
    if not split or not split["playlists"]:
        raise ConfigError(f"{cfg.data.corpus}: no training playlists (split 'train')")
    rng = np.random.default_rng(cfg.data.seed)

    def part(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = max(1, int(round(cfg.data.fraction * len(items))))
        return [items[i] for i in sorted(rng.permutation(len(items))[:n])]

    chosen = part(split["playlists"])
    if cfg.data.track_examples and split["tracks"]:
        chosen += part(split["tracks"])
    return chosen


class CaptionTask(Task):
    """What S2 trains, on which batches, with which loss and validation (the engine does the rest)."""

    def __init__(self, cfg: TrainConfig, model: Any, train_set: list[dict[str, Any]], valid_set: list[dict[str, Any]]):
        self.cfg, self.model, self.train_set, self.valid_set = cfg, model, train_set, valid_set
        self.device, self.step = None, 0

    def bind(self, ctx: Any) -> None:
        self.device, self.amp = ctx.device, ctx.autocast

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """(example index, reference index) pairs: the reference is drawn from the step's own seed."""
        o = self.cfg.optim
        idx = index_stream(len(self.train_set), o.seed, step * o.batch_size, o.batch_size, None, o.batch_size)
        rng = np.random.default_rng([o.seed, step])
        return [(int(i), int(rng.integers(len(self.train_set[i]["captions"])))) for i in idx]

    def loss(self, examples: Sequence[tuple[int, int]]) -> dict[str, Any]:
        items = [self.train_set[i] for i, _ in examples]
        batch = collate(items, [self.train_set[i]["captions"][k] for i, k in examples])
        res = self.model(batch_to(batch, self.device))
        n = float(res["n_tokens"])
        return {"loss": res["loss"], "n": n, "count/tokens": n}

    def validate(self, step: int, logger: Any) -> dict[str, float] | None:
        import torch

        from auralm.components.generation import GenerationConfig
        from auralm.metrics.captioning import caption_scores

        if not self.valid_set:
            return None
        model, out = self.model, {}
        model.eval()
        with torch.no_grad(), self.amp():
            total = tokens = 0.0
            for i in range(0, len(self.valid_set), 16):
                part = self.valid_set[i : i + 16]
                res = model(batch_to(collate(part, [e["captions"][0] for e in part]), self.device))
                total, tokens = total + float(res["loss"]) * float(res["n_tokens"]), tokens + float(res["n_tokens"])
            out["valid/loss"] = total / max(tokens, 1.0)
            rows = self.valid_set[: self.cfg.eval_rows]
            if rows:
                gen = GenerationConfig(strategy="greedy", max_new_tokens=self.cfg.generation.max_new_tokens)
                hyps = []
                for i in range(0, len(rows), 16):
                    hyps += model.generate(batch_to(collate(rows[i : i + 16]), self.device), gen)
                out["valid/cider_d"] = caption_scores(hyps, [e["captions"] for e in rows], metrics=("cider_d",))["cider_d"]
        return out

    def save_weights(self, folder: Path, step: int) -> None:
        from auralm.recipes.caption.pipeline import save_generation_config

        save_trainable(self.model, folder)  # trainable.safetensors + frozen_parts.json (LM, audio and tag encoders)
        save_generation_config(folder, self.cfg.generation)

    def load_weights(self, folder: Path) -> None:
        load_trainable(self.model, folder)

    def fingerprint(self) -> str | None:
        import hashlib

        return hashlib.sha256("\n".join(e["id"] for e in self.train_set).encode()).hexdigest()[:16]


def batch_to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    out = dict(batch)
    out["branches"] = {k: (s.to(device), n.to(device)) for k, (s, n) in batch["branches"].items()}
    return out


def prepare(cfg: TrainConfig, featurizer: Featurizer | None = None) -> tuple[Featurizer, dict[str, Any]]:
    """The featurizer and the corpus's examples (track features through the embedding cache)."""
    if not cfg.data.corpus:
        raise ConfigError("data.corpus is not set (data.corpus=path/to/music; make one with `auralm synth music`)")
    feat = featurizer or Featurizer(cfg.model)
    examples = load_examples(cfg.data.corpus, feat, cfg.model, cfg.data.cache_dir or None)
    return feat, examples


def train(cfg: TrainConfig, featurizer: Featurizer | None = None, examples: dict[str, Any] | None = None) -> Path:
    """Train the connector; return the final checkpoint folder (``OUT/checkpoints/step-N``)."""
    from accelerate.utils import set_seed

    from auralm.recipes.caption.model import CaptionModel
    from auralm.training.loop import fit

    if check_resume(cfg) is not None:
        log(f"resuming {cfg.out}")
    if examples is None or featurizer is None:
        featurizer, examples = prepare(cfg, featurizer)
    train_set = select_training(examples, cfg)
    valid_set = (examples.get("valid") or {}).get("playlists", [])
    log(f"{len(train_set)} training examples ({cfg.data.fraction:g} of the training playlists"
        f"{' and tracks' if cfg.data.track_examples else ''}), {len(valid_set)} valid playlists")
    set_seed(cfg.optim.seed)
    model = CaptionModel(cfg.model, featurizer.dims(), featurizer.frozen())
    return fit(CaptionTask(cfg, model, train_set, valid_set), cfg, name="caption train", precision=cfg.precision)
