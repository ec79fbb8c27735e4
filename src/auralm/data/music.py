"""``auralm synth music``: short music clips rendered in numpy from parameters, with captions, playlists, tags
and metadata (the embedded data of S2 caption).

A **track** is drawn from parameters: instrument (organ: additive, bell: FM, guitar: Karplus-Strong plucked
string, chiptune: square wave, pad: filtered sawtooth), tempo (BPM), key and mode (major / minor scale),
register (low / middle / high octave), loudness (soft / loud) and an optional drum pattern (kick + hi-hat).
A melody of eighth notes walks the scale over a held root; every parameter changes what is heard. Each
track gets ``captions`` references (five by default, as Clotho has) written from its parameters with
varied wording; the attribute words (instrument, tempo word, mode) are always named, so a generated
caption can be checked against the clip (:func:`caption_attributes`).

A **playlist** holds 3 to 10 tracks that share a theme: a mood (happy, calm, sad, tense: from mode and
tempo), a tempo range (slow, moderate, fast) or an instrument family (keys, bells, strings, electronic).
It has tags from the fixed :data:`TAG_VOCAB` (the theme and the attributes most of its tracks share; some
playlists have none), a metadata vector (the tempo histogram of its tracks, :data:`TEMPO_BINS` bins, as
counts normalised to sum 1) and several reference captions. Tracks are drawn per split, so a test
playlist holds only test tracks: nothing of a held-out playlist is heard in training.

Layout of ``--out DIR``::

    DIR/audio/<track>.wav      16 kHz mono PCM
    DIR/tracks.jsonl           one track a line: id, audio, split, params, captions
    DIR/playlists.jsonl        one playlist a line: id, split, theme, tracks, tags, metadata, captions
    DIR/manifest.jsonl         the tracks as manifest rows (for `auralm embed`), text = first caption
    DIR/vocab.json             tag vocabulary, metadata names
    DIR/config.yaml            the MusicConfig that made it

Everything is a pure function of ``seed`` and the counts; a rerun rewrites only missing audio files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.config import Config, apply_overrides, help_field, save_config
from auralm.core.errors import ConfigError, ManifestError
from auralm.core.io import atomic_write_json, atomic_write_text
from auralm.core.progress import progress

INSTRUMENTS = ("organ", "bell", "guitar", "chiptune", "pad")
FAMILY = {"organ": "keys", "bell": "bells", "guitar": "strings", "chiptune": "electronic", "pad": "electronic"}
FAMILIES = ("keys", "bells", "strings", "electronic")
MODES = ("major", "minor")
TEMPO_WORDS = ("slow", "moderate", "fast")
TEMPO_RANGE = {"slow": (60, 88), "moderate": (92, 124), "fast": (128, 176)}
REGISTERS = ("low", "middle", "high")
LOUDNESS = ("soft", "loud")
MOODS = ("happy", "calm", "sad", "tense")
KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
THEME_KINDS = ("mood", "tempo", "family")
THEME_VALUES = {"mood": MOODS, "tempo": TEMPO_WORDS, "family": FAMILIES}
THEME_KEYS = {"mood": "mood", "tempo": "tempo_word", "family": "family"}  # the track parameter a theme fixes
TEMPO_BINS = 10  # metadata: tempo histogram over 60..180 BPM
TAG_VOCAB = (*MOODS, *TEMPO_WORDS, *INSTRUMENTS, *FAMILIES, *MODES, "drums", "no drums", *LOUDNESS)
METADATA_NAMES = tuple(f"tempo_{60 + 12 * i}_{72 + 12 * i}" for i in range(TEMPO_BINS))
# words a caption may use for an attribute (the first is the canonical one)
INSTRUMENT_WORDS = {"organ": ("organ",), "bell": ("bell", "bells"), "guitar": ("guitar",),
                    "chiptune": ("chiptune",), "pad": ("pad", "synth pad")}


def mood_of(mode: str, tempo_word: str) -> str:
    """The mood a track's mode and tempo give it."""
    if mode == "major":
        return "calm" if tempo_word == "slow" else "happy"
    return "sad" if tempo_word == "slow" else "tense"


