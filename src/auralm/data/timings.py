"""Word and segment timings: read SRT, WebVTT and JSON word lists into :class:`Word` spans.

* :func:`read_word_json` reads a JSON list of words ``[{"word" or "text": .., "start": s, "end": s}, ...]``;
  a mapping with a ``"words"`` list, or with ``"segments"`` that each hold ``"words"`` (the shape
  Whisper-style aligners write), is accepted too. These timings are exact.
* :func:`read_srt` and :func:`read_vtt` read subtitle cues. By default each cue becomes one unit
  (its whole text with the cue's start and end), so a chunker cuts only at cue boundaries and the
  text split stays exact. With ``spread=True`` each cue's words are spread over the cue in proportion
  to their length; such words are marked ``exact=False`` because their timings are estimates.

Malformed files raise :class:`TimingsError` naming the file and line.

:func:`chunk_by_timings` groups timed words into :class:`Chunk` spans of at most N seconds, cutting only
between words, so each chunk holds exactly the words timed inside it.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auralm.core.errors import AuralmError, ConfigError

TIMING_SUFFIXES = (".json", ".srt", ".vtt")
EPS = 1e-6


class TimingsError(AuralmError):
    """A timings file that cannot be parsed, or timings that do not fit the audio."""


@dataclasses.dataclass(frozen=True)
class Word:
    """One timed unit of text: a word, or a whole subtitle cue. Times are seconds from the file start."""

    text: str
    start: float
    end: float
    exact: bool = True  # False when the timing was estimated (words spread over a cue)

    @property
    def duration(self) -> float:
        return self.end - self.start


def spread_words(text: str, start: float, end: float) -> list[Word]:
    """Split ``text`` into words and spread them over ``[start, end]`` in proportion to their length."""
    tokens = text.split()
    if not tokens:
        return []
    if len(tokens) == 1:
        return [Word(tokens[0], start, end, exact=False)]
    weights = [len(t) + 1 for t in tokens]
    total, acc, out = float(sum(weights)), 0.0, []
    for i, (tok, w) in enumerate(zip(tokens, weights)):
        a = start + (end - start) * acc / total
        acc += w
        b = end if i == len(tokens) - 1 else start + (end - start) * acc / total
        out.append(Word(tok, a, b, exact=False))
    return out


def read_timings(path: str | Path, *, spread: bool = False) -> list[Word]:
    """Read a timings file by its suffix (``.json``, ``.srt`` or ``.vtt``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_word_json(path)
    if suffix == ".srt":
        return read_srt(path, spread=spread)
    if suffix == ".vtt":
        return read_vtt(path, spread=spread)
    raise TimingsError(f"{path}: unknown timings format {suffix or '(no suffix)'}; use .json, .srt or .vtt")


def read_word_json(path: str | Path) -> list[Word]:
    """Read a JSON word list; every word needs text and numeric ``start`` <= ``end`` >= 0."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise TimingsError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    items = _word_items(data, path)
    words, problems = [], []
    for i, item in enumerate(items):
        try:
            word = _word_from_item(item)
        except ValueError as exc:
            problems.append(f"word {i}: {exc}")
            continue
        if word is not None:
            words.append(word)
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise TimingsError(f"{path}: {len(problems)} bad word(s): " + "; ".join(shown))
    return _checked(words, path)


def read_srt(path: str | Path, *, spread: bool = False) -> list[Word]:
    """Read SubRip cues: an optional index line, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, then text lines."""
    path = Path(path)
    words: list[Word] = []
    for number, lines in _blocks(_read_text(path)):
        at = 1 if len(lines) > 1 and lines[0].strip().isdigit() else 0
        times = _parse_timing_line(lines[at], path, number + at)
        if times is None:
            raise TimingsError(
                f"{path}: line {number + at}: expected a timing line like "
                f"'00:00:01,000 --> 00:00:02,500', got {lines[at].strip()[:60]!r}"
            )
        text = _clean(" ".join(lines[at + 1 :]), srt=True)
        words.extend(_cue_units(text, *times, spread=spread, where=f"{path}: line {number + at}"))
    if not words:
        raise TimingsError(f"{path}: no subtitle cues found")
    return _checked(words, path)


def read_vtt(path: str | Path, *, spread: bool = False) -> list[Word]:
    """Read WebVTT cues; the file must start with ``WEBVTT``. NOTE, STYLE and REGION blocks are skipped."""
    path = Path(path)
    blocks = list(_blocks(_read_text(path)))
    if not blocks or not blocks[0][1][0].startswith("WEBVTT"):
        raise TimingsError(f"{path}: not a WebVTT file (the first line must start with 'WEBVTT')")
    words: list[Word] = []
    for number, lines in blocks[1:]:
        head = lines[0].strip()
        if head.split(" ", 1)[0] in ("NOTE", "STYLE", "REGION") and "-->" not in head:
            continue
        at = 1 if "-->" not in lines[0] and len(lines) > 1 else 0  # an optional cue identifier line
        times = _parse_timing_line(lines[at], path, number + at)
        if times is None:
            raise TimingsError(
                f"{path}: line {number + at}: expected a cue timing line like "
                f"'00:01.000 --> 00:02.500', got {lines[at].strip()[:60]!r}"
            )
        text = _clean(" ".join(lines[at + 1 :]), srt=False)
        words.extend(_cue_units(text, *times, spread=spread, where=f"{path}: line {number + at}"))
    if not words:
        raise TimingsError(f"{path}: no cues found")
    return _checked(words, path)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A span of audio (seconds) and exactly the timed words inside it."""

    start: float
    end: float
    words: tuple[Word, ...]

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def exact(self) -> bool:
        """False when any word's timing was estimated (cue words spread with ``spread=True``)."""
        return all(w.exact for w in self.words)


# -- chunking by timings ---------------------------------------------------------------------------
def chunk_by_timings(
    words: Sequence[Word], max_seconds: float, overlap: float = 0.0, *, min_seconds: float = 0.0,
    pad: float = 0.0, bounds: tuple[float, float] | None = None,
) -> list[Chunk]:
    """Group time-sorted ``words`` into chunks whose words span at most ``max_seconds``.

    ``overlap`` > 0 starts each next chunk with the previous chunk's words that begin within the last
    ``overlap`` seconds (dropped when they would leave no room for a new word). Without overlap the last
    chunk is rebalanced to reach ``min_seconds`` when its neighbour can spare words. ``pad`` widens each
    chunk into the silence around it, never past the middle of a gap to a neighbouring word, outside
    ``bounds`` or beyond ``max_seconds``. A single word longer than ``max_seconds`` becomes its own chunk.
    """
    check_limits(max_seconds, overlap, min_seconds)
    words = list(words)
    for n, (a, b) in enumerate(zip(words, words[1:]), start=1):
        if b.start < a.start:
            raise TimingsError(f"words must be sorted by start time: word {n} {b.text!r} starts before {a.text!r}")
    groups: list[tuple[int, int]] = []
    i = 0
    while i < len(words):
        j = _fill(words, i, max_seconds)
        groups.append((i, j))
        if j >= len(words):
            break
        k = j
        if overlap > 0:
            end = _span_end(words, i, j)
            k = next(m for m in range(i + 1, j + 1) if m == j or words[m].start >= end - overlap - EPS)
            if k < j and _fill(words, k, max_seconds) <= j:
                k = j  # repeating these words would leave no room for the next one
        i = k
    if overlap == 0 and min_seconds > 0 and len(groups) > 1:
        (a, c), (_, d) = groups[-2], groups[-1]
        while (c - 1 > a and _span(words, c, d) < min_seconds and _span(words, c - 1, d) <= max_seconds + EPS
               and _span(words, a, c - 1) >= min_seconds):
            c -= 1
        groups[-2:] = [(a, c), (c, d)]
    return [_padded(words, a, b, pad, max_seconds, bounds) for a, b in groups]


def check_limits(max_seconds: float, overlap: float, min_seconds: float) -> None:
    """Raise :class:`ConfigError` unless 0 < max, 0 <= overlap < max and 0 <= min <= max / 2."""
    if max_seconds <= 0:
        raise ConfigError(f"max-seconds must be positive, got {max_seconds}")
    if not 0 <= overlap < max_seconds:
        raise ConfigError(f"overlap must be >= 0 and smaller than max-seconds ({max_seconds}), got {overlap}")
    if min_seconds < 0 or min_seconds > max_seconds / 2:
        raise ConfigError(f"min-seconds must be between 0 and half of max-seconds ({max_seconds}), got {min_seconds}")


def _span_end(words: list[Word], a: int, b: int) -> float:
    return max(w.end for w in words[a:b])


def _span(words: list[Word], a: int, b: int) -> float:
    return _span_end(words, a, b) - words[a].start


def _fill(words: list[Word], i: int, max_seconds: float) -> int:
    """The exclusive end of the longest run of words from ``i`` spanning <= max_seconds (at least one)."""
    j, end = i + 1, words[i].end
    while j < len(words) and max(end, words[j].end) - words[i].start <= max_seconds + EPS:
        end = max(end, words[j].end)
        j += 1
    return j


def _padded(words: list[Word], a: int, b: int, pad: float, max_seconds: float,
            bounds: tuple[float, float] | None) -> Chunk:
    start, end = words[a].start, _span_end(words, a, b)
    lo, hi = bounds if bounds is not None else (0.0, math.inf)
    left_gap = (start - words[a - 1].end) / 2 if a > 0 else start - lo
    right_gap = (words[b].start - end) / 2 if b < len(words) else hi - end
    left, right = min(pad, max(0.0, left_gap)), min(pad, max(0.0, right_gap))
    room = max(0.0, max_seconds - (end - start))
    if left + right > room:
        scale = room / (left + right)
        left, right = left * scale, right * scale
    return Chunk(start - left, end + right, tuple(words[a:b]))


# -- helpers ------------------------------------------------------------------------------------
_TS = r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})"
_TIMING_RE = re.compile(rf"^\s*{_TS}\s*-->\s*{_TS}(?:\s+.*)?$")
_TAG_RE = re.compile(r"<[^>]*>")
_ASS_RE = re.compile(r"\{\\[^}]*\}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise TimingsError(f"{path}: no such timings file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TimingsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks as ``(first line number, lines)``."""
    out: list[tuple[int, list[str]]] = []
    current: list[str] = []
    first = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            if not current:
                first = number
            current.append(line)
        elif current:
            out.append((first, current))
            current = []
    if current:
        out.append((first, current))
    return out


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def _parse_timing_line(line: str, path: Path, number: int) -> tuple[float, float] | None:
    match = _TIMING_RE.match(line)
    if match is None:
        return None
    g = match.groups()
    start, end = _seconds(*g[:4]), _seconds(*g[4:])
    if end < start:
        raise TimingsError(f"{path}: line {number}: cue ends ({end:.3f}s) before it starts ({start:.3f}s)")
    return start, end


def _clean(text: str, *, srt: bool) -> str:
    text = _TAG_RE.sub("", text)
    text = _ASS_RE.sub("", text) if srt else html.unescape(text)
    return " ".join(text.split())


def _cue_units(text: str, start: float, end: float, *, spread: bool, where: str) -> list[Word]:
    if not text:
        return []
    if "-->" in text:
        raise TimingsError(f"{where}: cue text contains '-->' (a missing blank line between cues?)")
    return spread_words(text, start, end) if spread else [Word(text, start, end)]


def _word_items(data: Any, path: Path) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("words"), list):
        return data["words"]
    if isinstance(data, dict) and isinstance(data.get("segments"), list):
        items: list[Any] = []
        for i, seg in enumerate(data["segments"]):
            if not isinstance(seg, dict) or not isinstance(seg.get("words"), list):
                raise TimingsError(f"{path}: segment {i} has no 'words' list")
            items.extend(seg["words"])
        return items
    raise TimingsError(
        f"{path}: expected a JSON list of words like "
        '[{"word": "hello", "start": 0.0, "end": 0.4}], or an object with "words" or "segments"'
    )


def _word_from_item(item: Any) -> Word | None:
    if not isinstance(item, dict):
        raise ValueError(f"expected an object, got {type(item).__name__}")
    text = item.get("word", item.get("text"))
    if not isinstance(text, str):
        raise ValueError("needs a string 'word' or 'text'")
    times = []
    for key in ("start", "end"):
        value = item.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{text.strip()!r} has no numeric {key!r} (got {value!r})")
        times.append(float(value))
    start, end = times
    if start < 0 or end < start:
        raise ValueError(f"{text.strip()!r} has invalid times start={start} end={end}")
    text = " ".join(text.split())
    return Word(text, start, end) if text else None


def _checked(words: list[Word], path: Path) -> list[Word]:
    """Sort by start (stable) and refuse an empty result."""
    if not words:
        raise TimingsError(f"{path}: contains no words")
    return sorted(words, key=lambda w: w.start)
