"""``auralm chunk``: cut long recordings and their transcripts into training chunks of at most N seconds.

Two ways to cut, chosen per recording:

* **with timings** (JSON words, SRT or VTT cues; see :mod:`auralm.data.timings`): cuts fall between
  timed units, so every chunk holds exactly the words timed inside it, none split, lost or (without
  overlap) repeated. Rows are marked ``meta.text_split = "exact"``.
* **without timings**: cuts fall in silences found from frame energy, and the transcript's words are
  shared out in proportion to each chunk's voiced duration. Rows are marked ``"approximate"``.

By default rows point at the original file with ``start``/``end``; ``--write-audio`` writes chunk WAVs.
The functions :func:`chunk_by_timings`, :func:`chunk_by_silence`, :func:`voiced_seconds` and
:func:`split_text` are reused wherever long audio must be cut (e.g. at inference). See docs/chunking.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from auralm.core.config import Config, apply_overrides, help_field, save_config
from auralm.core.errors import AudioError, ConfigError, ManifestError
from auralm.core.io import atomic_dir
from auralm.core.progress import progress
from auralm.data.audio import audio_info, is_silent, load_audio, write_wav
from auralm.data.manifest import Row, read_manifest, relative_audio, write_manifest
from auralm.data.timings import (
    TIMING_SUFFIXES,
    Chunk,
    TimingsError,
    Word,
    check_limits,
    chunk_by_timings,
    read_srt,
    read_timings,
    read_vtt,
    read_word_json,
    spread_words,
)

__all__ = [
    "Chunk", "ChunkConfig", "Word", "chunk_by_silence", "chunk_by_timings", "cli", "frame_db", "read_srt",
    "read_vtt", "read_word_json", "run", "split_text", "voiced_seconds",
]
EPS = 1e-6
TIMING_TOLERANCE = 0.5  # seconds a timing may run past the end of the audio before it is an error
AUDIO_DIR_MARKER = ".auralm-chunks"


# -- cutting at silences --------------------------------------------------------------------------
def frame_db(wav: np.ndarray, sr: int, frame_seconds: float = 0.02) -> tuple[np.ndarray, float]:
    """RMS level in dB of consecutive frames, and the frame length in seconds actually used."""
    hop = max(1, round(frame_seconds * sr))
    wav = np.asarray(wav, dtype=np.float32)
    full = len(wav) // hop
    ms = np.mean(np.square(wav[: full * hop].reshape(full, hop)), axis=1, dtype=np.float64)
    if len(wav) > full * hop or full == 0:  # a short last frame, zero-padded
        tail = wav[full * hop :].astype(np.float64)
        ms = np.append(ms, np.sum(tail**2) / hop)
    return 20.0 * np.log10(np.maximum(np.sqrt(ms), 1e-10)), hop / sr


def chunk_by_silence(
    wav: np.ndarray, sr: int, max_seconds: float, *, min_seconds: float = 1.0, threshold_db: float = -35.0,
    min_silence: float = 0.2, search_seconds: float = 5.0, frame_seconds: float = 0.02,
) -> list[tuple[float, float]]:
    """Cut mono audio into consecutive ``(start, end)`` spans (seconds) of at most ``max_seconds``.

    A frame is silent when its RMS level is more than ``-threshold_db`` dB below the loudest frame; runs of
    at least ``min_silence`` seconds are cut candidates. Each cut goes to the quietest silent frame in the
    last ``search_seconds`` before the limit, else to the latest silence after ``min_seconds``, else a hard
    cut exactly at ``max_seconds``. No cut leaves a remainder shorter than ``min_seconds`` when avoidable.
    """
    check_limits(max_seconds, 0.0, min_seconds)
    total = len(wav) / sr
    db, hop = frame_db(wav, sr, frame_seconds)
    runs = _silent_runs(db < db.max() + threshold_db, max(1, math.ceil(min_silence / hop - EPS)))
    spans: list[tuple[float, float]] = []
    s = 0.0
    while total - s > max_seconds + EPS:
        first = s + max(min_seconds, hop)
        hi = min(s + max_seconds, total - min_seconds)
        if hi <= first:
            hi = s + max_seconds
        lo = max(first, hi - search_seconds)
        cut = _pick_cut(db, runs, lo, hi, hop, latest=False)
        if cut is None:
            cut = _pick_cut(db, runs, first, lo, hop, latest=True)
        s_next = hi if cut is None else cut
        spans.append((s, s_next))
        s = s_next
    spans.append((s, total))
    return spans


def _silent_runs(silent: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def _pick_cut(db: np.ndarray, runs: list[tuple[int, int]], lo: float, hi: float, hop: float,
              latest: bool) -> float | None:
    """Centre time of the best silent frame whose centre lies in [lo, hi], or None."""
    cands = []
    for f0, f1 in runs:
        a = max(f0, math.ceil(lo / hop - 0.5 - EPS))
        b = min(f1, math.floor(hi / hop - 0.5 + EPS) + 1)
        if a < b:
            cands.append((f0, f1, a, b))
    if not cands:
        return None
    if latest:
        cands = cands[-1:]
    floor_db = min(float(db[a:b].min()) for _, _, a, b in cands)
    _, neg_f = min((abs(f - (f0 + f1 - 1) / 2), -f) for f0, f1, a, b in cands for f in range(a, b)
                   if db[f] <= floor_db + 1.0)
    return min((-neg_f + 0.5) * hop, hi)


def voiced_seconds(wav: np.ndarray, sr: int, spans: Sequence[tuple[float, float]], *, threshold_db: float = -35.0,
                   frame_seconds: float = 0.02) -> list[float]:
    """Seconds of non-silent frames (same rule as :func:`chunk_by_silence`) inside each span."""
    db, hop = frame_db(wav, sr, frame_seconds)
    voiced = db >= db.max() + threshold_db
    centres = (np.arange(len(db)) + 0.5) * hop
    return [float(np.count_nonzero(voiced[(centres >= a) & (centres < b)])) * hop for a, b in spans]


def split_text(text: str, weights: Sequence[float]) -> list[str]:
    """Share ``text``'s words over len(weights) parts in proportion to the weights (voiced seconds).

    A word goes to the part where the middle of its characters falls on the weighted time line, so every
    word lands in exactly one part and ``" ".join(parts)`` (skipping empty parts) equals the normalised text.
    """
    tokens = text.split()
    w = [max(0.0, float(x)) for x in weights]
    if not w:
        return []
    if sum(w) <= 0:
        w = [1.0] * len(w)
    edges = (np.cumsum(w)[:-1] / sum(w)).tolist()
    sizes = [len(t) + 1 for t in tokens]
    total, acc = float(sum(sizes)), 0.0
    parts: list[list[str]] = [[] for _ in w]
    for tok, size in zip(tokens, sizes):
        parts[bisect.bisect_right(edges, (acc + size / 2) / total)].append(tok)
        acc += size
    return [" ".join(p) for p in parts]


# -- the command ------------------------------------------------------------------------------------
@dataclasses.dataclass
class ChunkConfig(Config):
    """Settings of ``auralm chunk`` (saved beside the output manifest as ``<stem>.config.yaml``)."""

    out: str = help_field("", "output manifest (JSONL)")
    manifest: str = help_field("", "input manifest of long recordings")
    audio: str = help_field("", "one recording to chunk (instead of --manifest)")
    text: str = help_field("", "transcript file of --audio (cut at silences, approximate text split)")
    timings: str = help_field("", "timings file of --audio: .json word list, .srt or .vtt (exact text split)")
    id: str = help_field("", "id of the --audio recording (default: the file name without suffix)")
    max_seconds: float = help_field(20.0, "longest chunk in seconds")
    overlap: float = help_field(0.0, "seconds of words repeated at the start of the next chunk (timings only)")
    min_seconds: float = help_field(1.0, "shortest chunk the cutter aims for (at most half of max-seconds)")
    pad: float = help_field(0.1, "seconds of surrounding silence kept around timed words (up to mid-gap)")
    timings_dir: str = help_field("", "folder with <id>.json|.srt|.vtt or <audio stem>.<ext> timings per row")
    require_timings: bool = help_field(False, "error when a manifest row has no timings file")
    cues: str = help_field("whole", "SRT/VTT cues: 'whole' cuts only between cues; 'words' spreads cue words")
    threshold_db: float = help_field(-35.0, "a frame is silent when its level is below the loudest frame's plus this (dB, < 0)")
    min_silence: float = help_field(0.2, "shortest silence (seconds) to cut in")
    search_seconds: float = help_field(5.0, "look for the quietest silence this far before max-seconds")
    frame_seconds: float = help_field(0.02, "energy frame length in seconds")
    write_audio: bool = help_field(False, "write chunk WAVs instead of pointing at the original with start/end")
    audio_dir: str = help_field("", "folder for --write-audio (default: <out stem>_audio beside the manifest)")

    def validate(self) -> None:
        if not self.out:
            raise ConfigError("an output manifest is required (--out)")
        if bool(self.manifest) == bool(self.audio):
            raise ConfigError("give exactly one of --manifest or --audio")
        if self.manifest and (self.text or self.timings or self.id):
            raise ConfigError("--text, --timings and --id go with --audio, not --manifest")
        if self.audio and (self.timings_dir or self.require_timings):
            raise ConfigError("--timings-dir and --require-timings go with --manifest; use --timings with --audio")
        if self.text and self.timings:
            raise ConfigError("give --text or --timings, not both (timings carry the text)")
        if self.audio_dir and not self.write_audio:
            raise ConfigError("--audio-dir needs --write-audio")
        if self.max_seconds <= self.overlap:
            raise ConfigError(f"max-seconds ({self.max_seconds}) must be greater than overlap ({self.overlap})")
        check_limits(self.max_seconds, self.overlap, self.min_seconds)
        if self.cues not in ("whole", "words"):
            raise ConfigError(f"cues must be 'whole' or 'words', got {self.cues!r}")
        if self.pad < 0 or self.threshold_db >= 0 or self.search_seconds <= 0:
            raise ConfigError("pad must be >= 0, threshold-db < 0 and search-seconds > 0")
        if not 0 < self.frame_seconds <= self.min_silence:
            raise ConfigError(f"frame-seconds must be > 0 and <= min-silence ({self.min_silence})")


def find_timings(row: Row, timings_dir: str | Path | None) -> Path | None:
    """``meta.timings`` of the row (relative to its manifest), else ``DIR/<id>.<ext>`` or ``DIR/<audio stem>.<ext>``."""
    if row.meta.get("timings"):
        path = Path(row.meta["timings"])
        path = path if path.is_absolute() or row.root is None else row.root / path
        if not path.is_file():
            raise TimingsError(f"row {row.id!r}: meta.timings {path} does not exist")
        return path
    if timings_dir:
        for stem in (row.id, Path(row.audio or "").stem):
            for suffix in TIMING_SUFFIXES:
                if (path := Path(timings_dir) / f"{stem}{suffix}").is_file():
                    return path
    return None


Piece = tuple[float, float, "str | None", bool]  # (start, end, text, exact) in seconds of the file


def _pieces(row: Row, tpath: Path | None, cfg: ChunkConfig) -> tuple[list[Piece], int, str | None]:
    """Cut one recording: ``(pieces, sample_rate, text of all timed words or None)``."""
    path = row.audio_path()
    info = audio_info(path)
    off = row.start or 0.0
    stop = info.duration if row.end is None else min(row.end, info.duration)
    if tpath is None:
        wav, sr = load_audio(path, start=row.start, end=row.end)
        if is_silent(wav):
            raise AudioError(f"{path}: silent, nothing to cut at silences")
        kw = dict(threshold_db=cfg.threshold_db, frame_seconds=cfg.frame_seconds)
        spans = chunk_by_silence(wav, sr, cfg.max_seconds, min_seconds=cfg.min_seconds, min_silence=cfg.min_silence,
                                 search_seconds=cfg.search_seconds, **kw)
        voiced = voiced_seconds(wav, sr, spans, **kw)
        texts = split_text(row.text, voiced) if row.text else [None] * len(spans)
        return [(off + a, off + b, t, len(spans) == 1) for (a, b), v, t in zip(spans, voiced, texts)
                if (t if t is not None else v > 0)], sr, None
    words = read_timings(tpath, spread=cfg.cues == "words")
    late = next((w for w in words if w.end > info.duration + TIMING_TOLERANCE), None)
    if late is not None:
        raise TimingsError(f"{tpath}: {late.text[:40]!r} ends at {late.end:.2f}s but {path} lasts {info.duration:.2f}s")
    words = [Word(w.text, max(off, min(w.start, stop)), max(off, min(w.end, stop)), w.exact) for w in words
             if off <= (w.start + w.end) / 2 and (row.end is None or (w.start + w.end) / 2 < stop)]
    if not words:
        raise TimingsError(f"{tpath}: no words inside {path} between {off:.2f}s and {stop:.2f}s")
    words = [p for w in words for p in (spread_words(w.text, w.start, w.end)
                                        if w.duration > cfg.max_seconds and len(w.text.split()) > 1 else [w])]
    chunks = chunk_by_timings(words, cfg.max_seconds, cfg.overlap, min_seconds=cfg.min_seconds, pad=cfg.pad,
                              bounds=(off, stop))
    return [(c.start, c.end, c.text, c.exact) for c in chunks], info.sample_rate, " ".join(w.text for w in words)


def _norm_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def run(cfg: ChunkConfig) -> dict[str, int]:
    """Chunk every recording, write the manifest (and chunk WAVs) atomically, save the config; return counts."""
    out = Path(cfg.out)
    if cfg.manifest:
        if Path(cfg.manifest).resolve() == out.resolve():
            raise ConfigError(f"--out {out} would overwrite the input manifest")
        parents = read_manifest(cfg.manifest)
        missing = [r.id for r in parents if not r.audio]
        if missing:
            raise ManifestError(f"{cfg.manifest}: {len(missing)} row(s) without audio, e.g. {missing[0]!r}")
    else:
        text = Path(cfg.text).read_text(encoding="utf-8") if cfg.text else None
        parents = [Row(id=cfg.id or Path(cfg.audio).stem, audio=str(Path(cfg.audio).resolve()), text=text)]
    audio_dir = Path(cfg.audio_dir) if cfg.audio_dir else out.parent / f"{out.stem}_audio"
    if cfg.write_audio and audio_dir.exists() and any(audio_dir.iterdir()):
        if not (audio_dir / AUDIO_DIR_MARKER).exists():
            raise ConfigError(f"--audio-dir {audio_dir} exists and was not made by auralm chunk; refusing to replace it")
    counts = dict(recordings=0, chunks=0, exact=0, approximate=0, over_max=0, text_differs=0, no_timings=0)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        tmp_dir = stack.enter_context(atomic_dir(audio_dir)) if cfg.write_audio else None
        for parent in progress(parents, desc="chunk", total=len(parents)):
            tpath = Path(cfg.timings) if cfg.timings else find_timings(parent, cfg.timings_dir or None)
            if tpath is None and cfg.require_timings:
                raise TimingsError(f"row {parent.id!r}: no timings file in {cfg.timings_dir or '(no --timings-dir)'}")
            counts["no_timings"] += tpath is None
            pieces, sr, timed_text = _pieces(parent, tpath, cfg)
            if timed_text is not None and parent.text is not None:
                counts["text_differs"] += _norm_words(timed_text) != _norm_words(parent.text)
            counts["recordings"] += 1
            for k, (a, b, text, exact) in enumerate(pieces):
                rows.append(_chunk_row(parent, k, a, b, text, exact, sr, out.parent, audio_dir, tmp_dir))
                counts["exact" if exact else "approximate"] += 1
                counts["over_max"] += b - a > cfg.max_seconds + 1e-3
        if tmp_dir is not None:
            (tmp_dir / AUDIO_DIR_MARKER).write_text("chunk WAVs written by `auralm chunk`; replaced on re-runs\n")
        counts["chunks"] = write_manifest(out, rows)  # before the audio folder is swapped in
    save_config(cfg, out.parent, f"{out.stem}.config.yaml")
    return counts


def _chunk_row(parent: Row, k: int, a: float, b: float, text: str | None, exact: bool, sr: int, out_dir: Path,
               audio_dir: Path, tmp_dir: Path | None) -> Row:
    cid = f"{parent.id}-{k:04d}"
    meta = {key: v for key, v in parent.meta.items() if key != "timings"}
    meta.update(text_split="exact" if exact else "approximate", parent=parent.id)
    common = dict(id=cid, text=text, sample_rate=sr, split=parent.split, source=parent.source or parent.id,
                  prompt=parent.prompt, label=parent.label, tags=list(parent.tags), meta=meta)
    if tmp_dir is None:
        audio = relative_audio(parent.audio_path(), out_dir)
        return Row(audio=audio, start=round(a, 6), end=round(b, 6), duration=round(b - a, 6), **common)
    name = re.sub(r"[^\w.-]", "_", cid) + ".wav"
    if (tmp_dir / name).exists():
        raise ManifestError(f"two chunks map to the same file name {name}; make the row ids distinct")
    wav, sr = load_audio(parent.audio_path(), start=a, end=b)
    write_wav(tmp_dir / name, wav, sr)
    return Row(audio=relative_audio(audio_dir / name, out_dir), duration=round(len(wav) / sr, 6), **common)


def _parser() -> argparse.ArgumentParser:
    fields = {f.name: f for f in dataclasses.fields(ChunkConfig)}
    parser = argparse.ArgumentParser(
        prog="auralm chunk", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Cut long audio and its transcript into chunks of at most --max-seconds.\n"
        "With timings (--timings, --timings-dir, meta.timings) chunks get exactly their words (text_split=exact);\n"
        "without, cuts go into silences and words are shared by voiced duration (text_split=approximate).",
        epilog="Trailing key=value pairs override any setting (e.g. threshold_db=-40). See docs/chunking.md.",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", metavar="IN.jsonl", help=fields["manifest"].metadata["help"])
    src.add_argument("--audio", metavar="FILE", help=fields["audio"].metadata["help"])
    parser.add_argument("--out", required=True, metavar="OUT.jsonl", help=fields["out"].metadata["help"])
    for name, f in fields.items():
        if name in ("manifest", "audio", "out"):
            continue
        flag = "--" + name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action="store_true", default=None, help=f.metadata["help"])
            continue
        kind = float if f.type in (float, "float") else str
        metavar = {"threshold_db": "DB", "id": "ID", "cues": "{whole,words}"}.get(name)
        metavar = metavar or ("SEC" if kind is float else "DIR" if name.endswith("_dir") else "FILE")
        default = f" (default: {f.default})" if f.default != "" else ""
        parser.add_argument(flag, type=kind, metavar=metavar, help=f.metadata["help"] + default)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override a setting")
    return parser


def cli(argv: list[str]) -> int:
    """Entry point of ``auralm chunk``."""
    args = vars(_parser().parse_args(argv))
    overrides = args.pop("overrides")
    cfg = apply_overrides(ChunkConfig.from_dict({k: v for k, v in args.items() if v is not None}), overrides)
    c = run(cfg)
    print(f"wrote {c['chunks']} chunks ({c['exact']} exact, {c['approximate']} approximate text split) "
          f"from {c['recordings']} recording(s) to {cfg.out}")
    if c["no_timings"] and cfg.manifest:
        print(f"  {c['no_timings']} recording(s) had no timings and were cut at silences", file=sys.stderr)
    if c["over_max"]:
        print(f"  {c['over_max']} chunk(s) exceed max-seconds: a single word/cue longer than the limit",
              file=sys.stderr)
    if c["text_differs"]:
        print(f"  {c['text_differs']} recording(s): manifest text differs from the timings' words; "
              "chunk text comes from the timings", file=sys.stderr)
    return 0