def tempo_word(bpm: float) -> str:
    return "slow" if bpm < 90 else "moderate" if bpm < 126 else "fast"


@dataclasses.dataclass
class MusicConfig(Config):
    """Settings of ``auralm synth music``."""

    out: str = help_field("", "output folder (audio/, tracks.jsonl, playlists.jsonl, manifest.jsonl, vocab.json)")
    playlists: list = help_field([240, 30, 40], "playlists per split: train, valid, test")
    tracks: list = help_field([480, 80, 100], "tracks rendered per split: train, valid, test (playlists draw from "
                                              "their split's tracks)")
    min_tracks: int = help_field(3, "fewest tracks in a playlist")
    max_tracks: int = help_field(10, "most tracks in a playlist")
    captions: int = help_field(5, "reference captions per track and per playlist")
    no_tags_frac: float = help_field(0.1, "share of playlists given no tags (the tags branch is then empty)")
    seconds: float = help_field(4.0, "length of a track in seconds")
    sample_rate: int = help_field(16000, "sample rate of the clips (Hz)")
    seed: int = help_field(0, "seed of every choice")

    def validate(self) -> None:
        if not isinstance(self.out, str) or not self.out.strip():
            raise ConfigError("MusicConfig.out: an output folder is required (--out DIR)")
        for name in ("playlists", "tracks"):
            v = getattr(self, name)
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) and x >= 0 for x in v)):
                raise ConfigError(f"MusicConfig.{name}: expected [train, valid, test] counts >= 0, got {v!r}")
        for split, n_pl, n_tr in zip(("train", "valid", "test"), self.playlists, self.tracks):
            if n_pl and n_tr < self.max_tracks:
                raise ConfigError(f"MusicConfig: split {split} has {n_pl} playlists but only {n_tr} tracks; "
                                  f"need at least max_tracks={self.max_tracks}")
        if not 1 <= self.min_tracks <= self.max_tracks:
            raise ConfigError(f"MusicConfig: need 1 <= min_tracks <= max_tracks, got {self.min_tracks}, {self.max_tracks}")
        if self.captions < 1:
            raise ConfigError(f"MusicConfig.captions must be >= 1, got {self.captions}")
        if not 0 <= self.no_tags_frac <= 1:
            raise ConfigError(f"MusicConfig.no_tags_frac must be in [0, 1], got {self.no_tags_frac}")
        if not 0.5 <= self.seconds <= 30 or self.sample_rate < 8000:
            raise ConfigError(f"MusicConfig: need 0.5 <= seconds <= 30 and sample_rate >= 8000, got "
                              f"{self.seconds}, {self.sample_rate}")


