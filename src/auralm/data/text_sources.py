"""Sentences to speak: Debian's fortunes, WordNet's glosses, GCIDE's quotations, a user's text file,
or a small embedded fallback list.

Named sources (:data:`SOURCES`, read by :func:`load_source`; all offline Debian packages):

=======================  =====================================================================================
``fortunes``             ``fortune-mod`` databases (``fortunes-min``, ``fortunes``): entries separated by
                         ``%`` lines, short single-line-ish sentences, attributions (``-- Author``) removed
``wordnet-examples``     the quoted example sentences of WordNet 3.0's glosses (``wordnet-base``), 5-20 words:
                         ``"the widow sued his surgeon for malpractice"``
``wordnet-definitions``  the definitions of the same glosses, parenthesised parts removed, 4-20 words:
                         ``(of speed) less than that of sound`` -> ``less than that of sound``
``gcide-quotes``         the attributed quotations of the GNU Collaborative International Dictionary of
                         English (``dict-gcide``), attribution removed, long ones cut at sentence ends, 5-20 words
=======================  =====================================================================================

Every source goes through :func:`clean_sentence` (ASCII letters, digits and plain punctuation only,
a word-count range); the WordNet and GCIDE sources are held to a stricter set (:func:`clean_strict`:
no brackets of any kind, no symbols espeak-ng reads badly). Duplicates (same :func:`sentence_key`)
are dropped within a source and, by :func:`source_sentences`, across sources.
:func:`text_file_lines` returns a file's non-empty lines in order. :func:`embedded_sentences` is the
fallback shipped in ``auralm/data/assets/sentences.txt``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path

from auralm.core.config import comma_list
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
WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
GCIDE_PATH = Path("/usr/share/dictd/gcide.dict.dz")
SOURCES = ("fortunes", "wordnet-examples", "wordnet-definitions", "gcide-quotes")
SOURCE_PACKAGES = {"fortunes": "fortunes-min", "wordnet-examples": "wordnet-base",
                   "wordnet-definitions": "wordnet-base", "gcide-quotes": "dict-gcide"}  # fmt: skip
EXAMPLE_WORDS = (5, 20)  # WordNet examples and GCIDE quotations: shorter ones are mostly phrases ("a big house")
DEFINITION_WORDS = (4, 20)

_ALLOWED = re.compile(r"^[A-Za-z0-9 .,!?;:'\"()-]+$")
_ATTRIBUTION_LINE = re.compile(r"^\s*(--|- [A-Z])")
_INLINE_ATTRIBUTION = re.compile(r"\s--\s?[A-Z(].*$")
_REPEATED_PUNCT = re.compile(r"([!?.,;:])\1+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([!?.,;:])")
# WordNet / GCIDE text: no brackets, quotes only as apostrophes, nothing espeak-ng spells out
_STRICT = re.compile(r"^[A-Za-z0-9 .,!?;:'-]+$")
_PARENS = re.compile(r"\s*\([^()]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_GCIDE_ATTRIBUTION = re.compile(r"\s--\s*[A-Z(][^\n]*$")


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


def clean_strict(text: str, min_words: int, max_words: int) -> str | None:
    """:func:`clean_sentence` for the dictionary sources, without brackets or double quotes, as a sentence:
    first letter upper-case (so espeak-ng reads it as one), a full stop added when no end mark is there."""
    text = " ".join(to_ascii(text).split()).strip(" ;,:")
    if not text or not _STRICT.match(text) or "--" in text or text.startswith("-") or "''" in text:
        return None
    if text.count("'") - len(re.findall(r"[A-Za-z]'[A-Za-z]|s' ", text + " ")) > 0:  # stray quote marks
        return None
    text = clean_sentence(text, min_words, max_words)
    if text is None:
        return None
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


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


def _split_outside_quotes(text: str, sep: str = ";") -> list[str]:
    """Split at ``sep`` where it is not inside double quotes."""
    parts, current, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_wordnet_gloss(gloss: str) -> tuple[list[str], list[str]]:
    """(definitions, examples) of one WordNet gloss, each cleaned.

    A gloss is definitions and quoted examples separated by semicolons, e.g.
    ``(of speed) less than that of sound; "aircraft flying at subsonic speeds"``: parts in double
    quotes are examples (text after an example's closing quote, such as ``- Shakespeare``, is an
    attribution and dropped); the other parts are definitions, with parenthesised asides removed.
    """
    definitions, examples = [], []
    for part in _split_outside_quotes(gloss):
        if part.startswith('"'):
            end = part.find('"', 1)
            cleaned = clean_strict(part[1:end] if end > 0 else part[1:], *EXAMPLE_WORDS)
            if cleaned:
                examples.append(cleaned)
        else:
            cleaned = clean_strict(_PARENS.sub("", part), *DEFINITION_WORDS)
            if cleaned:
                definitions.append(cleaned)
    return definitions, examples


def wordnet_glosses(folder: str | Path = WORDNET_DIR) -> Iterator[str]:
    """The gloss of every synset in WordNet's ``data.*`` files (the text after `` | ``; the licence
    header, whose lines start with two spaces, is skipped)."""
    for name in WORDNET_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
            if not line.startswith("  ") and " | " in line:
                yield line.partition(" | ")[2].strip()


@cache
def _wordnet(folder: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    definitions, examples = [], []
    for gloss in wordnet_glosses(folder):
        d, e = parse_wordnet_gloss(gloss)
        definitions += d
        examples += e
    return tuple(dedupe(definitions)), tuple(dedupe(examples))


def wordnet_examples(folder: str | Path = WORDNET_DIR) -> list[str]:
    """WordNet's example sentences, cleaned and deduplicated (empty when ``wordnet-base`` is absent)."""
    return list(_wordnet(str(folder))[1])


