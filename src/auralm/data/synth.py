"""``auralm synth speech``: render a synthetic speech corpus with espeak-ng and flite.

Each clip is one sentence spoken by one voice at one rate and pitch, all chosen from the seed by
hashing (so clip ``i`` is the same whatever ``--n`` is, and the same seed gives byte-identical files).
Sentences come from the named text sources of ``sources`` (Debian's fortunes, WordNet's example
sentences and definitions, GCIDE's quotations: see :mod:`auralm.data.text_sources`), mixed by their
weights (clip ``i`` draws its source from the seed, then the next sentence of that source's shuffled
list), from ``--text FILE`` (its non-empty lines in order, one clip each, cycling through the voices),
or from an embedded list when no source is installed. Each row's ``meta.text_source`` names its source.

Options: ``flite_share`` (the share of clips spoken by flite voices, whatever the number of espeak-ng
voices), the voice sets of :mod:`auralm.data.voices` (``--voices wide``: 8 English espeak-ng accents x 20
variants + the 5 flite voices), and augmentation of the ``augment_splits`` clips (each with its own probability and range,
drawn per clip from the seed): speed perturbation and reverberation through sox, white noise at a
signal-to-noise ratio. The chosen values are in ``meta.augment``.

Layout of ``--out DIR``::

    DIR/wavs/000000-1a2b3c4d.wav   16 kHz mono 16-bit, peak-normalised, 0.1 s silence each side
    DIR/wavs/000000-1a2b3c4d.txt   its transcript (so ``auralm prepare DIR`` also works)
    DIR/manifest.jsonl             one row per clip (see :mod:`auralm.data.manifest`)
    DIR/config.yaml                the resolved :class:`SynthConfig`

The split is assigned per sentence (``source`` is a hash of the sentence text), so one sentence
spoken by two voices, or found in two text sources, never lands in both train and test.
``eval_voices`` (names or shell patterns such as ``espeak-ng:en-gb-x-gbcwmd*``) are never used for
train or valid; they speak the share ``eval_voice_share`` of the test clips (1: all of them; 0.5: half,
the other half in training voices, so one test split scores both), marked ``meta.held_out_voice``. A clip's file name holds a hash of everything that shapes it; a rerun skips clips whose files
are already there and valid, and removes clips of this naming that the new run no longer lists.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from auralm.core.config import Config, apply_overrides, comma_list, help_field, save_config
from auralm.core.errors import AudioError, AuralmError, ConfigError, ToolMissingError
from auralm.core.io import atomic_write_text
from auralm.core.progress import progress
from auralm.data import text_sources
from auralm.data.audio import audio_info, is_silent, resample, write_wav
from auralm.data.manifest import Row, hash_unit, split_for_source, write_manifest
from auralm.data.voices import (  # noqa: F401  (re-exported: the voice names were defined here)
    DEFAULT_VOICES,
    ENGINES,
    FLITE_BASE_F0,
    VOICE_SETS,
    WIDE_ESPEAK_LANGS,
    WIDE_ESPEAK_VARIANTS,
    WIDE_VOICES,
    available_voices,
    match_voices,
    qualify_voice,
)
from auralm.data.voices import warn as _warn

DEFAULT_N = 100
AUGMENTS = ("speed", "reverb", "noise")
CLIP_NAME = re.compile(r"^\d{6,}-[0-9a-f]{8}\.(wav|txt)$")


@dataclasses.dataclass
class SynthConfig(Config):
    """Settings of ``auralm synth speech``."""

    out: str = help_field("", "output folder (wavs/, manifest.jsonl, config.yaml)")
    n: int | None = help_field(None, f"number of clips (default {DEFAULT_N}; with --text: every line)")
    seed: int = help_field(0, "seed for sentence order, voice, rate and pitch choices")
    text: str | None = help_field(None, "text file whose non-empty lines are spoken in order")
    sources: dict[str, float] = help_field({"fortunes": 1.0}, "text sources and their weights (shares of the clips): "
                                           + ", ".join(text_sources.SOURCES))
    voices: list[str] = help_field(DEFAULT_VOICES, "voices as engine:voice (espeak-ng:en-gb+f2, flite:slt)")
    eval_voices: list[str] = help_field([], "voices (or shell patterns) held out of train/valid, used only in the test split")
    eval_voice_share: float = help_field(1.0, "share of the test clips spoken by the eval_voices (the rest: training voices)")
    flite_share: float | None = help_field(None, "share of the clips spoken by flite voices (null: every voice equally likely)")
    valid_frac: float = help_field(0.1, "fraction of sentences in the valid split")
    test_frac: float = help_field(0.1, "fraction of sentences in the test split")
    espeak_rate: list[int] = help_field([130, 190], "espeak-ng speed range, words per minute (-s)")
    espeak_pitch: list[int] = help_field([30, 70], "espeak-ng pitch range, 0..99 (-p)")
    flite_stretch: list[float] = help_field([0.85, 1.2], "flite duration_stretch range (larger is slower)")
    flite_pitch: list[float] = help_field([0.85, 1.2], "flite pitch range as a factor of the voice's mean F0")
    sample_rate: int = help_field(16000, "output sample rate (Hz); files are mono 16-bit PCM")
    peak: float = help_field(0.9, "peak amplitude after normalisation (0..1]")
    trim_silence: bool = help_field(True, "cut leading/trailing silence, then pad 0.1 s of digital silence each side")
    augment_splits: list[str] = help_field(["train"], "splits whose clips may be augmented")
    speed_prob: float = help_field(0.0, "probability that a clip is speed-perturbed (sox speed: tempo and pitch)")
    speed_range: list[float] = help_field([0.9, 1.1], "speed factor range")
    reverb_prob: float = help_field(0.0, "probability that a clip is reverberated (sox reverb)")
    reverb_range: list[float] = help_field([10.0, 50.0], "sox reverberance range, percent")
    noise_prob: float = help_field(0.0, "probability that white noise is added to a clip")
    noise_snr: list[float] = help_field([10.0, 30.0], "signal-to-noise ratio range of the added noise, dB")
    jobs: int = help_field(2, "clips rendered at once (each drives its own engine process)")

    def validate(self) -> None:
        if not isinstance(self.out, str) or not self.out.strip():
            raise ConfigError("SynthConfig.out: an output folder is required (--out DIR)")
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            raise ConfigError(f"SynthConfig.n: the number of clips must be a whole number >= 1, got {self.n!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise ConfigError(f"SynthConfig.text: expected a file path, got {self.text!r}")
        for name in ("voices", "eval_voices"):
            value = getattr(self, name)
            if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
                raise ConfigError(f"SynthConfig.{name}: expected a list of engine:voice strings, got {value!r}")
        if not self.voices:
            raise ConfigError("SynthConfig.voices: at least one voice is needed")
        for v in self.voices:
            if v.partition(":")[0] not in ENGINES or not v.partition(":")[2]:
                raise ConfigError(f"SynthConfig.voices: {v!r} is not engine:voice with engine in {ENGINES}")
        if not isinstance(self.sources, dict) or not self.sources:
            raise ConfigError(f"SynthConfig.sources: expected {{name: weight}} with names from {text_sources.SOURCES}, "
                              f"got {self.sources!r}")
        for name, weight in self.sources.items():
            if name not in text_sources.SOURCES:
                raise ConfigError(f"SynthConfig.sources: unknown text source {name!r}; the sources are "
                                  f"{', '.join(text_sources.SOURCES)}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
                raise ConfigError(f"SynthConfig.sources: the weight of {name} must be a number >= 0, got {weight!r}")
        if not sum(self.sources.values()) > 0:
            raise ConfigError(f"SynthConfig.sources: at least one weight must be above 0, got {self.sources}")
        if not 0 <= self.eval_voice_share <= 1:
            raise ConfigError(f"SynthConfig.eval_voice_share: must be in [0, 1], got {self.eval_voice_share}")
        if self.flite_share is not None and not 0 <= self.flite_share <= 1:
            raise ConfigError(f"SynthConfig.flite_share: must be in [0, 1] or null, got {self.flite_share}")
        if not isinstance(self.augment_splits, list) or any(x not in ("train", "valid", "test") for x in self.augment_splits):
            raise ConfigError(f"SynthConfig.augment_splits: expected a list of train/valid/test, got {self.augment_splits!r}")
        for v in self.eval_voices:
            if not match_voices(v, self.voices):
                raise ConfigError(f"SynthConfig.eval_voices: {v!r} is none of the voices {self.voices}")
        held = {x for v in self.eval_voices for x in match_voices(v, self.voices)}
        if held and held >= set(self.voices):
            raise ConfigError("SynthConfig.eval_voices: every voice is held out; none is left for training")
        if held and self.test_frac <= 0:
            raise ConfigError("SynthConfig.eval_voices: held-out voices need a test split (test_frac > 0)")
        if not (0 <= self.valid_frac < 1 and 0 <= self.test_frac < 1 and self.valid_frac + self.test_frac < 1):
            raise ConfigError(f"SynthConfig: valid_frac and test_frac must be in [0, 1) and sum below 1, "
                              f"got {self.valid_frac} and {self.test_frac}")  # fmt: skip
        for name in ("speed_prob", "reverb_prob", "noise_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"SynthConfig.{name}: a probability in [0, 1], got {getattr(self, name)}")
        limits = {"espeak_rate": (80, 500), "espeak_pitch": (0, 99), "flite_stretch": (0.2, 5), "flite_pitch": (0.2, 5),
                  "speed_range": (0.5, 2.0), "reverb_range": (0, 100), "noise_snr": (-10, 80)}  # fmt: skip
        for name, (lo, hi) in limits.items():
            r = getattr(self, name)
            ok = isinstance(r, list) and len(r) == 2 and all(isinstance(x, (int, float)) for x in r)
            if not ok or not lo <= r[0] <= r[1] <= hi:
                raise ConfigError(f"SynthConfig.{name}: expected [low, high] within [{lo}, {hi}], got {r!r}")
        if self.sample_rate < 8000:
            raise ConfigError(f"SynthConfig.sample_rate: must be at least 8000, got {self.sample_rate}")
        if not 0 < self.peak <= 1:
            raise ConfigError(f"SynthConfig.peak: must be in (0, 1], got {self.peak}")
        if self.jobs < 1:
            raise ConfigError(f"SynthConfig.jobs: must be at least 1, got {self.jobs}")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip's audio and transcript."""

    index: int
    text: str
    source: str
    split: str
    engine: str
    voice: str
    rate: float
    pitch: float
    text_source: str = "fortunes"
    held_out_voice: bool = False
    augment: tuple[tuple[str, float], ...] = ()  # (name, value) in AUGMENTS order: speed factor, reverberance, SNR

    def key(self, cfg: SynthConfig) -> str:
        shape = [self.text, self.engine, self.voice, self.rate, self.pitch, cfg.sample_rate, cfg.peak, cfg.trim_silence]
        if self.augment:  # only then: clips without augmentation keep the names they always had
            shape.append([list(a) for a in self.augment])
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:8]

    def clip_id(self, cfg: SynthConfig) -> str:
        return f"{self.index:06d}-{self.key(cfg)}"


