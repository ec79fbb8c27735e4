"""The S3 training recipe, one function per stage, each read top to bottom: set up, train, return the checkpoint.

* stage 1 (:func:`train_stage1`): the image projector learns from captions (the frozen LM must say the
  caption of the picture it reads), the audio projector from the CTC loss of spoken questions and number
  words (no LM: cheap). Encoders and LM frozen.
* stage 2 (:func:`train_stage2`): from stage 1 (``init_from``), LoRA on the LM (QLoRA with
  ``model.lora.quantize=nf4`` on CUDA), projectors + LoRA trained on multi-turn conversations; the loss is
  on the assistant replies only (+ the clips' CTC loss).

Both hand a :class:`ChatTask` to the training engine (:func:`auralm.training.loop.fit`): resume, optimizer,
schedule, accumulation, processes, caps and checkpoints are the engine's. Media features come from the
feature cache (:class:`Features`), filled before training from the dataset's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auralm.core.errors import ConfigError
from auralm.recipes.chat.config import TrainConfig
from auralm.recipes.chat.data import (
    REPLY_TOKENS,
    Features,
    conversation_size,
    media_paths,
    normalise,
    qa_record,
    read_examples,
    scene_descriptions,
    speech_rows,
    to_batch,
)
from auralm.training.checkpoint import load_trainable, save_trainable
from auralm.training.loop import Task, check_resume
from auralm.training.schedule import index_stream


def log(msg: str) -> None:
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[chat] {msg}", file=sys.stderr, flush=True)


class ChatTask(Task):
    """What S3 trains, on which batches, with which loss and validation (the engine does the rest)."""

    def __init__(self, cfg: TrainConfig, model: Any, train: list[dict], valid: list[dict], feats: Features,
                 clips: list[dict] | None = None, pictures: list[dict] | None = None,
                 descriptions: dict[str, str] | None = None):  # fmt: skip
        self.cfg, self.model, self.train, self.valid, self.feats = cfg, model, train, valid, feats
        self.clips, self.pictures = clips or [], pictures or []
        self.descriptions = descriptions or {}  # image path -> its scene's canonical caption
        self.lengths = [conversation_size(e, self.descriptions) for e in train] if cfg.optim.group_by_length else None
        self.device, self.micro = None, 1
        self.amp = contextlib.nullcontext

    def bind(self, ctx: Any) -> None:
        self.device, self.micro, self.amp = ctx.device, ctx.micro, ctx.autocast

    def global_batch(self, step: int) -> list[tuple[int | None, tuple[int, ...], tuple[int, ...]]]:
        """``batch_size`` items ``(example index, clip indices, picture indices)``: ``data.ctc_batch`` clips and
        ``data.image_ctc_batch`` pictures a step are spread over them; the first ``data.ctc_steps`` steps have no
        example (the warm-up: the LM does not run)."""
        o, d = self.cfg.optim, self.cfg.data
        warm = d.ctc_steps if self.clips or self.pictures else 0
        idx = index_stream(len(self.train), o.seed, (step - warm) * o.batch_size, o.batch_size, self.lengths,
                           o.batch_size) if step >= warm else [None] * o.batch_size  # fmt: skip

        def spread(pool: list, per_step: int, seed: int) -> list[tuple[int, ...]]:
            per = -(-per_step // o.batch_size) if pool and per_step else 0
            picks = index_stream(len(pool), seed, step * o.batch_size * per, o.batch_size * per) if per else []
            return [tuple(picks[k * per : (k + 1) * per]) for k in range(o.batch_size)]

        return list(zip(idx, spread(self.clips, d.ctc_batch, o.seed + 1), spread(self.pictures, d.image_ctc_batch, o.seed + 2)))

    def loss(self, examples: Sequence[tuple[int | None, tuple[int, ...], tuple[int, ...]]]) -> dict[str, Any]:
        picked = [self.clips[j] for _, js, _ in examples for j in js]
        pics = [self.pictures[j] for _, _, js in examples for j in js]
        convs = [self.train[i] for i, _, _ in examples if i is not None]
        m = self.cfg.model
        out: dict[str, Any] = {}
        if convs:
            res = self.model(to_batch(convs, self.feats))
            n = float(res["n_tokens"])
            out = {"loss": res["loss"], "lm_loss": res["lm_loss"], "n": n, "count/tokens": n}
            for k in ("ctc_loss", "image_ctc_loss"):
                if k in res:
                    out[k] = res[k]
        extra = []  # the CTC losses of the clips and pictures drawn for this step
        if picked:
            items = [{"kind": "audio", "states": self.feats.audio(c["audio"]), "text": c["text"]} for c in picked]
            out["clip_ctc_loss"] = self.model.ctc_only_loss(items)
            extra.append(m.ctc_weight * out["clip_ctc_loss"])
        if pics:
            items = [{"kind": "image", "states": self.feats.image(p["image"]), "text": p["text"]} for p in pics]
            out["picture_ctc_loss"] = self.model.image_ctc_only_loss(items)
            extra.append(m.image_ctc_weight * out["picture_ctc_loss"])
        if extra and convs:
            out["loss"] = out["loss"] + sum(extra)
        elif extra:  # a warm-up step: the CTC losses alone, weighted by the number of items
            n = float(len(picked) + len(pics))
            out.update(loss=sum(extra), n=n, **{"count/clips": float(len(picked)), "count/pictures": float(len(pics))})
        return out

    def validate(self, step: int, logger: Any) -> dict[str, float] | None:
        """Reply-token loss on ``eval_rows`` valid examples; stage 2: typed-question accuracy on ``eval_answers``;
        with CTC heads (``eval_media`` items each): the audio projector's WER on spoken valid questions in held-out
        voices, the image head's WER and exact rate on valid pictures."""
        import torch

        from auralm.components.generation import GenerationConfig
        from auralm.metrics.text import wer

        model, cfg = self.model, self.cfg
        model.eval()
        out: dict[str, float] = {}
        convs = [e for e in self.valid if e["kind"] == "caption"][: cfg.eval_rows]
        qa = [e for e in self.valid if e["kind"] == "qa"]
        with torch.no_grad(), self.amp():
            total = tokens = 0.0
            for i in range(0, len(convs), 8):
                res = model(to_batch(convs[i : i + 8], self.feats))
                n = float(res["n_tokens"])
                total, tokens = total + float(res["lm_loss"]) * n, tokens + n
            if tokens:
                out["valid/caption_loss"] = total / tokens
            if model.ctc is not None and qa:
                spoken = [e for e in qa if e["type"] not in ("sound", "cross")][: cfg.eval_media]
                items = [{"kind": "audio", "states": self.feats.audio(e["spoken_new_voice"])} for e in spoken]
                hyps = model.transcribe(items)
                with contextlib.suppress(ValueError):
                    out["valid/ctc_wer"] = wer([e["question"] for e in spoken], hyps)
            if model.image_ctc is not None:
                images = (m["path"] for e in self.valid if e["kind"] == "caption" for m in e["media"] if m["kind"] == "image")
                paths = [p for p in dict.fromkeys(images) if p in self.descriptions][: cfg.eval_media]
                if paths:
                    hyps = model.describe([{"kind": "image", "states": self.feats.image(p)} for p in paths])
                    refs = [self.descriptions[p] for p in paths]
                    out["valid/image_wer"] = wer(refs, hyps)
                    out["valid/image_exact"] = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
            if cfg.stage == 2 and cfg.eval_answers and qa:
                picked = qa[: cfg.eval_answers]
                gen = GenerationConfig(strategy="greedy", max_new_tokens=REPLY_TOKENS)
                hits = 0
                for i in range(0, len(picked), 16):
                    part = picked[i : i + 16]
                    replies = model.generate(to_batch([qa_record(e) for e in part], self.feats), gen)
                    hits += sum(normalise(r) == e["answer"] for r, e in zip(replies, part))
                out["valid/accuracy"] = hits / len(picked)
        return out

    def save_weights(self, folder: Path, step: int) -> None:
        save_trainable(self.model, folder)

    def load_weights(self, folder: Path) -> None:
        load_trainable(self.model, folder)

    def fingerprint(self) -> str | None:
        ids = "".join(e["id"] for e in self.train)
        return hashlib.sha256(ids.encode()).hexdigest()[:16]


