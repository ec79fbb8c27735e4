"""Sentences to speak: Debian's fortunes, a user's text file, or a small embedded fallback list.

:func:`fortune_sentences` reads the ``fortune-mod`` databases (entries separated by lines holding a
single ``%``) and keeps short, clean, single-line-ish sentences: ASCII letters, digits and plain
punctuation only, 3 to 20 words, attributions (``-- Author``) removed, duplicates dropped.
:func:`text_file_lines` returns a file's non-empty lines in order. :func:`embedded_sentences` is the
fallback shipped in ``auralm/data/assets/sentences.txt``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from auralm.core.errors import ConfigError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Debian's fortune databases with plain prose (fortunes-min ships the first three; `fortunes` the rest).
# Offensive, ASCII-art and code-heavy sets are left out.
FORTUNE_FILES = (
    "fortunes", "literature", "riddles", "computers", "cookie", "definitions", "disclaimer", "education",
    "food", "goedel", "humorists", "kids", "knghtbrd", "law", "love", "magic", "medicine", "miscellaneous",
    "news", "paradoxum", "people", "pets", "platitudes", "pratchett", "science", "songs-poems", "sports",
    "startrek", "tao", "wisdom", "work",
)
MIN_WORDS, MAX_WORDS = 3, 20

_ALLOWED = re.compile(r"^[A-Za-z0-9 .,!?;:'\"()-]+$")
_ATTRIBUTION_LINE = re.compile(r"^\s*(--|- [A-Z])")
_INLINE_ATTRIBUTION = re.compile(r"\s--\s?[A-Z(].*$")
_REPEATED_PUNCT = re.compile(r"([!?.,;:])\1+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([!?.,;:])")


def to_ascii(text: str) -> str:
    """Fold accents and typographic quotes/dashes to plain ASCII; drop what has no ASCII form."""
    text = text.replace("\u2018", "'").replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2013", "-").replace("\u2014", " -- ").replace("\u2026", "...")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def clean_sentence(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> str | None:
    """One tidy sentence from ``text``, or None when it does not fit (bad characters, too short/long)."""
    text = " ".join(to_ascii(text).split())
    text = _INLINE_ATTRIBUTION.sub("", text).strip()
    text = _REPEATED_PUNCT.sub(r"\1", text.replace("...", "\u2026")).replace("\u2026", "...")
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    if not text or not _ALLOWED.match(text) or "--" in text:
        return None
    if not re.search(r"[A-Za-z]", text) or not (text[0].isalnum() or text[0] in "\"'("):
        return None
    words = text.split()
    if not min_words <= len(words) <= max_words:
        return None
    return text


def sentence_key(text: str) -> str:
    """Case- and punctuation-insensitive form of a sentence: two texts with one key are one sentence."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def sentence_id(text: str) -> str:
    """A short stable id of a sentence (``sent-`` + 12 hex digits of its key's sha256)."""
    return "sent-" + hashlib.sha256(sentence_key(text).encode("utf-8")).hexdigest()[:12]


def dedupe(sentences: Iterable[str]) -> list[str]:
    """Keep the first of each group of sentences sharing a :func:`sentence_key`."""
    seen: set[str] = set()
    out = []
    for s in sentences:
        key = sentence_key(s)
        if key and key not in seen:
            seen.add(key)
            out.append(s)
    return out


def parse_fortunes(text: str) -> list[str]:
    """Clean sentences from the text of one fortune database (entries separated by ``%`` lines)."""
    out = []
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        lines = [ln for ln in entry.strip("\n").splitlines() if ln.strip()]
        lines = [ln for ln in lines if not _ATTRIBUTION_LINE.match(ln)]
        # poems, dialogues and indented layouts do not read as one sentence
        if not lines or len(lines) > 2 or any(ln[:1].isspace() or "\t" in ln for ln in lines):
            continue
        if any(re.match(r"^[A-Z][A-Za-z]*:", ln) for ln in lines):
            continue
        cleaned = clean_sentence(" ".join(lines))
        if cleaned:
            out.append(cleaned)
    return out


def fortune_sentences(folder: str | Path = FORTUNES_DIR, names: Iterable[str] = FORTUNE_FILES) -> list[str]:
    """Clean, deduplicated sentences from the fortune databases found in ``folder`` (empty if none)."""
    sentences: list[str] = []
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            sentences += parse_fortunes(path.read_bytes().decode("utf-8", errors="replace"))
    return dedupe(sentences)


def embedded_sentences() -> list[str]:
    """The fallback list shipped with the package (one sentence a line)."""
    res = importlib.resources.files("auralm") / "data" / "assets" / "sentences.txt"
    lines = res.read_text(encoding="utf-8").splitlines()
    return dedupe(s for s in (clean_sentence(ln) for ln in lines if not ln.startswith("#")) if s)


def text_file_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, whitespace-collapsed, in file order."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"text file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"text file {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ConfigError(f"text file {path} has no non-empty lines")
    return lines