def _between(lo: float, hi: float, u: float) -> float:
    return lo + (hi - lo) * u


def load_sentences(cfg: SynthConfig) -> list[str]:
    """Every sentence :func:`load_texts` finds, source after source."""
    return [t for texts in load_texts(cfg).values() for t in texts]


def load_texts(cfg: SynthConfig) -> dict[str, list[str]]:
    """Sentences by text source: ``{"text": lines}`` with ``cfg.text``; else each source of ``cfg.sources``
    with a weight above 0 (one that is not installed is left out with a warning and the others keep their
    weights); else, when none is installed, ``{"embedded": the small fallback list}``."""
    if cfg.text is not None:
        return {"text": text_sources.text_file_lines(cfg.text)}
    names = [k for k, w in cfg.sources.items() if w > 0]
    found = {k: v for k, v in text_sources.source_sentences(names).items() if v}
    for name in names:
        if name not in found:
            where = text_sources.FORTUNES_DIR if name == "fortunes" else "its files"
            _warn(f"text source {name}: nothing found in {where} (apt-get install "
                  f"{text_sources.SOURCE_PACKAGES[name]}); leaving it out")  # fmt: skip
    if not found:
        _warn("no text source is installed; using the small embedded sentence list")
        found = {"embedded": text_sources.embedded_sentences()}
    return found