def oversampled(examples: list[dict], times: dict[str, int]) -> list[dict]:
    """Each conversation repeated ``max(times[t])`` over the types ``t`` of its turns (once when none is named),
    copies after the originals: the index stream then draws rare question types more often."""
    extra = []
    for e in examples:
        k = max([times.get(t, 1) for t in e.get("types", [])] or [1])
        extra += [e] * (k - 1)
    return examples + extra


def _data(cfg: TrainConfig, model: Any) -> dict[str, Any]:
    """The task's material: training and validation examples, the feature cache, the clips and pictures drawn
    for the CTC losses, and each picture's description (its scene's canonical caption)."""
    if not cfg.data.dataset:
        raise ConfigError("data.dataset is not set (the folder of `auralm chat synth`)")
    examples = read_examples(cfg.data.dataset)
    kind = "caption" if cfg.stage == 1 else "chat"
    train = [e for e in examples if e["split"] == cfg.data.train_split and e["kind"] == kind]
    valid = [e for e in examples if e["split"] == cfg.data.valid_split]
    if not train:
        raise ConfigError(f"{cfg.data.dataset}: no {kind} examples in split {cfg.data.train_split!r}")
    train = oversampled(train, dict(cfg.data.oversample))
    speech = speech_rows(cfg.data.dataset)
    # the CTC material: training voices only (the held-out voices speak valid/test questions)
    train_paths = {m["path"] for e in examples if e["split"] == cfg.data.train_split for m in e.get("media", [])
                   if m["kind"] == "audio"}  # fmt: skip
    numbers = {r["text"] for r in speech if len(r["text"].split()) == 1}
    valid_sounds = {e.get("sound") for e in valid}
    clips = [r for r in speech if r["audio"] in train_paths or (r["text"] in numbers and r["audio"] not in valid_sounds)]
    descriptions = scene_descriptions(cfg.data.dataset, cfg.data.describe_count) if model.image_ctc is not None else {}
    train_images = {m["path"] for e in train for m in e["media"] if m["kind"] == "image"}
    train_images |= {p for p in descriptions if p.startswith("pictures/")}  # the extra pictures (training split)
    pictures = [{"image": p, "text": descriptions[p]} for p in sorted(train_images) if p in descriptions]
    feats = Features(cfg.data.dataset, model)
    valid_used = [e for e in valid if e["kind"] == "caption"][: cfg.eval_rows] + [e for e in valid if e["kind"] == "qa"]
    images, audio = media_paths(train + valid_used)
    feats.ensure(images + [p["image"] for p in pictures], audio + [c["audio"] for c in clips])
    if model.ctc is not None and model.ctc.vocab.numel() == 0:
        model.set_ctc_vocab([c["text"] for c in clips] + [m["text"] for e in train for m in e["media"] if m.get("text")])
        log(f"CTC vocabulary: {model.ctc.vocab.numel()} tokens")
    if model.image_ctc is not None and model.image_ctc.vocab.numel() == 0:
        if not pictures:
            raise ConfigError(f"{cfg.data.dataset}: no described training pictures for the image CTC head")
        model.set_ctc_vocab([p["text"] for p in pictures], head="image_ctc")
        log(f"image CTC vocabulary: {model.image_ctc.vocab.numel()} tokens")
    log(f"{len(train)} training {kind} examples, {len(valid_used)} validation examples, {len(clips)} clips for CTC, "
        f"{len(pictures)} described pictures")  # fmt: skip
    return {"train": train, "valid": valid, "feats": feats, "clips": clips if cfg.stage == 1 else [],
            "pictures": pictures if cfg.data.image_ctc_batch else [], "descriptions": descriptions}  # fmt: skip


