"""Speech metrics: word and character error rates after a standard English normalisation.

The normaliser is Whisper's English text normaliser (transformers' implementation, with the
British-to-American spelling table that the ``openai-whisper`` package ships). It lower-cases,
strips punctuation, expands contractions and writes numbers as digits, so "Twenty-five!" and
"25" count as the same word. Without that package the spelling table is empty; everything else
is unchanged.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    spelling: dict[str, str] = {}
    spec = importlib.util.find_spec("whisper")  # locate openai-whisper without importing it
    if spec is not None and spec.submodule_search_locations:
        table = Path(list(spec.submodule_search_locations)[0]) / "normalizers" / "english.json"
        if table.is_file():
            spelling = json.loads(table.read_text())
    return EnglishTextNormalizer(spelling)


def normalize_english(text: str) -> str:
    """Whisper's English normalisation: case, punctuation, contractions, numbers, spelling."""
    return " ".join(_normalizer()(text).split())


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitution, insertion, deletion cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1]


def _error_rate(refs: Sequence[str], hyps: Sequence[str], split: Callable[[str], list[str]], normalize: bool) -> float:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no references to score")
    errors = total = 0
    for ref, hyp in zip(refs, hyps):
        if normalize:
            ref, hyp = normalize_english(ref), normalize_english(hyp)
        r, h = split(ref), split(hyp)
        errors += edit_distance(r, h)
        total += len(r)
    if total == 0:
        raise ValueError("references are empty after normalisation")
    return errors / total


def wer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus word error rate: total word edits over total reference words (can exceed 1)."""
    return _error_rate(refs, hyps, str.split, normalize)


def cer(refs: Sequence[str], hyps: Sequence[str], normalize: bool = True) -> float:
    """Corpus character error rate over normalised text (spaces count as characters)."""
    return _error_rate(refs, hyps, list, normalize)


METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {"wer": wer, "cer": cer}
