"""The models a server holds and what they answer. The HTTP API (:mod:`auralm.serve.openai_api`) and the
UI (:mod:`auralm.serve.ui`) both call :class:`Service`, so both go through the same batching and limits.

Each model is a pipeline from :func:`auralm.load` with its own :class:`~auralm.serve.batching.Batcher`:

* hear pipelines: a job is a list of ``(waveform, prompt)`` items (the ``n`` choices of a chat request,
  or the chunks of a transcription); jobs with the same decoding settings share one
  :meth:`HearPipeline.transcribe <auralm.recipes.hear.pipeline.HearPipeline.transcribe>` call, which pads
  clips of different lengths by their lengths; jobs that differ only in ``max_tokens`` share it too (each
  row stops at its own limit, as it would alone), so chat and transcription requests batch together. A sampled request with a ``seed`` is batched only with
  itself, so the seed reproduces its answer.
* caption pipelines: a chat request's clips are the tracks of one playlist (a ``tags:`` line gives its
  tags); one :meth:`caption_examples <auralm.recipes.caption.pipeline.CaptionPipeline.caption_examples>`
  call per request.
* sound pipelines: one :meth:`generate_sound <auralm.recipes.sound.pipeline.SoundPipeline.generate_sound>`
  call per request, one at a time.

Token counts (``usage``) are made in the model's worker thread, the only thread that touches its tokenizer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AuralmError
from auralm.serve.batching import Batcher
from auralm.serve.config import ServeConfig
from auralm.serve.errors import APIError

# what each recipe serves, for /v1/models and for the 400 that names the right endpoint
ENDPOINTS = {"hear": ["/v1/chat/completions", "/v1/audio/transcriptions"], "sound": ["/v1/audio/speech"],
             "chat": ["/v1/chat/completions"], "caption": ["/v1/chat/completions"],
             "imagine": ["/v1/images/generations"]}
GENERIC_NAMES = {"checkpoint", "latest", "bundle", "model"}
# the placeholders of a chat conversation (components.lm's AUDIO_TOKEN and lm.chat's IMAGE_TOKEN, spelled
# here so that the server imports no torch before it loads a model)
IMAGE, AUDIO = "<|image|>", "<|audio|>"
MAX_PROMPT_CHARS = 4096  # the longest text prompt of /v1/images/generations, /v1/audio/speech and the UI


def model_name(path: str | Path) -> str:
    """A model's default name: its folder's name, or the parent's when the folder has a generic name."""
    folder = Path(path).resolve()
    return folder.parent.name if folder.name in GENERIC_NAMES and folder.parent.name else folder.name


@dataclasses.dataclass
class HearJob:
    items: list[tuple[np.ndarray, str | None]]  # (16 kHz waveform, prompt or None for the model's)
    on_text: Callable[[int, str], None] | None = None  # (item, new text), called from the worker thread


@dataclasses.dataclass
class ChatJob:
    messages: list[dict[str, str]]  # the conversation, with <|image|> / <|audio|> placeholders in user turns
    images: list[bytes]  # one per <|image|>, in order
    audio: list[np.ndarray]  # one 16 kHz waveform per <|audio|>, in order
    n: int = 1
    on_text: Callable[[int, str], None] | None = None


@dataclasses.dataclass
class HearResult:
    texts: list[str]
    completion_tokens: list[int]
    prompt_tokens: int  # of the first item: text tokens plus the audio positions the LM reads


@dataclasses.dataclass
class Model:
    name: str
    path: str
    recipe: str
    pipeline: Any
    batcher: Batcher
    created: int

    def describe(self) -> dict[str, Any]:
        out = {"id": self.name, "object": "model", "created": self.created, "owned_by": "auralm",
               "recipe": self.recipe, "endpoints": ENDPOINTS.get(self.recipe, [])}
        if self.recipe == "sound":
            out["labels"] = list(self.pipeline.labels)
            out["sample_rate"] = int(self.pipeline.sample_rate)
        return out


