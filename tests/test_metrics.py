"""WER/CER with Whisper's English normalisation."""

from __future__ import annotations

import pytest

from auralm.metrics.text import cer, edit_distance, normalize_english, wer


def test_edit_distance_counts_each_operation():
    assert edit_distance("a b c".split(), "a b c".split()) == 0
    assert edit_distance("a b c".split(), "a x c".split()) == 1  # substitution
    assert edit_distance("a b c".split(), "a c".split()) == 1  # deletion
    assert edit_distance("a b c".split(), "a b c d".split()) == 1  # insertion
    assert edit_distance([], "a b".split()) == 2


def test_normalisation_ignores_case_punctuation_numbers_and_spelling():
    assert normalize_english("Hello, World!") == "hello world"
    assert normalize_english("twenty-five colours") == normalize_english("25 colors")
    assert wer(["It's twenty five past Nine."], ["it is 25 past 9"]) == 0.0


def test_wer_is_corpus_level_and_can_exceed_one():
    assert wer(["a b c d", "e f"], ["a b c d", "x y"]) == pytest.approx(2 / 6)
    assert wer(["a"], ["b c d"], normalize=False) == 3.0
    assert cer(["abc"], ["abd"], normalize=False) == pytest.approx(1 / 3)


def test_wer_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 references but 1"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        wer([], [])
