"""Captioning metrics as the reference COCO scorers compute them, plus diversity and an embedding similarity.

:func:`caption_scores` runs the ``pycocoevalcap`` package's own code: its PTB tokenizer (Stanford CoreNLP
3.4.1, on Java), then BLEU-1..4, METEOR 1.5 (Java), ROUGE-L and CIDEr-D, over the whole corpus, exactly as
``pycocoevalcap.eval.COCOEvalCap.evaluate`` does (``tests/test_captioning_metrics.py`` checks the numbers
against it). The package's ``Cider`` scorer is CIDEr-D (Gaussian length penalty, sigma 6; hypothesis
counts clipped to the reference's; x10), so the key is ``cider_d``.

SPICE (and SPIDEr, the mean of CIDEr-D and SPICE) needs Stanford CoreNLP 3.6.0 and its models jar in
``pycocoevalcap/spice/lib``, which ``pycocoevalcap`` downloads on first use. They cannot be downloaded
here; :func:`spice_available` says whether they are present and :func:`caption_scores` computes SPICE
only then: otherwise the result has no ``spice``/``spider`` keys and lists them under ``unavailable``.
Nothing is estimated in their place.

:func:`embedding_similarity` is the mean cosine similarity between a hypothesis and its references as
sentence embeddings of all-MiniLM-L6-v2 (offline): a sentence-embedding similarity, named for what it is.
It is **not** FENSE (which also runs a fluency-error detector and another sentence model).

:func:`diversity` is what the seed project reported: the vocabulary size of the generated captions, the
share of distinct captions, and the share of captions not found among the training captions (novel).
"""

from __future__ import annotations

import contextlib
import functools
import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auralm.core.errors import ConfigError, ToolMissingError

METRICS = ("bleu", "meteor", "rouge_l", "cider_d")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def _package_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__.py, no __file__
    if spec is None or not spec.submodule_search_locations:
        raise ToolMissingError("captioning metrics need pycocoevalcap (pip install 'auralm[caption]')")
    return Path(list(spec.submodule_search_locations)[0])


def _check_java() -> None:
    if shutil.which("java") is None:
        raise ToolMissingError("METEOR and the PTB tokenizer of pycocoevalcap run on Java: install a JRE "
                               "(Debian: apt-get install default-jre-headless)")


@functools.lru_cache(maxsize=1)
def _meteor() -> Any:
    """One METEOR scorer per process: a Java process that loads its paraphrase table once (seconds), reused."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    from auralm.hub import load_text_encoder

    return load_text_encoder("all-minilm-l6-v2")


def spice_available() -> bool:
    """Whether SPICE can run: Stanford CoreNLP 3.6.0 and its models jar are in pycocoevalcap/spice/lib."""
    lib = _package_dir() / "spice" / "lib"
    return all((lib / jar).is_file() for jar in SPICE_JARS)


def _inputs(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[dict, dict]:
    if len(hyps) != len(refs):
        raise ConfigError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    if not hyps:
        raise ConfigError("no captions to score")
    for i, (h, r) in enumerate(zip(hyps, refs)):
        if not isinstance(h, str):
            raise ConfigError(f"hypothesis {i} is not a string: {h!r}")
        if not r or not all(isinstance(x, str) and x.strip() for x in r):
            raise ConfigError(f"item {i} needs at least one non-empty reference caption, got {r!r}")
    gts = {i: [{"caption": c} for c in r] for i, r in enumerate(refs)}
    res = {i: [{"caption": h}] for i, h in enumerate(hyps)}
    return gts, res


def tokenize(captions: dict[Any, list[dict[str, str]]]) -> dict[Any, list[str]]:
    """pycocoevalcap's PTB tokenizer (lower case, punctuation removed) over ``{id: [{"caption": ...}]}``."""
    _check_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with contextlib.redirect_stdout(io.StringIO()):
        return PTBTokenizer().tokenize(captions)


