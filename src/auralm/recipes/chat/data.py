"""``auralm chat synth``: the embedded S3 dataset, and reading it back for training and evaluation.

Built from ``auralm synth scenes`` (pictures, captions, questions, conversations; held-out scenes and
held-out colour-shape combinations) plus speech rendered by ``auralm synth speech``'s engines:

* **spoken questions**: every question text is spoken by ``clips_per_text`` training voices; the
  evaluation questions (of held-out scenes) also by a held-out voice (``test_voices``) never heard in
  training;
* **sound context**: number words ("one" .. "four") spoken by the same voices; a conversation may carry
  one such clip, with "what number do you hear?" turns (type ``sound``) and **cross-modal** turns that
  need both the picture and the sound ("Is the number you hear the same as the number of shapes?",
  type ``cross``, balanced yes/no);
* test scenes drawn a second time by another program (:func:`auralm.data.scenes.render_scene_alt`).

Layout of ``--out DIR``::

    DIR/scenes/           auralm synth scenes output (images/, scenes.jsonl, config.yaml)
    DIR/pictures/         extra scenes for the image CTC head (``pictures``; training split used only)
    DIR/images_alt/       test (and valid) scenes drawn by the second renderer
    DIR/speech/wavs/      spoken questions and number words (16 kHz mono); speech.jsonl lists them
    DIR/examples.jsonl    one record per example (below); DIR/config.yaml the ChatSynthConfig

An example: ``{"id", "scene", "split", "kind": caption | chat | qa, "messages": [...], "media": [{"kind":
"image", "path"} | {"kind": "audio", "path", "text"}], "types": [one per assistant turn], "heldout": [...]}``;
``qa`` examples (valid/test scenes, one question each) also hold ``question``, ``answer``, ``type``,
``spoken`` (a training voice's clip of the question), ``spoken_new_voice`` (a held-out voice's) and, for
``sound``/``cross``, ``sound`` / ``sound_new_voice`` (the number-word clip) and ``number``. Paths are relative to DIR. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.config import Config, apply_overrides, help_field, save_config
from auralm.core.errors import ConfigError, ManifestError
from auralm.core.io import atomic_path, atomic_write_text
from auralm.core.progress import progress
from auralm.data.scenes import NUMBER_WORDS, SceneConfig, read_scenes, render_scene_alt, synth_scenes
from auralm.data.synth import DEFAULT_VOICES, FLITE_BASE_F0, ClipSpec, SynthConfig, render_clip

IMAGE = "<|image|>"
AUDIO = "<|audio|>"
TEST_VOICES = ["espeak-ng:en-gb-scotland+f4", "flite:awb"]  # held out: valid/test speech only
TRAIN_VOICES = [v for v in DEFAULT_VOICES if v not in TEST_VOICES]
SOUND_QUESTIONS = ("What number do you hear?", "Which number is spoken?", "What number does the voice say?",
                   "What number is said in the clip?")  # fmt: skip
CROSS_QUESTIONS = ("Is the number you hear the same as the number of shapes?",
                   "Does the spoken number match how many shapes there are?",
                   "Is the number said equal to the number of shapes in the picture?",
                   "Are there as many shapes as the number you hear?")  # fmt: skip
QA_TYPES = ("colour", "shape", "count", "exists", "position", "sound", "cross")
REPLY_TOKENS = 16  # greedy tokens decoded for a scored reply: a cross-modal reply with its working takes about 12


@dataclasses.dataclass
class ChatSynthConfig(Config):
    """Settings of ``auralm chat synth``."""

    out: str = help_field("", "output folder")
    scenes: int = help_field(1500, "number of scenes (train/valid/test split per scene: 80/10/10)")
    seed: int = help_field(0, "seed of every choice")
    image_size: int = help_field(224, "side of the drawn images in pixels")
    heldout: list[str] = help_field(["blue triangle", "yellow circle", "purple square"],
                                    "'colour shape' combinations kept out of training entirely")  # fmt: skip
    conversations: int = help_field(3, "conversations per training scene")
    voices: list[str] = help_field(TRAIN_VOICES, "voices of training speech (engine:voice)")
    test_voices: list[str] = help_field(TEST_VOICES, "held-out voices: valid/test spoken questions and sounds only")
    clips_per_text: int = help_field(2, "training voices that speak each question text")
    spoken_frac: float = help_field(0.3, "share of training questions asked by voice instead of text")
    sound_frac: float = help_field(0.35, "share of training conversations that carry a number-word clip")
    numbers: list[str] = help_field(["one", "two", "three", "four"], "number words of the sound clips")
    cross_working: bool = help_field(True, "training replies to cross-modal questions name the two numbers before the "
                                           "answer ('I hear three and see two shapes: no.'); false: a bare yes/no")
    jobs: int = help_field(2, "speech clips rendered and pictures drawn at once")
    pictures: int = help_field(0, "extra scenes drawn for the image CTC head alone (DIR/pictures: another seed; "
                                  "their training-split scenes with their canonical captions; no questions, no speech)")

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("ChatSynthConfig.out: an output folder is required (--out DIR)")
        if self.scenes < 10:
            raise ConfigError(f"ChatSynthConfig.scenes: at least 10 scenes are needed, got {self.scenes}")
        if not self.voices or not self.test_voices:
            raise ConfigError("ChatSynthConfig: voices and test_voices must both be non-empty")
        if set(self.voices) & set(self.test_voices):
            raise ConfigError(f"ChatSynthConfig: a voice is both a training and a held-out voice: "
                              f"{sorted(set(self.voices) & set(self.test_voices))}")  # fmt: skip
        for name in ("spoken_frac", "sound_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"ChatSynthConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        bad = [n for n in self.numbers if n not in NUMBER_WORDS[1:]]
        if bad or len(self.numbers) < 2:
            raise ConfigError(f"ChatSynthConfig.numbers: at least two of {NUMBER_WORDS[1:]}, got {self.numbers}")
        if self.pictures < 0:
            raise ConfigError(f"ChatSynthConfig.pictures must be >= 0, got {self.pictures}")
        if self.clips_per_text < 1 or self.conversations < 1 or self.jobs < 1:
            raise ConfigError("ChatSynthConfig: clips_per_text, conversations and jobs must be >= 1")


# -- speech -----------------------------------------------------------------------------------------
def normalise(reply: str) -> str:
    """A reply's answer as one lower-case word without punctuation: its first word ("Red." -> "red"), or, in a
    reply that shows its working before a colon, the first word after the last colon ("I hear three and see
    two shapes: no." -> "no"). How every accuracy here (validation, evaluation, the demo's grid) compares a
    reply with its answer."""
    reply = reply.rsplit(":", 1)[-1]
    words = reply.strip().lower().replace(",", " ").replace(".", " ").replace("!", " ").split()
    return words[0] if words else ""


def _spec(text: str, voice: str, index: int, seed: int) -> ClipSpec:
    engine, name = voice.split(":", 1)
    h = int(hashlib.sha256(f"{seed}:{voice}:{text}".encode()).hexdigest()[:8], 16)
    u_rate, u_pitch = (h % 1000) / 999, ((h // 1000) % 1000) / 999
    if engine == "espeak-ng":
        rate, pitch = float(round(140 + 50 * u_rate)), float(round(35 + 30 * u_pitch))
    else:
        rate, pitch = round(0.9 + 0.25 * u_rate, 2), float(round(FLITE_BASE_F0.get(name, 110.0) * (0.9 + 0.25 * u_pitch)))
    return ClipSpec(index, text, "chat", "train", engine, name, rate, pitch)


class Speech:
    """Clips of (text, voice), rendered once; ``path(text, voice)`` is relative to the dataset folder."""

    def __init__(self, root: Path, seed: int, jobs: int):
        self.root, self.seed, self.jobs = root, seed, jobs
        self.cfg = SynthConfig(out=str(root / "speech"), jobs=jobs)
        self.wanted: dict[tuple[str, str], ClipSpec] = {}

    def want(self, text: str, voice: str) -> str:
        key = (text, voice)
        if key not in self.wanted:
            self.wanted[key] = _spec(text, voice, len(self.wanted), self.seed)
        return f"speech/wavs/{self.wanted[key].clip_id(self.cfg)}.wav"

    def render(self) -> int:
        wavs = self.root / "speech" / "wavs"
        wavs.mkdir(parents=True, exist_ok=True)
        specs = list(self.wanted.values())
        rendered = 0
        with ThreadPoolExecutor(self.jobs) as pool:
            for _, fresh in progress(pool.map(lambda s: render_clip(s, self.cfg, wavs), specs),
                                     desc="chat synth speech", total=len(specs)):  # fmt: skip
                rendered += int(fresh)
        lines = [json.dumps({"audio": f"speech/wavs/{s.clip_id(self.cfg)}.wav", "text": s.text,
                             "voice": f"{s.engine}:{s.voice}"}) for s in specs]  # fmt: skip
        atomic_write_text(self.root / "speech" / "speech.jsonl", "\n".join(lines) + "\n")
        return rendered


# -- examples ---------------------------------------------------------------------------------------
def _n_shapes(scene: dict[str, Any]) -> int:
    return len(scene["objects"])


def cross_reply(number: str, n_shapes: int, working: bool) -> str:
    """The reply to a cross-modal question: "yes" when the heard number word is the number of shapes, else "no";
    with ``working``, after the two numbers it compares ("I hear three and see two shapes: no.")."""
    answer = "yes" if NUMBER_WORDS.index(number) == n_shapes else "no"
    if not working:
        return answer
    return f"I hear {number} and see {NUMBER_WORDS[n_shapes]} {'shape' if n_shapes == 1 else 'shapes'}: {answer}."


def _sound_turns(scene: dict[str, Any], number: str, working: bool, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(question, answer, type) turns about a number-word clip."""
    cross = cross_reply(number, _n_shapes(scene), working)
    turns = [(str(rng.choice(SOUND_QUESTIONS)), number, "sound"), (str(rng.choice(CROSS_QUESTIONS)), cross, "cross")]
    keep = [t for t in turns if rng.random() < 0.75] or [turns[int(rng.integers(2))]]
    return keep


def _pick_number(scene: dict[str, Any], numbers: list[str], rng: np.random.Generator) -> str:
    """The number word of a scene's sound clip: the scene's shape count half of the time (when it is a choice)."""
    count = NUMBER_WORDS[_n_shapes(scene)]
    if count in numbers and rng.random() < 0.5:
        return count
    others = [n for n in numbers if n != count]
    return str(rng.choice(others))


def _chat_examples(scene: dict[str, Any], cfg: ChatSynthConfig, speech: Speech, rng: np.random.Generator) -> list[dict]:
    out = []
    image = {"kind": "image", "path": f"scenes/{scene['image']}"}
    for c, conv in enumerate(scene.get("conversations", [])[: cfg.conversations]):
        turns = [(conv["messages"][2 * i]["content"], conv["messages"][2 * i + 1]["content"], conv["types"][i],
                  bool(conv["qa"][i] >= 0 and scene["qa"][conv["qa"][i]]["heldout"])) for i in range(len(conv["types"]))]  # fmt: skip
        media_sound = None
        if rng.random() < cfg.sound_frac:
            number = _pick_number(scene, cfg.numbers, rng)
            voice = str(rng.choice(cfg.voices))
            media_sound = {"kind": "audio", "path": speech.want(number, voice), "text": number}
            for q, a, t in _sound_turns(scene, number, cfg.cross_working, rng):
                turns.insert(int(rng.integers(len(turns) + 1)), (q, a, t, False))
        messages, media, types, held = [], [image], [], []
        for i, (q, a, t, h) in enumerate(turns):
            # any question may be spoken (as in the evaluation), "what number do you hear?" too: then two clips follow
            spoken = t != "caption" and not q.startswith("And the") and rng.random() < cfg.spoken_frac
            if spoken:
                clip = {"kind": "audio", "path": speech.want(q, _voice_for(q, cfg, rng)), "text": q}
                text = AUDIO
            else:
                clip, text = None, q
            if i == 0:
                prefix = IMAGE + (AUDIO if media_sound else "") + "\n"
                if media_sound:
                    media.append(media_sound)
                text = prefix + text
            if clip is not None:
                media.append(clip)
            messages += [{"role": "user", "content": text}, {"role": "assistant", "content": a}]
            types.append(t)
            held.append(h)
        out.append({"id": f"{scene['id']}-c{c}", "scene": scene["id"], "split": scene["split"], "kind": "chat",
                    "messages": messages, "media": media, "types": types, "heldout": held})  # fmt: skip
    return out


def _voice_for(text: str, cfg: ChatSynthConfig, rng: np.random.Generator) -> str:
    """One of the ``clips_per_text`` training voices assigned to a question text (fixed per text and seed)."""
    h = int(hashlib.sha256(f"{cfg.seed}:{text}".encode()).hexdigest()[:8], 16)
    voices = [cfg.voices[(h + k) % len(cfg.voices)] for k in range(min(cfg.clips_per_text, len(cfg.voices)))]
    return voices[int(rng.integers(len(voices)))]


def _caption_examples(scene: dict[str, Any], rng: np.random.Generator) -> list[dict]:
    from auralm.data.scene_words import DESCRIBE

    image = {"kind": "image", "path": f"scenes/{scene['image']}"}
    out = []
    for k, caption in enumerate(scene["captions"][:2]):
        messages = [{"role": "user", "content": f"{IMAGE}\n{rng.choice(DESCRIBE)}"}, {"role": "assistant", "content": caption}]
        out.append({"id": f"{scene['id']}-d{k}", "scene": scene["id"], "split": scene["split"], "kind": "caption",
                    "messages": messages, "media": [image], "types": ["caption"], "heldout": [scene["heldout"]]})  # fmt: skip
    return out


def _qa_examples(scene: dict[str, Any], cfg: ChatSynthConfig, speech: Speech, rng: np.random.Generator) -> list[dict]:
    """One example per question; each spoken twice: by a training voice (``spoken``; the scene is new, the voice
    is not) and by a held-out voice (``spoken_new_voice``); the number-word clip likewise (``sound``,
    ``sound_new_voice``)."""
    out = []
    new_voice = cfg.test_voices[int(rng.integers(len(cfg.test_voices)))]
    alt = f"images_alt/{Path(scene['image']).name}"
    for k, qa in enumerate(scene["qa"]):
        q = qa["question"]
        out.append({"id": f"{scene['id']}-q{k}", "scene": scene["id"], "split": scene["split"], "kind": "qa",
                    "type": qa["type"], "question": q, "answer": qa["answer"], "heldout": qa["heldout"],
                    "image": f"scenes/{scene['image']}", "image_alt": alt, "spoken": speech.want(q, _voice_for(q, cfg, rng)),
                    "spoken_new_voice": speech.want(q, new_voice)})  # fmt: skip
    number = _pick_number(scene, cfg.numbers, rng)
    voice = str(rng.choice(cfg.voices))
    for t, q, a in (("sound", str(rng.choice(SOUND_QUESTIONS)), number),
                    ("cross", str(rng.choice(CROSS_QUESTIONS)), cross_reply(number, _n_shapes(scene), working=False))):  # fmt: skip
        out.append({"id": f"{scene['id']}-{t}", "scene": scene["id"], "split": scene["split"], "kind": "qa", "type": t,
                    "question": q, "answer": a, "heldout": False, "image": f"scenes/{scene['image']}", "image_alt": alt,
                    "sound": speech.want(number, voice), "sound_new_voice": speech.want(number, new_voice),
                    "number": number, "spoken": speech.want(q, _voice_for(q, cfg, rng)),
                    "spoken_new_voice": speech.want(q, new_voice)})  # fmt: skip
    return out


def synth_chat(cfg: ChatSynthConfig) -> Path:
    """Build the dataset ``cfg`` describes; return the path of ``examples.jsonl``."""
    root = Path(cfg.out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {root} exists and is not a folder")
    scfg = SceneConfig(out=str(root / "scenes"), n=cfg.scenes, seed=cfg.seed, image_size=cfg.image_size,
                       heldout=list(cfg.heldout), conversations=cfg.conversations, jobs=cfg.jobs)  # fmt: skip
    synth_scenes(scfg)
    if cfg.pictures:  # the same vocabulary and held-out combinations, another seed: new pictures, never test scenes
        synth_scenes(scfg.replace(out=str(root / "pictures"), n=cfg.pictures, seed=cfg.seed + 1, conversations=0))
    scenes = read_scenes(root / "scenes")
    save_config(cfg, root)
    speech = Speech(root, cfg.seed, cfg.jobs)
    rng = np.random.default_rng(cfg.seed + 7)
    examples: list[dict] = []
    for scene in scenes:
        if scene["split"] == "train":
            examples += _caption_examples(scene, rng) + _chat_examples(scene, cfg, speech, rng)
        else:
            examples += _caption_examples(scene, rng) + _qa_examples(scene, cfg, speech, rng)
    for voice in cfg.voices:  # every training voice says every number word (CTC warm-up material)
        for n in cfg.numbers:
            speech.want(n, voice)
    alt = root / "images_alt"
    alt.mkdir(parents=True, exist_ok=True)
    for scene in progress([s for s in scenes if s["split"] != "train"], desc="chat synth alt renderer"):
        path = alt / Path(scene["image"]).name
        if not path.is_file():
            with atomic_path(path) as tmp:
                render_scene_alt(scene).save(tmp, format="PNG")
    rendered = speech.render()
    path = root / "examples.jsonl"
    atomic_write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    kinds = {k: sum(e["kind"] == k for e in examples) for k in ("caption", "chat", "qa")}
    print(f"auralm chat synth: {len(scenes)} scenes; {kinds['caption']} caption, {kinds['chat']} conversation and "
          f"{kinds['qa']} question examples; {len(speech.wanted)} speech clips ({rendered} rendered); wrote {path}",
          file=sys.stderr)  # fmt: skip
    return path


def read_examples(dataset: str | Path) -> list[dict[str, Any]]:
    """The examples of a dataset folder (or its examples.jsonl); bad lines raise naming them."""
    path = Path(dataset)
    if path.is_dir():
        path = path / "examples.jsonl"
    if not path.is_file():
        raise ManifestError(f"{path}: no such file (make one with `auralm chat synth --out DIR`)")
    out, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            bad.append(f"line {number}: not JSON ({exc})")
            continue
        if rec.get("kind") not in ("caption", "chat", "qa") or "split" not in rec:
            bad.append(f"line {number}: needs kind (caption, chat or qa) and split")
            continue
        out.append(rec)
    if bad:
        raise ManifestError(f"{path}: " + "; ".join(bad[:10]))
    return out


def speech_rows(dataset: str | Path) -> list[dict[str, str]]:
    """The speech clips of a dataset: ``{"audio", "text", "voice"}`` (paths relative to the dataset)."""
    path = Path(dataset) / "speech" / "speech.jsonl"
    if not path.is_file():
        raise ManifestError(f"{path}: no such file (run `auralm chat synth`)")
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def scene_descriptions(dataset: str | Path, count: bool = False) -> dict[str, str]:
    """Each scene picture (path relative to the dataset) -> its canonical caption: every shape with its size,
    colour and place, in reading order (what the image CTC head learns to say); ``count``: followed by the number
    of shapes as a word ("A small red circle at the top left and a large blue square at the bottom: two shapes.").
    The extra pictures of ``pictures/`` (``ChatSynthConfig.pictures``) come in with their training-split scenes only."""
    root = Path(dataset)

    def describe(scene: dict[str, Any]) -> str:
        text = scene["captions"][0]
        if not count:
            return text
        n = _n_shapes(scene)
        return f"{text.removesuffix('.')}: {NUMBER_WORDS[n]} {'shape' if n == 1 else 'shapes'}."

    out = {f"scenes/{s['image']}": describe(s) for s in read_scenes(root / "scenes")}
    if (root / "pictures" / "scenes.jsonl").is_file():
        out |= {f"pictures/{s['image']}": describe(s) for s in read_scenes(root / "pictures") if s["split"] == "train"}
    return out


# -- reading it back: cached features, batches ------------------------------------------------------
class Features:
    """Cached encoder states of a dataset's images and clips (the shared feature cache, one folder per encoder)."""

    def __init__(self, dataset: str | Path, model: Any):
        self.root = Path(dataset)
        self.model = model
        img, aud = model.image_encoder, model.audio_encoder
        safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", s)  # noqa: E731
        self.image_dir = self.root / "cache" / f"image-{safe(img.name)}-{img.image_size}"
        self.audio_dir = self.root / "cache" / f"audio-{safe(aud.name)}"
        self._image = self._audio = None

    def ensure(self, images: Sequence[str], clips: Sequence[str]) -> None:
        """Encode every image and clip (paths relative to the dataset) not yet cached."""
        from auralm.data.embed_cache import EmbeddingCache, embed_images, embed_manifest
        from auralm.data.manifest import Row

        images, clips = sorted(set(images)), sorted(set(clips))
        if images:
            embed_images([self.root / p for p in images], self.model.image_encoder, self.image_dir)
        if clips:
            rows = [Row(id=f"clip-{i}", audio=str((self.root / p).resolve())) for i, p in enumerate(clips)]
            embed_manifest(rows, self.model.audio_encoder, self.audio_dir, batch_size=16)
        enc = self.model.image_encoder
        self._image = EmbeddingCache(self.image_dir, enc.name, enc.revision) if images else None
        enc = self.model.audio_encoder
        self._audio = EmbeddingCache(self.audio_dir, enc.name, enc.revision) if clips else None

    def image(self, path: str) -> Any:
        states = self._image.lookup(self._image.file_key(self.root / path)) if self._image else None
        if states is None:
            raise ConfigError(f"image {path} is not in the feature cache {self.image_dir}")
        return states

    def audio(self, path: str) -> Any:
        states = self._audio.lookup(self._audio.file_key((self.root / path).resolve())) if self._audio else None
        if states is None:
            raise ConfigError(f"clip {path} is not in the feature cache {self.audio_dir}")
        return states


def media_paths(examples: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Every image and clip path the examples use (qa examples: image, alt image, spoken question, sound)."""
    images, clips = [], []
    for e in examples:
        for m in e.get("media", []):
            (images if m["kind"] == "image" else clips).append(m["path"])
        for k in ("image", "image_alt"):
            if k in e:
                images.append(e[k])
        for k in ("spoken", "sound", "spoken_new_voice", "sound_new_voice"):
            if k in e:
                clips.append(e[k])
    return images, clips


def conversation_size(e: dict[str, Any], descriptions: dict[str, str] | None = None) -> int:
    """About a conversation's length in characters as the LM will read it: its messages (each with its chat
    template's header, about 5 tokens or 20 characters), each clip's transcript (a spoken question or a number word
    becomes about its words), each picture's description (or a typical one's 80 characters). Used to batch
    conversations of similar length together."""
    descriptions = descriptions or {}
    size = sum(20 + len(m["content"]) for m in e["messages"])
    for m in e.get("media", []):
        size += len(descriptions.get(m["path"], "x" * 80)) if m["kind"] == "image" else len(m.get("text") or "")
    return size


def to_batch(records: Sequence[dict[str, Any]], feats: Features) -> dict[str, Any]:
    """Dataset records (``messages`` + ``media``) -> the model's batch, media as cached states."""
    media = []
    for r in records:
        items = []
        for m in r["media"]:
            if m["kind"] == "image":
                items.append({"kind": "image", "states": feats.image(m["path"])})
            else:
                items.append({"kind": "audio", "states": feats.audio(m["path"]), "text": m.get("text")})
        media.append(items)
    return {"messages": [r["messages"] for r in records], "media": media}


def qa_record(e: dict[str, Any], image: str | None = "image", spoken: str | None = None,
              sound: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A single-turn conversation of a ``qa`` example: the picture (``image``: the key of its path, or None
    for no picture), the number-word clip when the type needs one (``sound``: the key of its path, default
    ``"sound"``, or a path), the question typed, or spoken (``spoken``: the key of the clip, ``"spoken"`` or
    ``"spoken_new_voice"``)."""
    media, head = [], ""
    if image is not None:
        media.append({"kind": "image", "path": e[image]})
        head += "<|image|>"
    if e["type"] in ("sound", "cross"):
        key = sound or "sound"
        media.append({"kind": "audio", "path": e.get(key, key)})
        head += "<|audio|>"
    if spoken:
        media.append({"kind": "audio", "path": e[spoken]})
        text = "<|audio|>"
    else:
        text = e["question"]
    content = f"{head}\n{text}" if head else text
    return {"messages": [{"role": "user", "content": content}], "media": media}


# -- command ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="auralm chat synth", description="Build the S3 chat dataset: drawn scenes, "
                                "questions typed and spoken, number-word sounds, cross-modal questions (docs/chat.md).",
                                epilog="Trailing key=value pairs override any ChatSynthConfig field.")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scenes", type=int, help="number of scenes (default 1500)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="ChatSynthConfig overrides")
    return p


def cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    data = {k: v for k, v in vars(args).items() if v is not None and k != "overrides"}
    synth_chat(apply_overrides(ChatSynthConfig.from_dict(data), args.overrides))
    return 0