def _pick(weights: list[tuple[str, float]], u: float) -> str:
    """The name whose cumulative-weight interval holds ``u`` in [0, 1)."""
    total, acc = sum(w for _, w in weights), 0.0
    for name, w in weights:
        acc += w / total
        if u < acc:
            return name
    return weights[-1][0]


def _choose_voices(cfg: SynthConfig, i: int, split: str, held: list[str], train_voices: list[str]) -> tuple[str, bool]:
    """Clip ``i``'s voice and whether it is a held-out one."""
    use_held = bool(held) and split == "test" and hash_unit(cfg.seed, i, "eval-voice") < cfg.eval_voice_share
    voices = held if use_held else train_voices
    if cfg.text is not None:  # --text: cycle through the voices in order
        return voices[i % len(voices)], use_held
    if cfg.flite_share is not None:
        by_engine = [[v for v in voices if v.startswith("flite:")], [v for v in voices if not v.startswith("flite:")]]
        if all(by_engine):
            voices = by_engine[0] if hash_unit(cfg.seed, i, "engine") < cfg.flite_share else by_engine[1]
    return voices[int(hash_unit(cfg.seed, i, "voice") * len(voices)) % len(voices)], use_held


def _augmentation(cfg: SynthConfig, i: int, split: str) -> tuple[tuple[str, float], ...]:
    """Clip ``i``'s augmentations, each drawn from the seed with its probability, in AUGMENTS order."""
    if split not in cfg.augment_splits:
        return ()
    out = []
    for name, prob, (lo, hi), digits in (("speed", cfg.speed_prob, cfg.speed_range, 3), ("reverb", cfg.reverb_prob, cfg.reverb_range, 0),
                                         ("noise", cfg.noise_prob, cfg.noise_snr, 1)):  # fmt: skip
        if prob > 0 and hash_unit(cfg.seed, i, name) < prob:
            out.append((name, round(_between(lo, hi, hash_unit(cfg.seed, i, name, "value")), digits)))
    return tuple(out)