def caption_scores(hyps: Sequence[str], refs: Sequence[Sequence[str]], metrics: Sequence[str] = METRICS,
                   per_item: bool = False) -> dict[str, Any]:
    """Corpus scores of ``hyps[i]`` against ``refs[i]``: ``bleu_1..4``, ``meteor``, ``rouge_l``, ``cider_d``
    (+ ``spice`` and ``spider`` when :func:`spice_available`), ``n`` and ``unavailable``; with ``per_item``
    also ``items``: the per-caption scores."""
    unknown = sorted(set(metrics) - set(METRICS) - {"spice"})
    if unknown:
        raise ConfigError(f"unknown caption metric(s) {unknown}; valid: {', '.join(METRICS)}, spice")
    _package_dir()
    gts, res = _inputs(hyps, refs)
    gts, res = tokenize(gts), tokenize(res)
    out: dict[str, Any] = {"n": len(hyps), "unavailable": []}
    items: dict[str, list[float]] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        if "bleu" in metrics:
            from pycocoevalcap.bleu.bleu import Bleu

            score, scores = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                out[f"bleu_{n + 1}"] = float(score[n])
                items[f"bleu_{n + 1}"] = [float(x) for x in scores[n]]
        if "meteor" in metrics:

            score, scores = _meteor().compute_score(gts, res)
            out["meteor"], items["meteor"] = float(score), [float(x) for x in scores]
        if "rouge_l" in metrics:
            from pycocoevalcap.rouge.rouge import Rouge

            score, scores = Rouge().compute_score(gts, res)
            out["rouge_l"], items["rouge_l"] = float(score), [float(x) for x in scores]
        if "cider_d" in metrics:
            from pycocoevalcap.cider.cider import Cider

            score, scores = Cider().compute_score(gts, res)
            out["cider_d"], items["cider_d"] = float(score), [float(x) for x in scores]
    if spice_available():
        from pycocoevalcap.spice.spice import Spice

        score, scores = Spice().compute_score(gts, res)
        out["spice"], items["spice"] = float(score), [float(x["All"]["f"]) for x in scores]
        if "cider_d" in out:
            out["spider"] = (out["cider_d"] + out["spice"]) / 2
    else:
        out["unavailable"] = ["spice", "spider"]
        out["unavailable_reason"] = (f"SPICE needs {' and '.join(SPICE_JARS)} in pycocoevalcap/spice/lib "
                                     "(downloaded by pycocoevalcap on first use; not downloadable here)")
    if per_item:
        out["items"] = items
    return out


def diversity(hyps: Sequence[str], train_captions: Sequence[str] = ()) -> dict[str, float]:
    """``vocab_size`` (distinct words in the hypotheses), ``distinct`` (share of distinct captions) and, given
    the training captions, ``novel`` (share of hypotheses that are none of them), on lower-cased words."""
    def norm(s: str) -> str:
        return " ".join("".join(ch if ch.isalnum() or ch.isspace() else " " for ch in s.lower()).split())

    if not hyps:
        raise ConfigError("no captions to measure")
    normed = [norm(h) for h in hyps]
    out = {"vocab_size": float(len({w for h in normed for w in h.split()})),
           "distinct": len(set(normed)) / len(normed)}
    if train_captions:
        seen = {norm(c) for c in train_captions}
        out["novel"] = sum(h not in seen for h in normed) / len(normed)
    return out


def embedding_similarity(hyps: Sequence[str], refs: Sequence[Sequence[str]], model: Any = None,
                         tokenizer: Any = None) -> float:
    """Mean over items of the mean cosine similarity between the hypothesis and each reference, as
    all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised). Not FENSE: see the module doc."""
    from auralm.hub import encode_sentences

    _inputs(hyps, refs)
    if model is None:
        model, tokenizer = _minilm()
    flat = [r for rs in refs for r in rs]
    h = encode_sentences(model, tokenizer, [x or " " for x in hyps])  # N, D
    r = encode_sentences(model, tokenizer, flat)  # sum(refs), D
    total, k = 0.0, 0
    for i, rs in enumerate(refs):
        total += float((r[k : k + len(rs)] @ h[i]).mean())
        k += len(rs)
    return total / len(hyps)


__all__ = ["METRICS", "caption_scores", "diversity", "embedding_similarity", "spice_available", "tokenize"]
