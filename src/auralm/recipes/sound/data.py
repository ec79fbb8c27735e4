"""The embedded sound data: spoken digit words and synthetic sound events, as labelled manifests.

:func:`make_digit_corpus` renders "zero" .. "nine" with :func:`auralm.data.synth.synth_speech`
(espeak-ng and flite; ``--text`` lines cycle through the voices, rate and pitch vary per clip). It
runs the synthesiser twice: training voices into ``OUT/train-voices`` and the held-out
``eval_voices`` into ``OUT/eval-voices``, because ``synth_speech`` splits by sentence and here every
sentence is one of ten words (its split would take whole classes). ``OUT/manifest.jsonl`` lists
every clip with ``label`` = the word: held-out voices are the ``test`` split, the training voices
are ``train`` or ``valid`` by a hash of the clip id.

:func:`make_sound_events` writes numpy-synthesised events (``beep``, ``chirp``, ``noise-burst``,
``click-train``) with random timing, pitch and level, for class-conditioned generation beyond speech.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from auralm.core.errors import ConfigError
from auralm.data.audio import write_wav
from auralm.data.manifest import Row, read_manifest, relative_audio, split_for_source, write_manifest
from auralm.data.synth import DEFAULT_VOICES, SynthConfig, synth_speech

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_EVAL_VOICES = ("espeak-ng:en-us+m3", "espeak-ng:en-gb-x-rp+f1", "flite:awb")


def _synth_words(out: Path, words: Sequence[str], n_per_class: int, voices: list[str], seed: int) -> list[Row]:
    """Render ``n_per_class`` clips of each word (word-major order, so each word cycles through the voices)."""
    lines = [w for w in words for _ in range(n_per_class)]
    with tempfile.TemporaryDirectory(prefix="auralm-digits-") as tmp:
        text = Path(tmp) / "words.txt"
        text.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cfg = SynthConfig(out=str(out), text=str(text), voices=voices, seed=seed, valid_frac=0.0, test_frac=0.0,
                          espeak_rate=[120, 220], espeak_pitch=[20, 80], flite_stretch=[0.8, 1.3], flite_pitch=[0.8, 1.25])  # fmt: skip
        manifest = synth_speech(cfg)
    return read_manifest(manifest)


def make_digit_corpus(out: str | Path, n_per_class: int = 40, seed: int = 0,
                      eval_voices: Sequence[str] = DEFAULT_EVAL_VOICES, n_test_per_class: int = 9,
                      valid_frac: float = 0.1, voices: Sequence[str] = tuple(DEFAULT_VOICES)) -> Path:  # fmt: skip
    """Render the spoken-digit corpus into ``out``; return ``out/manifest.jsonl`` (rows have ``label``)."""
    out = Path(out)
    held = [v for v in voices if v in eval_voices or v.partition(":")[2] in eval_voices]
    train_voices = [v for v in voices if v not in held]
    if n_per_class < 1 or n_test_per_class < 0:
        raise ConfigError(f"need n_per_class >= 1 and n_test_per_class >= 0, got {n_per_class}, {n_test_per_class}")
    if not train_voices:
        raise ConfigError("every voice is held out for evaluation; none is left for training")
    if eval_voices and not held:
        raise ConfigError(f"none of the eval voices {list(eval_voices)} is among the voices {list(voices)}")
    rows = []
    for row in _synth_words(out / "train-voices", DIGITS, n_per_class, train_voices, seed):
        split = split_for_source(row.id, valid_frac, 0.0, seed=seed)
        rows.append(_relabel(row, out, split, "train-voices"))
    if held and n_test_per_class:
        for row in _synth_words(out / "eval-voices", DIGITS, n_test_per_class, held, seed + 1):
            rows.append(_relabel(row, out, "test", "eval-voices"))
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rows)
    return manifest


def _relabel(row: Row, out: Path, split: str, sub: str) -> Row:
    audio = relative_audio(row.audio_path(), out)
    return Row(id=f"{sub}-{row.id}", audio=audio, text=row.text, label=row.text.strip().lower() if row.text else None,
               duration=row.duration, sample_rate=row.sample_rate, split=split, source=f"{sub}-{row.id}", meta=row.meta)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# synthetic sound events


def _envelope(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = max(1, int(attack * sr)), max(1, int(release * sr))
    env[:a] = np.linspace(0, 1, a)[: n]
    env[-r:] *= np.linspace(1, 0, r)[-n:]
    return env


def _beep(rng: np.random.Generator, sr: int) -> np.ndarray:
    """One to three tone bursts at 400-2000 Hz."""
    freq, n_beeps = rng.uniform(400, 2000), int(rng.integers(1, 4))
    beep_len, gap = rng.uniform(0.08, 0.2), rng.uniform(0.05, 0.12)
    t = np.arange(int(beep_len * sr)) / sr
    tone = np.sin(2 * np.pi * freq * t) * _envelope(len(t), sr, 0.005, 0.01)
    parts = []
    for _ in range(n_beeps):
        parts += [tone, np.zeros(int(gap * sr))]
    return np.concatenate(parts)


def _chirp(rng: np.random.Generator, sr: int) -> np.ndarray:
    """A exponential sine sweep up or down between 200 Hz and 4 kHz."""
    f0, f1 = rng.uniform(200, 600), rng.uniform(2000, 4000)
    if rng.random() < 0.5:
        f0, f1 = f1, f0
    dur = rng.uniform(0.3, 0.7)
    t = np.arange(int(dur * sr)) / sr
    k = np.log(f1 / f0) / dur
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return np.sin(phase) * _envelope(len(t), sr, 0.01, 0.03)


def _noise_burst(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Band-limited noise with an exponential decay."""
    dur = rng.uniform(0.2, 0.5)
    n = int(dur * sr)
    noise = rng.standard_normal(n)
    width = int(rng.integers(1, 8))  # moving average: darker noise for wider windows
    noise = np.convolve(noise, np.ones(width) / width, mode="same")
    return noise * np.exp(-np.arange(n) / (sr * rng.uniform(0.05, 0.2)))