# -- tracks ---------------------------------------------------------------------------------------
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def draw_track(rng: np.random.Generator, constraint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Random track parameters; ``constraint`` fixes some (``instrument``, ``family``, ``tempo_word``, ``mood``)."""
    c = constraint or {}
    if "instrument" in c:
        instrument = c["instrument"]
    elif "family" in c:
        instrument = str(rng.choice([i for i in INSTRUMENTS if FAMILY[i] == c["family"]]))
    else:
        instrument = str(rng.choice(INSTRUMENTS))
    if "mood" in c:
        options = [(m, t) for m in MODES for t in TEMPO_WORDS if mood_of(m, t) == c["mood"]]
        mode, tw = options[int(rng.integers(len(options)))]
    else:
        mode = str(rng.choice(MODES))
        tw = c.get("tempo_word") or str(rng.choice(TEMPO_WORDS))
    lo, hi = TEMPO_RANGE[tw]
    bpm = int(rng.integers(lo, hi + 1))
    return {
        "instrument": instrument, "family": FAMILY[instrument], "tempo": bpm, "tempo_word": tempo_word(bpm),
        "key": str(rng.choice(KEYS)), "mode": mode, "register": str(rng.choice(REGISTERS)),
        "loudness": str(rng.choice(LOUDNESS)), "drums": bool(rng.random() < 0.5), "mood": mood_of(mode, tempo_word(bpm)),
        "melody_seed": int(rng.integers(2**31)),
    }


def _note(instrument: str, freq: float, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One note of ``n`` samples: the instrument's timbre and envelope."""
    t = np.arange(n) / sr
    if n < 32:  # the tail of a clip: too short to be a note
        return np.zeros(n)
    if instrument == "organ":  # additive drawbars, flat envelope with short ramps
        wav = sum(a * np.sin(2 * np.pi * freq * k * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2), (6, 0.1)))
        env = np.minimum(1.0, np.minimum(t / 0.01, (n / sr - t) / 0.02))
    elif instrument == "bell":  # FM: carrier 1, modulator 3.5, decaying index
        index = 4.0 * np.exp(-t * 3)
        wav = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * 3.5 * freq * t))
        env = np.exp(-t * 4)
    elif instrument == "guitar":  # Karplus-Strong plucked string
        period = max(2, int(round(sr / freq)))
        buf = rng.uniform(-1, 1, period)
        wav = np.empty(n)
        for i in range(n):
            wav[i] = buf[i % period]
            buf[i % period] = 0.5 * (buf[i % period] + buf[(i + 1) % period]) * 0.996
        env = np.ones(n)
    elif instrument == "chiptune":  # square wave with a little vibrato
        phase = 2 * np.pi * freq * t + 0.02 * np.sin(2 * np.pi * 6 * t) * freq / 10
        wav = 0.6 * np.sign(np.sin(phase))
        env = np.minimum(1.0, (n / sr - t) / 0.01) * (0.6 + 0.4 * np.exp(-t * 8))
    elif instrument == "pad":  # detuned sawtooths, low-passed, slow attack
        wav = sum(2 * ((f * t) % 1.0) - 1 for f in (freq * 0.997, freq, freq * 1.003)) / 3
        kernel = np.ones(12) / 12
        wav = np.convolve(wav, kernel, mode="same")
        env = np.minimum(1.0, np.minimum(t / 0.08, (n / sr - t) / 0.05))
    else:
        raise ConfigError(f"unknown instrument {instrument!r}; valid: {', '.join(INSTRUMENTS)}")
    return (wav * np.clip(env, 0, 1)).astype(np.float64)


def _drums(n: int, sr: int, beat: int, rng: np.random.Generator) -> np.ndarray:
    """Kick on every beat, hi-hat on every off-beat eighth."""
    out = np.zeros(n)
    kick_n, hat_n = int(0.12 * sr), int(0.04 * sr)
    t = np.arange(kick_n) / sr
    kick = np.sin(2 * np.pi * (50 + 90 * np.exp(-t * 30)) * t) * np.exp(-t * 25)
    hat = rng.uniform(-1, 1, hat_n) * np.exp(-np.arange(hat_n) / sr * 80)
    hat = np.diff(hat, prepend=0.0)  # a crude high-pass
    for start in range(0, n, beat):
        out[start : start + kick_n] += kick[: n - start]
        off = start + beat // 2
        if off < n:
            out[off : off + hat_n] += 0.4 * hat[: n - off]
    return out


SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
REGISTER_OCTAVE = {"low": 3, "middle": 4, "high": 5}