def plan_clips(cfg: SynthConfig, sentences: list[str] | dict[str, list[str]]) -> list[ClipSpec]:
    """Choose text source, sentence, split, voice, rate, pitch and augmentation for each of ``cfg.n`` clips,
    from the seed alone. ``sentences``: by source (as :func:`load_texts` gives), or one list."""
    n = cfg.n or DEFAULT_N
    if not isinstance(sentences, dict):
        sentences = {"text" if cfg.text is not None else "fortunes": sentences}
    if cfg.text is not None:
        ((name, lines),) = sentences.items()
        order = [(name, t) for t in lines[:n]]
    else:
        weights = [(k, float(cfg.sources.get(k, 1.0 if len(sentences) == 1 else 0.0))) for k in sorted(sentences)]
        weights = [(k, w) for k, w in weights if w > 0 and sentences[k]]
        if not weights:
            raise ConfigError(f"no sentences to speak from the sources {sorted(sentences)} with weights {cfg.sources}")
        pools = {k: sorted(sentences[k], key=lambda s: (hash_unit(cfg.seed, "order", text_sources.sentence_key(s)), s))
                 for k, _ in weights}  # fmt: skip
        drawn = dict.fromkeys(pools, 0)
        order = []
        for i in range(n):
            name = weights[0][0] if len(weights) == 1 else _pick(weights, hash_unit(cfg.seed, i, "text-source"))
            order.append((name, pools[name][drawn[name] % len(pools[name])]))
            drawn[name] += 1
    held = [v for v in cfg.voices if any(v in match_voices(h, cfg.voices) for h in cfg.eval_voices)]
    train_voices = [v for v in cfg.voices if v not in held]
    specs = []
    for i, (text_source, text) in enumerate(order):
        source = text_sources.sentence_id(text)
        split = split_for_source(source, cfg.valid_frac, cfg.test_frac, seed=0)
        voice, held_out = _choose_voices(cfg, i, split, held, train_voices)
        engine, _, name = voice.partition(":")
        u_rate, u_pitch = hash_unit(cfg.seed, i, "rate"), hash_unit(cfg.seed, i, "pitch")
        if engine == "espeak-ng":
            rate = float(round(_between(*cfg.espeak_rate, u_rate)))
            pitch = float(round(_between(*cfg.espeak_pitch, u_pitch)))
        else:
            rate = round(_between(*cfg.flite_stretch, u_rate), 2)
            pitch = float(round(FLITE_BASE_F0[name] * _between(*cfg.flite_pitch, u_pitch)))
        specs.append(ClipSpec(i, text, source, split, engine, name, rate, pitch, text_source, held_out,
                              _augmentation(cfg, i, split)))
    return specs