def wordnet_definitions(folder: str | Path = WORDNET_DIR) -> list[str]:
    """WordNet's definitions, cleaned and deduplicated (empty when ``wordnet-base`` is absent)."""
    return list(_wordnet(str(folder))[0])


def parse_gcide(text: str) -> list[str]:
    """The attributed quotations of a GCIDE dictionary text, cleaned (not deduplicated).

    A quotation is a paragraph indented by 8 or more spaces whose text ends with ``--Author`` (the
    ``[1913 Webster]`` source lines are not part of it), e.g.::

                His travels were full of absurdities. --Johnson.

    The attribution is removed; a quotation over the word limit is cut at its sentence ends and the
    pieces that fit are kept.
    """
    out = []
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.startswith("        "):
            continue
        lines = [ln.strip() for ln in para.splitlines()]
        body = " ".join(ln for ln in lines if ln and not ln.startswith("["))
        match = _GCIDE_ATTRIBUTION.search(body)
        if not match:
            continue
        quote = body[: match.start()].strip()
        pieces = [quote] if len(quote.split()) <= EXAMPLE_WORDS[1] else _SENTENCE_END.split(quote)
        out += [c for c in (clean_strict(p, *EXAMPLE_WORDS) for p in pieces) if c]
    return out


@cache
def _gcide(path: str) -> tuple[str, ...]:
    p = Path(path)
    if not p.is_file():
        return ()
    data = gzip.open(p).read() if p.suffix == ".dz" or p.suffix == ".gz" else p.read_bytes()  # dictzip is gzip
    return tuple(dedupe(parse_gcide(data.decode("utf-8", errors="replace"))))


def gcide_quotations(path: str | Path = GCIDE_PATH) -> list[str]:
    """GCIDE's quotations, cleaned and deduplicated (empty when ``dict-gcide`` is absent)."""
    return list(_gcide(str(path)))


def load_source(name: str) -> list[str]:
    """The sentences of one named source (:data:`SOURCES`); empty when its package is not installed."""
    if name == "fortunes":
        return fortune_sentences(FORTUNES_DIR)
    if name == "wordnet-examples":
        return wordnet_examples(WORDNET_DIR)
    if name == "wordnet-definitions":
        return wordnet_definitions(WORDNET_DIR)
    if name == "gcide-quotes":
        return gcide_quotations(GCIDE_PATH)
    raise ConfigError(f"unknown text source {name!r}; the sources are {', '.join(SOURCES)}")


def source_sentences(names: Iterable[str], load: Callable[[str], list[str]] = load_source) -> dict[str, list[str]]:
    """Each named source's sentences, a sentence found in an earlier source removed from the later ones
    (so a sentence belongs to one source; its split is its own either way, see ``sentence_id``)."""
    seen: set[str] = set()
    out = {}
    for name in names:
        kept = []
        for s in load(name):
            key = sentence_key(s)
            if key and key not in seen:
                seen.add(key)
                kept.append(s)
        out[name] = kept
    return out


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


def parse_weights(text: str) -> dict[str, float]:
    """``"fortunes:1,wordnet-examples:2"`` -> ``{"fortunes": 1.0, "wordnet-examples": 2.0}`` (weight 1 when left out)."""
    out = {}
    for item in comma_list(text):
        name, _, weight = item.partition(":")
        try:
            out[name.strip()] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ConfigError(f"--sources: {item!r} is not name or name:weight") from None
    return out