class Service:
    """Holds the models; ``hear``/``speech`` run one request through the model's batcher with a deadline."""

    def __init__(self, cfg: ServeConfig, pipelines: dict[str, tuple[str, Any]]):
        self.cfg = cfg
        self.models: dict[str, Model] = {}
        self.started = time.time()
        for name, (path, pipe) in pipelines.items():
            recipe = getattr(pipe, "recipe", "")
            if recipe not in ENDPOINTS:
                raise AuralmError(f"{path}: recipe {recipe!r} has no endpoint in this server yet")
            size = cfg.batch_size if recipe == "hear" else 1
            runs = {"hear": lambda key, jobs, pipe=pipe: self._run_hear(pipe, key, jobs),
                    "sound": lambda key, jobs, pipe=pipe: self._run_sound(pipe, jobs),
                    "chat": lambda key, jobs, pipe=pipe: self._run_chat(pipe, key, jobs),
                    "caption": lambda key, jobs, pipe=pipe: self._run_caption(pipe, jobs),
                    "imagine": lambda key, jobs, pipe=pipe: self._run_imagine(pipe, jobs)}
            run = runs[recipe]
            batcher = Batcher(name, run, max_items=size, wait_s=cfg.batch_wait_ms / 1000,
                              refill_s=cfg.batch_refill_ms / 1000)
            self.models[name] = Model(name, str(path), recipe, pipe, batcher, int(self.started))

    @classmethod
    def load(cls, cfg: ServeConfig, checkpoints: list[str], names: list[str] | None = None, device: str | None = None,
             log: Callable[[str], None] = print) -> Service:
        """Load each checkpoint with :func:`auralm.load`; names from ``names`` or the folders."""
        import auralm
        from auralm.recipes import recipe_of

        names = list(names or [])
        if len(names) > len(checkpoints):
            raise AuralmError(f"{len(names)} --name given for {len(checkpoints)} --checkpoint")
        pipelines: dict[str, tuple[str, Any]] = {}
        for i, path in enumerate(checkpoints):
            name = names[i] if i < len(names) else model_name(path)
            if name in pipelines:
                raise AuralmError(f"two models named {name!r} ({pipelines[name][0]} and {path}); name them with --name")
            t0 = time.monotonic()
            on_device = device and recipe_of(path) == "hear"  # sound pipelines run on the CPU
            pipe = auralm.load(path, **({"device": device} if on_device else {}))
            log(f"[serve] loaded {name!r} ({pipe.recipe}) from {path} in {time.monotonic() - t0:.1f} s")
            pipelines[name] = (str(path), pipe)
        return cls(cfg, pipelines)

    def close(self) -> None:
        for m in self.models.values():
            m.batcher.close()

    # -- lookup -----------------------------------------------------------------------------------
    def get(self, name: str | None, recipe: str | tuple[str, ...], endpoint: str) -> Model:
        """The model ``name`` (404 when unknown) if it serves ``endpoint`` (400 when its recipe does not)."""
        if not name:
            raise APIError(400, "missing 'model'", param="model")
        model = self.models.get(name)
        if model is None:
            raise APIError(404, f"model {name!r} is not served here; served: {', '.join(self.models) or 'none'}",
                           param="model")
        if model.recipe not in ((recipe,) if isinstance(recipe, str) else recipe):
            where = ", ".join(ENDPOINTS.get(model.recipe, [])) or "no endpoint"
            raise APIError(400, f"model {name!r} is a {model.recipe} checkpoint: it serves {where}, not {endpoint}",
                           param="model")
        return model

    # -- hear -------------------------------------------------------------------------------------
    def generation(self, model: Model, max_tokens: int | None, temperature: float | None = None,
                   top_p: float | None = None) -> Any:
        """The pipeline's decoding settings with a request's overrides: ``temperature`` 0 (or none given,
        and no ``top_p``) decodes greedily, above 0 samples; ``max_tokens`` is capped by the server's limit."""
        from auralm.components.generation import GenerationConfig

        if max_tokens is not None and max_tokens > self.cfg.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is more than this server allows ({self.cfg.max_tokens}, "
                                "--max-tokens)", param="max_tokens")
        base = model.pipeline.generation.to_dict()
        base["max_new_tokens"] = max_tokens or min(base["max_new_tokens"], self.cfg.max_tokens)
        if (temperature is not None and temperature > 0) or (temperature is None and top_p is not None):
            base.update(strategy="sample", temperature=temperature or 1.0, top_p=top_p or 1.0)
        elif temperature is not None:  # 0: greedy
            base["strategy"] = "greedy"
        try:
            return GenerationConfig.from_dict(base)
        except AuralmError as exc:
            raise APIError(400, str(exc)) from None

    def check_prompt(self, model: Model, prompt: str | None) -> None:
        from auralm.components.lm import AUDIO_TOKEN

        if prompt is None:
            return
        count = prompt.count(AUDIO_TOKEN)
        prefix = model.pipeline.model.config.connector.kind == "prefix"
        if count > 1 or (count and not prefix):
            raise APIError(400, f"the text may hold the audio placeholder {AUDIO_TOKEN} at most once "
                                f"({'once' if prefix else 'never, for this model'}); it holds it {count} times")

    def spans(self, model: Model, wav: np.ndarray) -> list[tuple[float, float]]:
        """Where a long clip is cut (the chunks `auralm hear generate` transcribes), in seconds."""
        from auralm.recipes.hear.pipeline import audio_spans

        return audio_spans(model.pipeline.model, wav)

    async def hear(self, model: Model, job: HearJob, gen: Any, seed: int | None, deadline: float) -> HearResult:
        """Run one hear job through the model's batcher; 504 past ``deadline`` (``time.monotonic()``)."""
        sampled = gen.strategy == "sample"
        # requests that differ only in max_tokens share a batch: each row stops at its own limit
        settings = {k: v for k, v in gen.to_dict().items() if k != "max_new_tokens"}
        key = (json.dumps(settings, sort_keys=True), seed if sampled else None,
               uuid.uuid4().hex if sampled and seed is not None else None)
        return await self._wait(model, model.batcher, key, (job, gen.max_new_tokens), len(job.items), deadline)

    async def transcribe(self, model: Model, wav: np.ndarray, prompt: str | None, gen: Any,
                         deadline: float) -> tuple[list[tuple[float, float]], HearResult]:
        """A clip of any length cut where `auralm hear generate` cuts it; the spans (s) and one text per span."""
        spans = await asyncio.to_thread(self.spans, model, wav)
        sr = model.pipeline.sample_rate
        items = [(wav[round(a * sr) : round(b * sr)], prompt) for a, b in spans]
        return spans, await self.hear(model, HearJob(items), gen, None, deadline)

    def _run_hear(self, pipe: Any, key: tuple, payloads: list[tuple[HearJob, int]]) -> list[HearResult]:
        """In the worker thread: every item of every job in one ``transcribe`` call, each job with its own
        ``max_tokens``."""
        import torch

        from auralm.components.generation import GenerationConfig
        from auralm.recipes.hear.pipeline import max_seconds_of

        jobs, caps = [job for job, _ in payloads], [cap for _, cap in payloads]
        gen = GenerationConfig.from_dict({**json.loads(key[0]), "max_new_tokens": max(caps)})
        results: list[HearResult | APIError] = []
        limit = int(max_seconds_of(pipe.model) * SAMPLE_RATE)
        context = _context(pipe.model)
        for job, cap in payloads:  # usage, and the LM's context checked before any job runs
            wav, prompt = job.items[0]
            longest = max(min(len(w), limit) for w, _ in job.items)
            need = _prompt_tokens(pipe.model, prompt, longest) + cap
            if context and need > context:
                results.append(APIError(400, f"the prompt with its audio takes {need - cap} positions and "
                                             f"max_tokens {cap} more: {need} in all, past the LM's "
                                             f"context of {context}; ask for fewer tokens or send shorter audio",
                                        param="max_tokens"))
            else:
                results.append(HearResult([], [], _prompt_tokens(pipe.model, prompt, len(wav))))
        run = [j for j, r in enumerate(results) if isinstance(r, HearResult)]
        if not run:
            return results
        if key[1] is not None:
            torch.manual_seed(key[1])
        wavs, prompts, where, limits = [], [], [], []
        for j in run:
            for k, (wav, prompt) in enumerate(jobs[j].items):
                wavs.append(wav)
                prompts.append(prompt)
                where.append((j, k))
                limits.append(caps[j])

        def on_text(i: int, text: str) -> None:
            j, k = where[i]
            if jobs[j].on_text is not None:
                jobs[j].on_text(k, text)

        streaming = any(jobs[j].on_text is not None for j in run)
        texts = pipe.transcribe(wavs, prompt=prompts, generation=gen, batch_size=self.cfg.batch_size,
                                on_text=on_text if streaming else None, max_new_tokens=limits)
        for (j, k), text in zip(where, texts):
            res = results[j]
            assert isinstance(res, HearResult)
            res.texts.append(text)
            # the answer re-tokenised (a few more tokens than were generated, at times), at most max_tokens a piece
            pieces = max(1, math.ceil(len(jobs[j].items[k][0]) / limit))
            res.completion_tokens.append(min(_count(pipe.model.tokenizer, text), caps[j] * pieces))
        return results

    # -- chat -------------------------------------------------------------------------------------
    async def chat(self, model: Model, job: ChatJob, gen: Any, seed: int | None, deadline: float) -> HearResult:
        """Run one chat request (``n`` replies to one conversation with its images and clips)."""
        return await self._wait(model, model.batcher, uuid.uuid4().hex, (job, gen, seed), 1, deadline)

    @staticmethod
    def _run_chat(pipe: Any, key: Any, jobs: list[tuple[ChatJob, Any, int | None]]) -> list[HearResult]:
        import io

        import torch
        from PIL import Image

        results = []
        for job, gen, seed in jobs:
            images = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in job.images]
            texts = []
            for k in range(job.n):
                if seed is not None:
                    torch.manual_seed(seed + k)
                delta = (lambda t, k=k, job=job: job.on_text(k, t)) if job.on_text else None
                texts.append(pipe.chat(job.messages, images, job.audio, gen=gen, on_delta=delta))
            tok = pipe.model.tokenizer
            results.append(HearResult(texts, [min(_count(tok, t), gen.max_new_tokens) for t in texts],
                                      sum(_count(tok, m["content"]) for m in job.messages)))
        return results

    # -- caption ----------------------------------------------------------------------------------
    async def caption(self, model: Model, job: ChatJob, gen: Any, seed: int | None, deadline: float) -> HearResult:
        """``n`` captions of the playlist a chat request carries: every clip of its user turns is a track, in
        order; a ``tags:`` line in a user turn gives the playlist's tags (comma-separated)."""
        return await self._wait(model, model.batcher, uuid.uuid4().hex, (job, gen, seed), 1, deadline)

    @staticmethod
    def _run_caption(pipe: Any, jobs: list[tuple[ChatJob, Any, int | None]]) -> list[HearResult | APIError]:
        import torch

        results: list[HearResult | APIError] = []
        for job, gen, seed in jobs:
            try:
                example = pipe.example(job.audio, caption_tags(job.messages))
            except AuralmError as exc:  # a clip too short to be a track, a tag the model cannot read
                results.append(APIError(400, str(exc), param="messages"))
                continue
            texts = []
            for k in range(job.n):
                if seed is not None:
                    torch.manual_seed(seed + k)
                texts.append(pipe.caption_examples([example], gen)[0])
                if job.on_text is not None:
                    job.on_text(k, texts[-1])
            tok = pipe.model.tokenizer
            results.append(HearResult(texts, [min(_count(tok, t), gen.max_new_tokens) for t in texts],
                                      _count(tok, example["prompt"])))
        return results

    # -- imagine ----------------------------------------------------------------------------------
    @staticmethod
    def image_size(model: Model) -> tuple[int, int]:
        """An imagine model's own picture size (``size=auto``): its offline UNet's ``image_size``; 512 px for
        Stable Diffusion pipelines."""
        dcfg = getattr(model.pipeline, "diffusion_cfg", None)
        side = int(dcfg.image_size) if dcfg is not None else 512
        return side, side

    async def images(self, model: Model, prompt: str | None, wav: np.ndarray | None, n: int, seed: int,
                     size: tuple[int, int], deadline: float) -> list[bytes]:
        """``n`` PNG pictures of a text prompt or of a clip (the prompt is ignored when audio is given)."""
        return await self._wait(model, model.batcher, uuid.uuid4().hex, (prompt, wav, n, seed, size), 1, deadline)

    @staticmethod
    def _run_imagine(pipe: Any, jobs: list[tuple[str | None, np.ndarray | None, int, int, tuple[int, int]]]) -> list[list[bytes]]:
        import io

        out = []
        for prompt, wav, n, seed, size in jobs:
            images = pipe.generate(audio=[wav] * n, seed=seed) if wav is not None else pipe.generate(text=[prompt] * n, seed=seed)
            pngs = []
            for im in images:
                if im.size != size:
                    im = im.resize(size)
                buf = io.BytesIO()
                im.save(buf, format="PNG")
                pngs.append(buf.getvalue())
            out.append(pngs)
        return out

    # -- sound ------------------------------------------------------------------------------------
    async def speech(self, model: Model, label: str | None, seed: int, deadline: float) -> np.ndarray:
        labels = list(model.pipeline.labels)
        if labels and label not in labels:
            raise APIError(400, f"input {label!r} is not a label model {model.name!r} knows; known labels: "
                                f"{', '.join(labels)}", param="input")
        return await self._wait(model, model.batcher, uuid.uuid4().hex, (label if labels else None, seed), 1, deadline)

    @staticmethod
    def _run_sound(pipe: Any, jobs: list[tuple[str | None, int]]) -> list[np.ndarray]:
        return [pipe.generate_sound(label, n=1, seed=seed)[0] for label, seed in jobs]

    # -- both -------------------------------------------------------------------------------------
    async def _wait(self, model: Model, batcher: Batcher, key: Any, payload: Any, size: int, deadline: float) -> Any:
        try:
            fut = batcher.submit(key, payload, size)
        except RuntimeError:
            raise APIError(503, "the server is shutting down", headers={"Retry-After": str(self.cfg.retry_after)}) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.001, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            fut.cancel()  # dropped if its batch has not started
            raise APIError(504, f"model {model.name!r} did not answer within {self.cfg.request_timeout:g} s "
                                "(--request-timeout)") from None
        except APIError:
            raise
        except AuralmError as exc:
            raise APIError(400, str(exc)) from None

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1),
                "models": {name: {"recipe": m.recipe, "queued": m.batcher.queued, **m.batcher.stats}
                           for name, m in self.models.items()}}


