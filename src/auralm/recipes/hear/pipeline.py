"""The S1 inference API that the CLI, the evaluation and servers call: :class:`HearPipeline`
(what ``auralm.load()`` returns for a hear checkpoint), over two functions:

* :func:`load_checkpoint` builds the :class:`~auralm.recipes.hear.model.AudioLM` a checkpoint folder describes (its
  ``config.yaml``), loads the trained weights and refuses a checkpoint trained on another encoder or LM.
* :func:`transcribe` answers for audio files or 16 kHz waveforms. Audio longer than the encoder accepts
  (30 s for Whisper) is cut at silences (:func:`auralm.data.chunk.chunk_by_silence`); with
  ``long_audio="chunks"`` each chunk is transcribed and the texts joined, with ``long_audio="context"``
  the chunks' encoder states are concatenated into one audio context when it fits ``context_tokens``
  audio tokens (else it falls back to chunks). Pieces are batched longest first (a batch of similar
  lengths is little padding) and the answers put back in input order.
  ``prompt`` may be one string or one per item; ``on_text(item, text)`` streams each item's answer as it is
  decoded (an item cut into chunks streams its chunks in time order, joined by spaces), so the pieces join
  to exactly the returned answer. ``max_new_tokens`` (one per item, at most the decoding's own) gives items
  their own token limits in one batch: each stops where it would alone. :func:`audio_spans` gives the spans
  an item is cut into.

Importing this module imports no torch, accelerate, peft or tensorboard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AudioError, ConfigError

LONG_AUDIO = ("chunks", "context")
# the decoding settings a checkpoint ships with (as transformers saves generation_config.json beside a model)
GENERATION_FILE = "generation_config.json"


def save_generation_config(folder: str | Path, gen: Any) -> Path:
    """Write ``gen`` (a GenerationConfig) as the decoding defaults of the checkpoint in ``folder`` (atomically)."""
    from auralm.core.io import atomic_write_json

    path = Path(folder) / GENERATION_FILE
    atomic_write_json(path, gen.to_dict())
    return path


def load_generation_config(folder: str | Path) -> Any:
    """The checkpoint's decoding defaults (its ``generation_config.json``), or None when it has none."""
    import json

    from auralm.components.generation import GenerationConfig

    path = Path(folder) / GENERATION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return GenerationConfig.from_dict(data)


def load_checkpoint(path: str | Path, device: str | None = None) -> Any:
    """An AudioLM in eval mode from a checkpoint folder (or a run folder whose ``latest`` names one)."""
    import yaml

    from auralm.recipes.hear.model import AudioLM, HearConfig
    from auralm.training.checkpoint import load_trainable, resolve_checkpoint

    ckpt = resolve_checkpoint(path)
    raw = yaml.safe_load((ckpt / "config.yaml").read_text()) or {}
    if "model" in raw:  # a TrainConfig (what `auralm hear train` writes)
        from auralm.recipes.hear.config import TrainConfig

        hear = TrainConfig.from_dict(raw).model
    else:  # a bare HearConfig
        hear = HearConfig.from_dict(raw)
    model = AudioLM(hear)  # builds the frozen encoder and LM by name (+ LoRA adapters when lora.r > 0)
    load_trainable(model, ckpt)  # refuses weights trained on another encoder or LM
    if device:
        model.to(device)
    model.eval()
    model.checkpoint_dir = ckpt
    return model