def _run_engine(spec: ClipSpec, folder: Path) -> tuple[np.ndarray, int]:
    """Speak ``spec.text`` with its engine into ``folder``; return mono float32 and its rate."""
    import soundfile as sf

    out = folder / "raw.wav"
    if spec.engine == "espeak-ng":
        text = spec.text.replace("[[", "[").replace("]]", "]")  # [[...]] would be read as phonemes
        cmd = ["espeak-ng", "-v", spec.voice, "-s", str(int(spec.rate)), "-p", str(int(spec.pitch)),
               "-w", str(out), "--stdin"]  # fmt: skip
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=False)
    else:
        (folder / "text.txt").write_text(spec.text + "\n", encoding="utf-8")
        cmd = ["flite", "-voice", spec.voice, "--setf", f"duration_stretch={spec.rate}",
               "--setf", f"int_f0_target_mean={spec.pitch:g}", "-f", str(folder / "text.txt"), "-o", str(out)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size <= 44:
        err = proc.stderr.decode(errors="replace").strip()[:200]
        raise AudioError(f"{spec.engine} voice {spec.voice} failed on {spec.text!r} (exit {proc.returncode}) {err}")
    data, sr = sf.read(str(out), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(sr)


def _sox_effects(wav: np.ndarray, sr: int, effects: list[str], folder: Path) -> np.ndarray:
    """Run ``wav`` through ``sox`` with ``effects`` (the rate kept); mono float32 back."""
    import soundfile as sf

    if shutil.which("sox") is None:
        raise ToolMissingError("speed and reverb augmentation need sox (apt-get install sox)")
    src, dst = folder / "aug-in.wav", folder / "aug-out.wav"
    sf.write(str(src), wav, sr, subtype="FLOAT")
    proc = subprocess.run(["sox", str(src), str(dst), *effects, "rate", str(sr)], capture_output=True, check=False)
    if proc.returncode != 0 or not dst.is_file():
        raise AudioError(f"sox {' '.join(effects)} failed (exit {proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()[:200]}")  # fmt: skip
    data, _ = sf.read(str(dst), dtype="float32", always_2d=True)
    return data.mean(axis=1)


def _add_noise(wav: np.ndarray, snr_db: float, seed: str, peak: float) -> np.ndarray:
    """White noise at ``snr_db`` below the clip's speech power (measured where the clip is above -46 dB of
    its peak), seeded by ``seed``; peak-normalised again."""
    rng = np.random.default_rng(int(seed, 16))
    loud = np.abs(wav) > 0.005 * float(np.max(np.abs(wav)))
    power = float(np.mean(wav[loud] ** 2)) if loud.any() else float(np.mean(wav**2))
    noisy = wav + rng.standard_normal(len(wav)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return (noisy * (peak / float(np.max(np.abs(noisy))))).astype(np.float32)


def _finish(wav: np.ndarray, sr: int, cfg: SynthConfig) -> np.ndarray:
    """Resample, cut silence below -46 dB of the peak, pad 0.1 s of silence each side, peak-normalise."""
    wav = resample(wav, sr, cfg.sample_rate)
    if is_silent(wav):
        return wav
    if cfg.trim_silence:
        loud = np.flatnonzero(np.abs(wav) > 0.005 * float(np.max(np.abs(wav))))
        wav = np.pad(wav[loud[0] : loud[-1] + 1], int(0.1 * cfg.sample_rate))
    return (wav * (cfg.peak / float(np.max(np.abs(wav))))).astype(np.float32)


def _existing_duration(wav_path: Path, txt_path: Path, spec: ClipSpec, cfg: SynthConfig) -> float | None:
    """The duration of an already rendered clip when its files are complete and match, else None."""
    try:
        if txt_path.read_text(encoding="utf-8") != spec.text + "\n":
            return None
        info = audio_info(wav_path)
    except (OSError, AuralmError):
        return None
    ok = info.sample_rate == cfg.sample_rate and info.channels == 1 and info.frames > 0
    return info.duration if ok else None


def render_clip(spec: ClipSpec, cfg: SynthConfig, wavs: Path) -> tuple[float, bool]:
    """Render one clip (unless valid files exist); return (duration in seconds, whether it was rendered)."""
    stem = spec.clip_id(cfg)
    wav_path, txt_path = wavs / f"{stem}.wav", wavs / f"{stem}.txt"
    duration = _existing_duration(wav_path, txt_path, spec, cfg)
    if duration is not None:
        return duration, False
    augment = dict(spec.augment)
    with tempfile.TemporaryDirectory(prefix="auralm-synth-") as tmp:
        raw, sr = _run_engine(spec, Path(tmp))
        effects = (["speed", f"{augment['speed']:g}"] if "speed" in augment else []) + (
            ["pad", "0", "0.5", "reverb", f"{augment['reverb']:g}"] if "reverb" in augment else [])  # fmt: skip
        if effects:
            raw = _sox_effects(raw, sr, effects, Path(tmp))
    wav = _finish(raw, sr, cfg)
    if is_silent(wav):
        raise AudioError(f"{spec.engine} voice {spec.voice} rendered silence for {spec.text!r}")
    if "noise" in augment:
        wav = _add_noise(wav, augment["noise"], spec.key(cfg) + f"{spec.index:x}", cfg.peak)
    write_wav(wav_path, wav, cfg.sample_rate)
    atomic_write_text(txt_path, spec.text + "\n")
    return len(wav) / cfg.sample_rate, True


def synth_speech(cfg: SynthConfig) -> Path:
    """Render the corpus described by ``cfg``; return the path of ``manifest.jsonl``."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    voices = available_voices(cfg.voices)
    held = [v for v in cfg.eval_voices if match_voices(v, voices)]
    if cfg.eval_voices and not held:
        raise ToolMissingError(f"none of the eval voices {cfg.eval_voices} is installed")
    cfg = cfg.replace(voices=voices, eval_voices=held)  # validates again
    sentences = load_texts(cfg)
    if cfg.text is None and "embedded" not in sentences:  # record the sources actually used
        cfg = cfg.replace(sources={k: w for k, w in cfg.sources.items() if k in sentences})
    n_lines = len(sentences.get("text", []))
    cfg = cfg.replace(n=min(cfg.n or n_lines, n_lines) if cfg.text else cfg.n or DEFAULT_N)
    specs = plan_clips(cfg, sentences)
    wavs = out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)

    started = time.perf_counter()
    durations: dict[int, float] = {}
    rendered = 0
    with futures.ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        jobs = {pool.submit(render_clip, s, cfg, wavs): s.index for s in specs}
        try:
            for job in progress(futures.as_completed(jobs), desc="synth speech", total=len(jobs)):
                durations[jobs[job]], new = job.result()
                rendered += new
        except BaseException:
            for job in jobs:
                job.cancel()
            raise
    elapsed = time.perf_counter() - started

    rows = [
        Row(id=s.clip_id(cfg), audio=f"wavs/{s.clip_id(cfg)}.wav", text=s.text, duration=round(durations[s.index], 4),
            sample_rate=cfg.sample_rate, split=s.split, source=s.source,
            meta=_meta(s, bool(cfg.eval_voices)))
        for s in specs
    ]  # fmt: skip
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rows)
    keep = {f"{r.id}.{ext}" for r in rows for ext in ("wav", "txt")}
    stale = [p for p in wavs.iterdir() if (CLIP_NAME.match(p.name) and p.name not in keep) or p.name.endswith(".tmp")]
    for p in stale:
        p.unlink()
    counts = {k: sum(r.split == k for r in rows) for k in ("train", "valid", "test")}
    by_source = {k: sum(s.text_source == k for s in specs) for k in dict.fromkeys(s.text_source for s in specs)}
    speed = f", {rendered / elapsed:.1f} clips/s" if rendered and elapsed > 0 else ""
    print(f"auralm synth speech: {len(rows)} clips ({rendered} rendered, {len(rows) - rendered} reused{speed}), "
          f"{sum(durations.values()) / 60:.1f} min of audio; train/valid/test = "
          f"{counts['train']}/{counts['valid']}/{counts['test']}; text sources {by_source}"
          f"{f'; removed {len(stale)} stale files' if stale else ''}; wrote {manifest}", file=sys.stderr)  # fmt: skip
    return manifest


def _meta(s: ClipSpec, any_held: bool) -> dict:
    meta = {"engine": s.engine, "voice": s.voice, "rate": s.rate, "pitch": s.pitch, "text_source": s.text_source}
    if any_held:
        meta["held_out_voice"] = s.held_out_voice
    if s.augment:
        meta["augment"] = dict(s.augment)
    return meta


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="auralm synth speech", description="Render a synthetic speech corpus "
                                "with espeak-ng and flite (see docs/data.md).",
                                epilog="Trailing key=value pairs override any SynthConfig field, e.g. "
                                       "espeak_rate=[120,200] trim_silence=false.")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, help=f"number of clips (default {DEFAULT_N}; with --text: all lines)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--text", help="speak these non-empty lines in order instead of fortunes")
    p.add_argument("--sources", help="comma-separated text sources with optional weights, e.g. "
                   "fortunes:1,wordnet-examples:2,gcide-quotes:1 (default: fortunes)")
    p.add_argument("--voices", help="comma-separated engine:voice list, or a set: default (12 espeak-ng + 5 flite), "
                   "wide (160 espeak-ng + 5 flite)")
    p.add_argument("--eval-voices", help="comma-separated voices (or shell patterns) used only for the test split")
    p.add_argument("--valid-frac", type=float, help="fraction of sentences for valid (default 0.1)")
    p.add_argument("--test-frac", type=float, help="fraction of sentences for test (default 0.1)")
    p.add_argument("--sample-rate", type=int, help="output rate in Hz (default 16000)")
    p.add_argument("--jobs", type=int, help="clips rendered at once (default 2)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="SynthConfig overrides")
    return p


def cli(argv: list[str]) -> int:
    """Entry point of ``auralm synth speech``."""
    args = build_parser().parse_args(argv)
    data = {k: v for k, v in vars(args).items() if v is not None and k != "overrides"}
    for key in ("voices", "eval_voices"):
        if key in data:
            data[key] = [qualify_voice(x) for v in comma_list(data[key]) for x in (VOICE_SETS.get(v, [v]) if key == "voices" else [v])]
    if "sources" in data:
        data["sources"] = text_sources.parse_weights(data["sources"])
    cfg = apply_overrides(SynthConfig.from_dict(data), args.overrides)
    synth_speech(cfg)
    return 0