def caption_tags(messages: list[dict[str, str]]) -> list[str]:
    """The tags of a caption request: the comma-separated words after ``tags:`` at the start of a line of
    a user turn (``"tags: calm, organ"``), in order, without repeats."""
    tags: list[str] = []
    for m in messages:
        if m["role"] != "user":
            continue
        for line in m["content"].replace(AUDIO, "\n").replace(IMAGE, "\n").splitlines():
            head, _, rest = line.strip().partition(":")
            if rest and head.strip().lower() == "tags":
                for tag in (t.strip() for t in rest.split(",")):
                    if tag and tag not in tags:
                        tags.append(tag)
    return tags


def _context(model: Any) -> int | None:
    cfg = getattr(model.lm, "config", None)
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0


def _prompt_tokens(model: Any, prompt: str | None, n_samples: int) -> int:
    """Text tokens of the prompt template plus the audio positions the LM reads (before any CTC compression)."""
    from auralm.components.lm import build_example
    from auralm.recipes.hear.pipeline import max_seconds_of

    limit = max(1, int(max_seconds_of(model) * 16000))  # long audio is read in pieces of at most this
    pieces = [limit] * (n_samples // limit) + ([n_samples % limit] if n_samples % limit else [])
    try:
        frames = [int(f) for f in model.encoder.output_lengths(pieces)]
    except Exception:  # an estimate only
        frames = [math.ceil(n / 320) for n in pieces]
    stack = max(1, int(getattr(model.config.connector, "stack", 1)))
    positions = sum(math.ceil(f / stack) for f in frames)
    prefix = model.config.connector.kind == "prefix"
    ids, _ = build_example(model.tokenizer, prompt or model.config.prompt, positions if prefix else 0, None,
                           model.config.system)
    return len(ids) + (0 if prefix else positions)