def render_track(params: dict[str, Any], seconds: float = 4.0, sr: int = 16000) -> np.ndarray:
    """The clip of ``params`` (float32 in [-1, 1]): eighth-note melody on the scale over a held root, + drums."""
    rng = _rng(params["melody_seed"])
    n = int(seconds * sr)
    beat = int(round(60.0 / params["tempo"] * sr))
    eighth = max(1, beat // 2)
    root_midi = 12 * (REGISTER_OCTAVE[params["register"]] + 1) + KEYS.index(params["key"])
    scale = SCALES[params["mode"]]
    wav = np.zeros(n)
    degree = 0
    for start in range(0, n, eighth):
        length = min(eighth, n - start)
        degree = int(np.clip(degree + rng.choice([-2, -1, 1, 2, 0, 4, -4]), -3, 9))
        octave, step = divmod(degree, 7)
        midi = root_midi + 12 * octave + scale[step]
        freq = 440.0 * 2 ** ((midi - 69) / 12)
        wav[start : start + length] += _note(params["instrument"], freq, length, sr, rng)
    # the root and the mode's third, held (so the mode is heard even when the melody is short)
    t = np.arange(n) / sr
    for semis, amp in ((0, 0.25), (scale[2], 0.18)):
        f = 440.0 * 2 ** ((root_midi - 12 + semis - 69) / 12)
        wav += amp * np.sin(2 * np.pi * f * t) * np.minimum(1.0, t / 0.05)
    wav /= max(1e-9, np.abs(wav).max())
    if params["drums"]:
        wav = 0.75 * wav + 0.5 * _drums(n, sr, beat, rng)
        wav /= max(1e-9, np.abs(wav).max())
    gain = 0.85 if params["loudness"] == "loud" else 0.25
    return (gain * wav).astype(np.float32)


# -- captions -------------------------------------------------------------------------------------
_TRACK_TEMPLATES = (
    "A {tempo} {instrument} melody in a {mode} key{drums}.",
    "{Tempo} {mode} tune played on {a_instrument}{drums}.",
    "This is a {loud} {tempo} piece for {instrument} in {mode}{drums}.",
    "{A_instrument} plays a {tempo} {mode} melody in a {register} register{drums}.",
    "A {register} {instrument} line, {tempo} and in {mode}{drums}.",
    "{Loud} {instrument} music at a {tempo} tempo, {mode} key{drums}.",
    "You hear {a_instrument} playing something {tempo} in a {mode} key{drums}.",
)
_DRUM_PHRASES = ((" with drums", " and a drum beat", " over a steady beat", " with a kick and hi-hat"),
                 ("", " without drums", " with no percussion", ""))


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def track_captions(params: dict[str, Any], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` different references for a track (instrument, tempo word and mode always named)."""
    order = rng.permutation(len(_TRACK_TEMPLATES))
    out = []
    for k in range(count):
        template = _TRACK_TEMPLATES[order[k % len(order)]]
        drums = _DRUM_PHRASES[0 if params["drums"] else 1][int(rng.integers(4))]
        words = {"tempo": params["tempo_word"], "instrument": params["instrument"], "mode": params["mode"],
                 "register": params["register"], "loud": params["loudness"], "drums": drums,
                 "a_instrument": _a(params["instrument"])}
        words.update(Tempo=words["tempo"].capitalize(), Loud=words["loud"].capitalize(),
                     A_instrument=words["a_instrument"].capitalize())
        out.append(template.format(**words))
    return out


def caption_attributes(text: str) -> dict[str, str | None]:
    """The instrument, tempo word and mode a caption names (None where it names none or several)."""
    words = " " + " ".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split()) + " "

    def one(options: dict[str, tuple[str, ...]]) -> str | None:
        found = {k for k, ws in options.items() if any(f" {w} " in words for w in ws)}
        return found.pop() if len(found) == 1 else None

    return {"instrument": one(INSTRUMENT_WORDS), "tempo_word": one({t: (t,) for t in TEMPO_WORDS}),
            "mode": one({m: (m,) for m in MODES})}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


_PLAYLIST_OPENERS = ("A {mood} playlist", "A {mood} collection", "{Mood} music", "A set of {mood} tracks",
                     "A {mood} mix")


def _majority(values: list[Any], share: float = 0.6) -> Any:
    vals, counts = np.unique(np.array(values, dtype=object).astype(str), return_counts=True)
    best = int(counts.argmax())
    return vals[best] if counts[best] / len(values) >= share else None


def playlist_summary(tracks: list[dict[str, Any]]) -> dict[str, Any]:
    """What most of a playlist's tracks share (None where no value holds 60 % of them)."""
    return {k: _majority([t[k] for t in tracks]) for k in ("mood", "tempo_word", "family", "mode", "instrument", "drums",
                                                          "loudness")}


def playlist_captions(theme: dict[str, str], tracks: list[dict[str, Any]], count: int,
                      rng: np.random.Generator) -> list[str]:
    """``count`` references for a playlist: its theme, then what most tracks share, in varied wording."""
    s = playlist_summary(tracks)
    instruments = sorted({t["instrument"] for t in tracks}, key=INSTRUMENTS.index)
    out = []
    for k in range(count):
        mood = s["mood"] or "varied"
        if theme["kind"] == "mood":
            mood = theme["value"]
        opener = _PLAYLIST_OPENERS[(k + int(rng.integers(5))) % len(_PLAYLIST_OPENERS)]
        head = opener.format(mood=mood, Mood=mood.capitalize())
        parts = []
        tempo = theme["value"] if theme["kind"] == "tempo" else s["tempo_word"]
        if tempo:
            parts.append(rng.choice([f"of {tempo} songs", f"with a {tempo} tempo", f"of {tempo} pieces"]))
        inst = _join(instruments[:3])
        parts.append(rng.choice([f"played on {inst}", f"featuring {inst}", f"with {inst}"]))
        if theme["kind"] == "family":
            parts.append(rng.choice([f"all {theme['value']}", f"from the {theme['value']} family"]))
        if s["mode"]:
            parts.append(rng.choice([f"mostly in {s['mode']} keys", f"in {s['mode']}"]))
        if s["drums"] == "True":
            parts.append(rng.choice(["with drums", "over drum beats"]))
        elif s["drums"] == "False":
            parts.append(rng.choice(["without drums", "with little percussion"]))
        keep = [parts[0]] + [p for p in parts[1:] if rng.random() < 0.85]
        out.append(head + " " + ", ".join(keep) + ".")
    return out


def playlist_tags(theme: dict[str, str], tracks: list[dict[str, Any]], rng: np.random.Generator) -> list[str]:
    """The theme's tag and the attributes most tracks share, from :data:`TAG_VOCAB`, in a shuffled order."""
    s = playlist_summary(tracks)
    tags = {theme["value"]}
    for key in ("mood", "tempo_word", "family", "mode", "loudness"):
        if s[key] and rng.random() < 0.8:
            tags.add(s[key])
    if s["drums"] is not None and rng.random() < 0.6:
        tags.add("drums" if s["drums"] == "True" else "no drums")
    out = sorted(tags)
    rng.shuffle(out)
    assert all(t in TAG_VOCAB for t in out), out
    return out


def tempo_histogram(tracks: list[dict[str, Any]]) -> list[float]:
    """The metadata vector: counts of the tracks' tempi in :data:`TEMPO_BINS` 12-BPM bins from 60, normalised."""
    hist = np.zeros(TEMPO_BINS)
    for t in tracks:
        hist[int(np.clip((t["tempo"] - 60) // 12, 0, TEMPO_BINS - 1))] += 1
    return [round(float(x), 4) for x in hist / max(1, hist.sum())]


# -- the corpus -----------------------------------------------------------------------------------
SPLITS = ("train", "valid", "test")


def plan_corpus(cfg: MusicConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tracks and playlists of ``cfg`` (no audio): pure functions of the seed and the counts."""
    tracks, playlists = [], []
    for s, split in enumerate(SPLITS):
        pool: list[dict[str, Any]] = []
        for i in range(cfg.tracks[s]):
            rng = _rng(cfg.seed, 1, s, i)
            # stratified: each theme kind and value gets its share of the pool, so every theme finds tracks
            kind = THEME_KINDS[i % 3]
            value = THEME_VALUES[kind][(i // 3) % len(THEME_VALUES[kind])]
            params = draw_track(rng, {THEME_KEYS[kind]: value})
            tid = f"{split}-t{i:05d}"
            pool.append({"id": tid, "audio": f"audio/{tid}.wav", "split": split, "params": params,
                         "captions": track_captions(params, cfg.captions, rng)})
        tracks += pool
        for j in range(cfg.playlists[s]):
            rng = _rng(cfg.seed, 2, s, j)
            kind = THEME_KINDS[j % len(THEME_KINDS)]
            key = THEME_KEYS[kind]
            values = [v for v in THEME_VALUES[kind] if sum(t["params"][key] == v for t in pool) >= cfg.min_tracks]
            if not values:
                raise ConfigError(f"split {split}: no {kind} theme has min_tracks={cfg.min_tracks} tracks among "
                                  f"{len(pool)}; render more tracks (tracks=[...])")
            value = str(values[int(rng.integers(len(values)))])
            fits = [t for t in pool if t["params"][key] == value]
            n = min(int(rng.integers(cfg.min_tracks, cfg.max_tracks + 1)), len(fits))
            chosen = [fits[int(k)] for k in rng.choice(len(fits), n, replace=False)]
            params = [t["params"] for t in chosen]
            theme = {"kind": kind, "value": value}
            tags = [] if rng.random() < cfg.no_tags_frac else playlist_tags(theme, params, rng)
            playlists.append({"id": f"{split}-p{j:05d}", "split": split, "theme": theme,
                              "tracks": [t["id"] for t in chosen], "tags": tags, "metadata": tempo_histogram(params),
                              "captions": playlist_captions(theme, params, cfg.captions, rng)})
    return tracks, playlists


def _write_jsonl(path: Path, items: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(x) + "\n" for x in items))


def synth_music(cfg: MusicConfig) -> Path:
    """Render the corpus of ``cfg`` into ``cfg.out``; return the path of ``playlists.jsonl``."""
    from auralm.data.audio import write_wav
    from auralm.data.manifest import Row, write_manifest

    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    tracks, playlists = plan_corpus(cfg)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    rendered = 0
    for t in progress(tracks, desc="synth music"):
        path = out / t["audio"]
        if not path.is_file():
            write_wav(path, render_track(t["params"], cfg.seconds, cfg.sample_rate), cfg.sample_rate)
            rendered += 1
    _write_jsonl(out / "tracks.jsonl", tracks)
    _write_jsonl(out / "playlists.jsonl", playlists)
    rows = [Row(id=t["id"], audio=t["audio"], text=t["captions"][0], duration=cfg.seconds, sample_rate=cfg.sample_rate,
                split=t["split"], source=t["id"], meta={"params": t["params"]}) for t in tracks]
    write_manifest(out / "manifest.jsonl", rows)
    atomic_write_json(out / "vocab.json", {"tags": list(TAG_VOCAB), "metadata": list(METADATA_NAMES),
                                           "instruments": list(INSTRUMENTS)})
    counts = "/".join(str(sum(p["split"] == s for p in playlists)) for s in SPLITS)
    print(f"auralm synth music: {len(tracks)} tracks ({rendered} rendered), {len(playlists)} playlists "
          f"(train/valid/test {counts}); wrote {out}", file=sys.stderr)
    return out / "playlists.jsonl"


def read_corpus(folder: str | Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """``(tracks by id, playlists)`` of a corpus folder; every playlist's tracks must exist."""
    folder = Path(folder)
    items: dict[str, list[dict[str, Any]]] = {}
    for name in ("tracks", "playlists"):
        path = folder / f"{name}.jsonl"
        if not path.is_file():
            raise ManifestError(f"{path} is missing: not a music corpus (make one with `auralm synth music --out DIR`)")
        items[name] = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    items[name].append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{path}:{n}: not valid JSON: {exc}") from None
    tracks = {t["id"]: t for t in items["tracks"]}
    for p in items["playlists"]:
        if not p.get("tracks"):
            raise ManifestError(f"{folder}/playlists.jsonl: playlist {p.get('id')!r} has no tracks")
        missing = [t for t in p["tracks"] if t not in tracks]
        if missing:
            raise ManifestError(f"{folder}/playlists.jsonl: playlist {p['id']!r} names unknown track(s) {missing[:3]}")
    return tracks, items["playlists"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="auralm synth music", description="Render synthetic music tracks and playlists "
                                "with captions, tags and metadata (see docs/caption.md).",
                                epilog="Trailing key=value pairs override any MusicConfig field, e.g. "
                                       "playlists=[40,8,8] tracks=[80,20,20] seconds=3")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="MusicConfig overrides")
    return p


def cli(argv: list[str]) -> int:
    """Entry point of ``auralm synth music``."""
    args = build_parser().parse_args(argv)
    data = {k: v for k, v in vars(args).items() if v is not None and k != "overrides"}
    synth_music(apply_overrides(MusicConfig.from_dict(data), args.overrides))
    return 0