def _load(item: str | Path | np.ndarray, name: str) -> np.ndarray:
    if isinstance(item, (str, Path)):
        from auralm.data.audio import load_audio

        wav, _ = load_audio(item, SAMPLE_RATE)
    else:
        wav = np.asarray(item, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        raise AudioError(f"{name}: audio of length zero")
    return wav


def max_seconds_of(model: Any) -> float:
    """The longest clip the model's encoder takes in one piece (30 s for Whisper; 30 s for encoders without a limit)."""
    enc = getattr(model, "encoder", None)
    limit = getattr(enc, "max_samples", None)
    return limit / SAMPLE_RATE if limit else 30.0


def audio_spans(model: Any, wav: np.ndarray, chunk_seconds: float | None = None) -> list[tuple[float, float]]:
    """The ``(start, end)`` spans in seconds that :func:`transcribe` (``long_audio="chunks"``) cuts a 16 kHz
    waveform into: one span when it fits the encoder (and ``chunk_seconds``), else cuts at silences."""
    from auralm.data.chunk import chunk_by_silence

    limit = min(chunk_seconds or math.inf, max_seconds_of(model))
    if len(wav) <= limit * SAMPLE_RATE:
        return [(0.0, len(wav) / SAMPLE_RATE)]
    spans = chunk_by_silence(wav, SAMPLE_RATE, limit, min_seconds=min(1.0, limit / 4))
    return [(a, b) for a, b in spans if round(b * SAMPLE_RATE) > round(a * SAMPLE_RATE)]


def transcribe(
    model: Any,
    audio: Sequence[str | Path | np.ndarray],
    prompt: str | Sequence[str | None] | None = None,
    gen: Any = None,
    batch_size: int = 8,
    long_audio: str = "chunks",
    context_tokens: int = 1500,
    chunk_seconds: float | None = None,
    desc: str = "",
    on_text: Callable[[int, str], None] | None = None,
    max_new_tokens: Sequence[int] | None = None,
) -> list[str]:
    """One answer per audio item (a path or a 16 kHz mono waveform); see the module docstring."""
    import torch

    from auralm.components.generation import GenerationConfig
    from auralm.components.generation import generate as generate_text
    from auralm.core.progress import progress

    if long_audio not in LONG_AUDIO:
        raise ConfigError(f"long_audio must be one of {', '.join(LONG_AUDIO)}, got {long_audio!r}")
    gen = gen or GenerationConfig()
    if prompt is None or isinstance(prompt, str):
        prompts = [prompt or model.config.prompt] * len(audio)
    else:
        prompts = [p or model.config.prompt for p in prompt]
        if len(prompts) != len(audio):
            raise ConfigError(f"{len(audio)} audio items but {len(prompts)} prompts")
    if max_new_tokens is not None and len(max_new_tokens) != len(audio):
        raise ConfigError(f"{len(audio)} audio items but {len(max_new_tokens)} max_new_tokens")
    limit = min(chunk_seconds or math.inf, max_seconds_of(model))
    # work: (item index, wav or states) in order; an item's pieces are joined at the end
    pieces: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(audio):
        wav = _load(item, str(item) if isinstance(item, (str, Path)) else f"waveform {i}")
        if len(wav) <= limit * SAMPLE_RATE:
            pieces.append((i, {"wav": wav}))
            continue
        chunks = [wav[round(a * SAMPLE_RATE) : round(b * SAMPLE_RATE)] for a, b in audio_spans(model, wav, limit)]
        if long_audio == "context":
            with torch.no_grad():
                states, lengths = model.encode_audio(chunks)  # n_chunks, T, D
            joined = torch.cat([s[: int(n)] for s, n in zip(states, lengths)])  # sum T, D
            stack = max(1, int(getattr(model.config.connector, "stack", 1)))
            if math.ceil(joined.shape[0] / stack) <= context_tokens:
                pieces.append((i, {"states": joined}))
                continue
        pieces += [(i, {"wav": c}) for c in chunks]
    # batches of similar length pad little: work longest first, answers put back in order
    def size(piece: dict[str, Any]) -> float:
        return len(piece["wav"]) / SAMPLE_RATE if "wav" in piece else piece["states"].shape[0] / 50.0  # ~50 frames/s

    order = sorted(range(len(pieces)), key=lambda j: (-size(pieces[j][1]), j))
    answers: dict[int, str] = {}
    stream = _Stream(pieces, answers, on_text) if on_text is not None else None
    starts = range(0, len(order), batch_size)
    for s in progress(starts, desc=desc or "transcribe", total=len(starts)):
        group = [(j, pieces[j][1]) for j in order[s : s + batch_size]]
        for kind in ("wav", "states"):  # a batch holds waveforms or states, not both
            part = [(j, p[kind]) for j, p in group if kind in p]
            if not part:
                continue
            batch: dict[str, Any] = {"prompts": [prompts[pieces[j][0]] for j, _ in part], "texts": None}
            if max_new_tokens is not None:  # each item's own limit (a server batches requests that differ in it)
                batch["max_new"] = [min(int(max_new_tokens[pieces[j][0]]), gen.max_new_tokens) for j, _ in part]
            if kind == "wav":
                batch["wavs"] = [w for _, w in part]
            else:
                lengths = torch.tensor([x.shape[0] for _, x in part])
                states = torch.zeros(len(part), int(lengths.max()), part[0][1].shape[1], dtype=part[0][1].dtype)
                for b, (_, x) in enumerate(part):
                    states[b, : x.shape[0]] = x
                batch["states"], batch["lengths"] = states, lengths
            with torch.no_grad():
                if stream is None:
                    outs = model.generate(batch, gen)
                else:
                    rows = [j for j, _ in part]
                    outs = generate_text(model, batch, gen, on_delta=lambda b, t, rows=rows: stream.live(rows[b], t))
            for (j, _), text in zip(part, outs):
                answers[j] = text.strip()
                if stream is not None:
                    stream.finished(j)
    texts: list[list[str]] = [[] for _ in audio]
    for j, (i, _) in enumerate(pieces):  # pieces are in item order, an item's chunks in time order
        texts[i].append(answers[j])
    return [" ".join(t for t in parts if t) for parts in texts]


class _Stream:
    """Streams the answers of :func:`transcribe` per item, an item's pieces in time order: live text of the
    piece the item is at, whole pieces once all before them are done, joined by single spaces."""

    def __init__(self, pieces: list[tuple[int, Any]], answers: dict[int, str], on_text: Callable[[int, str], None]):
        self.answers, self.on_text = answers, on_text
        self.item_pieces: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(pieces):
            self.item_pieces.setdefault(i, []).append(j)
        self.at = dict.fromkeys(self.item_pieces, 0)  # item -> index of the piece it streams now
        self.sent = {i: "" for i in self.item_pieces}  # item -> text of the current piece sent so far
        self.any = dict.fromkeys(self.item_pieces, False)  # item -> has it sent any text yet
        self.item_of = {j: i for j, (i, _) in enumerate(pieces)}

    def _send(self, i: int, text: str) -> None:
        if text:
            if not self.sent[i] and self.any[i]:
                text = " " + text  # a new non-empty piece after earlier text
            self.on_text(i, text)
            self.any[i] = True

    def live(self, j: int, delta: str) -> None:
        i = self.item_of[j]
        if self.item_pieces[i][self.at[i]] == j and (self.sent[i] or delta.strip()):
            self._send(i, delta if self.sent[i] else delta.lstrip())
            self.sent[i] += delta if self.sent[i] else delta.lstrip()

    def finished(self, j: int) -> None:
        i = self.item_of[j]
        order = self.item_pieces[i]
        while self.at[i] < len(order) and order[self.at[i]] in self.answers:
            final = self.answers[order[self.at[i]]]
            if final.startswith(self.sent[i]):
                self._send(i, final[len(self.sent[i]) :])
            self.at[i] += 1
            self.sent[i] = ""


class HearPipeline:
    """A trained S1 model ready to answer: ``auralm.load(folder).transcribe("clip.wav")``.

    ``transcribe`` takes one audio item (a path or a 16 kHz mono waveform) and returns one string, or a
    list of items and returns a list. The decoding settings are the checkpoint's own
    (``generation_config.json``, written by ``auralm demo`` with the settings its report scored; greedy
    defaults when absent); ``generation`` (a :class:`~auralm.components.generation.GenerationConfig`, which
    replaces them, or a dict of some of its fields, which overrides those) changes them for one call.
    """

    recipe = "hear"
    sample_rate = SAMPLE_RATE

    def __init__(self, model: Any, generation: Any = None):
        from auralm.components.generation import GenerationConfig

        self.model = model
        self.checkpoint_dir = getattr(model, "checkpoint_dir", None)
        saved = load_generation_config(self.checkpoint_dir) if self.checkpoint_dir else None
        self.generation_saved = saved is not None  # the checkpoint ships its own decoding settings
        self.generation = generation or saved or GenerationConfig()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> HearPipeline:
        return cls(load_checkpoint(path, device))

    @property
    def config(self) -> Any:
        return self.model.config

    def transcribe(self, audio: Any, prompt: str | None = None, generation: Any = None, **kwargs: Any) -> Any:
        """Answers for ``audio`` (see the class docstring); ``kwargs`` go to :func:`transcribe`
        (``batch_size``, ``long_audio``, ``context_tokens``, ``chunk_seconds``, ``desc``)."""
        from auralm.components.generation import GenerationConfig

        single = isinstance(audio, (str, Path)) or (isinstance(audio, np.ndarray) and audio.ndim == 1)
        gen = self.generation
        if isinstance(generation, dict):
            gen = GenerationConfig.from_dict({**gen.to_dict(), **generation})
        elif generation is not None:
            gen = generation
        texts = transcribe(self.model, [audio] if single else list(audio), prompt, gen, **kwargs)
        return texts[0] if single else texts


__all__ = ["GENERATION_FILE", "HearPipeline", "load_checkpoint", "load_generation_config", "max_seconds_of",
           "save_generation_config", "transcribe"]