def _fit(cfg: TrainConfig, model: Any) -> Path:
    from auralm.training.loop import fit

    return fit(ChatTask(cfg, model, **_data(cfg, model)), cfg, name=f"chat stage {cfg.stage}", precision=cfg.precision)


def train_stage1(cfg: TrainConfig) -> Path:
    """Stage 1: the projectors (+ CTC blank) with encoders and LM frozen."""
    from accelerate.utils import set_seed

    from auralm.recipes.chat.model import ChatLM

    if check_resume(cfg) is not None:
        log(f"resuming {cfg.out}")
    set_seed(cfg.optim.seed)
    model = ChatLM(cfg.model)
    if cfg.init_from:
        load_trainable(model, cfg.init_from)
    return _fit(cfg, model)


def train_stage2(cfg: TrainConfig) -> Path:
    """Stage 2: stage 1's projectors, LoRA on the LM, trained on conversations."""
    from accelerate.utils import set_seed

    from auralm.recipes.chat.model import ChatLM

    if cfg.model.lora.quantize != "none":
        from auralm.components.lm import check_quantize

        check_quantize(cfg.model.lora.quantize)  # before anything is loaded or written
    if check_resume(cfg) is not None:
        log(f"resuming {cfg.out}")
    set_seed(cfg.optim.seed)
    model = ChatLM(cfg.model.replace(lora=cfg.model.lora.replace(r=0)))
    if cfg.init_from:
        load_trainable(model, cfg.init_from)
        log(f"initialised the projectors from {cfg.init_from}")
    else:
        log("stage 2 without init_from: the projectors start from random weights")
    model.add_lora(cfg.model.lora)
    return _fit(cfg, model)


STAGES: dict[int, Callable[[TrainConfig], Path]] = {1: train_stage1, 2: train_stage2}


def train(cfg: TrainConfig) -> Path:
    """Run the stage ``cfg.stage`` names; return the final checkpoint folder."""
    return STAGES[cfg.stage](cfg)