def _click_train(rng: np.random.Generator, sr: int) -> np.ndarray:
    """Short clicks at 8-30 per second for 0.3-0.7 s."""
    dur, rate = rng.uniform(0.3, 0.7), rng.uniform(8, 30)
    out = np.zeros(int(dur * sr))
    click = np.hanning(int(0.003 * sr)) * rng.choice([-1, 1])
    for start in (np.arange(0, dur, 1 / rate) * sr).astype(int):
        seg = out[start : start + len(click)]
        seg += click[: len(seg)]
    return out


EVENTS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "beep": _beep, "chirp": _chirp, "noise-burst": _noise_burst, "click-train": _click_train,
}  # fmt: skip


def synth_event(label: str, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """One clip of event class ``label``: 0.05-0.2 s of silence, the event, silence; peak 0.3-0.9."""
    if label not in EVENTS:
        raise ConfigError(f"unknown sound event {label!r}; known: {', '.join(EVENTS)}")
    core = EVENTS[label](rng, sample_rate)
    core = core / max(1e-9, float(np.max(np.abs(core)))) * rng.uniform(0.3, 0.9)
    pad = [np.zeros(int(rng.uniform(0.05, 0.2) * sample_rate)) for _ in range(2)]
    return np.concatenate([pad[0], core, pad[1]]).astype(np.float32)


def make_sound_events(out: str | Path, n_per_class: int = 40, seed: int = 0, sample_rate: int = 16000,
                      classes: Sequence[str] = tuple(EVENTS), valid_frac: float = 0.1, test_frac: float = 0.1) -> Path:  # fmt: skip
    """Write ``n_per_class`` clips of each event class into ``out/wavs``; return ``out/manifest.jsonl``."""
    out = Path(out)
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}")
    rows = []
    for c, label in enumerate(classes):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, c, i])
            wav = synth_event(label, rng, sample_rate)
            clip_id = f"{label}-{i:04d}"
            path = out / "wavs" / f"{clip_id}.wav"
            write_wav(path, wav, sample_rate)
            rows.append(Row(id=clip_id, audio=relative_audio(path, out), label=label, duration=round(len(wav) / sample_rate, 4),
                            sample_rate=sample_rate, split=split_for_source(clip_id, valid_frac, test_frac, seed), source=clip_id))  # fmt: skip
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rows)
    return manifest


def load_clips(manifest: str | Path, split: str | None = None, sample_rate: int = 16000,
               limit: int | None = None) -> tuple[list[np.ndarray], list[str | None], list[str]]:  # fmt: skip
    """(waveforms, labels, ids) of a manifest's rows in ``split`` (all rows when None), resampled."""
    from auralm.data.audio import load_audio

    rows = [r for r in read_manifest(manifest) if split is None or r.split == split]
    if not rows:
        raise ConfigError(f"{manifest} has no rows in split {split!r}")
    rows = rows[:limit] if limit else rows
    wavs = [load_audio(r.audio_path(), sample_rate, start=r.start, end=r.end)[0] for r in rows]
    return wavs, [r.label for r in rows], [r.id for r in rows]
