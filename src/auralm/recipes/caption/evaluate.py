"""S2 evaluation: captions of held-out playlists and tracks, scored with the reference COCO metrics, beside
the controls that show what the model uses.

:func:`evaluate` returns (and :func:`write_eval` writes) a dict with, for held-out playlists:

* ``model``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, MiniLM similarity, diversity;
* ``nearest_neighbour``: the first caption of the training playlist closest in audio-embedding space (cosine
  of the mean track vectors): a baseline that needs no LM;
* ``shuffled_<branch>``: the same model with that branch taken from another playlist (a fixed derangement);
  ``shuffled_all``: every branch from another playlist;
* ``tracks``: for held-out single tracks, each attribute the caption names (instrument, tempo word, mode)
  checked against the clip's parameters (accuracy per attribute; a caption that names none or several
  counts as wrong), and the same for shuffled tracks;

and beside them the hypotheses and references each score was computed from (``captions``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.io import atomic_write_json


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` with no fixed point (n >= 2): item i gets another item's inputs."""
    if n < 2:
        return list(range(n))
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return [int(x) for x in p]


def shuffle_branches(examples: list[dict[str, Any]], branches: list[str], seed: int = 0) -> list[dict[str, Any]]:
    """Copies of ``examples`` whose ``branches`` rows come from another example (one derangement)."""
    perm = derangement(len(examples), seed)
    return [{**e, "rows": {b: (examples[perm[i]]["rows"][b] if b in branches else r) for b, r in e["rows"].items()}}
            for i, e in enumerate(examples)]


def nearest_neighbour(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> list[str]:
    """For each test playlist, the first caption of the training playlist whose mean audio vector is closest (cosine)."""
    import torch

    def mean_vec(e: dict[str, Any]) -> torch.Tensor:
        v = e["rows"]["audio"].mean(0)
        return v / v.norm().clamp(min=1e-9)

    a = torch.stack([mean_vec(e) for e in train])  # N_train, D
    b = torch.stack([mean_vec(e) for e in test])  # N_test, D
    best = (b @ a.T).argmax(1).tolist()
    return [train[i]["captions"][0] for i in best]


def score(hyps: list[str], refs: list[list[str]], train_captions: list[str], similarity: bool = True) -> dict[str, Any]:
    """COCO metrics + diversity (+ the MiniLM similarity) of ``hyps`` against ``refs``."""
    from auralm.metrics.captioning import caption_scores, diversity, embedding_similarity

    out = caption_scores(hyps, refs)
    out.update(diversity(hyps, train_captions))
    if similarity:
        out["minilm_similarity"] = embedding_similarity(hyps, refs)
    return out


def track_attribute_accuracy(captions: list[str], params: list[dict[str, Any]]) -> dict[str, float]:
    """Per attribute, the share of captions naming exactly the clip's value."""
    from auralm.data.music import caption_attributes

    found = [caption_attributes(c) for c in captions]
    return {k: float(np.mean([f[k] == p[k] for f, p in zip(found, params)])) for k in ("instrument", "tempo_word", "mode")}


def evaluate(pipe: Any, examples: dict[str, Any], split: str = "test", gen: Any = None, controls: bool = True,
             max_tracks: int = 0, similarity: bool = True, seed: int = 0) -> dict[str, Any]:
    """Everything the module docstring lists, on ``examples[split]`` (playlists and tracks)."""
    branches = list(pipe.model.config.branches)
    test = examples[split]["playlists"]
    train = examples["train"]["playlists"]
    refs = [e["captions"] for e in test]
    train_caps = [c for e in train for c in e["captions"]] + [c for e in examples["train"]["tracks"] for c in e["captions"]]
    hyps: dict[str, list[str]] = {"model": pipe.caption_examples(test, gen)}
    results: dict[str, Any] = {"split": split, "n_playlists": len(test)}
    results["model"] = score(hyps["model"], refs, train_caps, similarity)
    if "audio" in branches:
        hyps["nearest_neighbour"] = nearest_neighbour(train, test)
        results["nearest_neighbour"] = score(hyps["nearest_neighbour"], refs, train_caps, similarity)
    if controls:
        for b in branches:
            hyps[f"shuffled_{b}"] = pipe.caption_examples(shuffle_branches(test, [b], seed), gen)
            results[f"shuffled_{b}"] = score(hyps[f"shuffled_{b}"], refs, train_caps, similarity)
        hyps["shuffled_all"] = pipe.caption_examples(shuffle_branches(test, branches, seed), gen)
        results["shuffled_all"] = score(hyps["shuffled_all"], refs, train_caps, similarity)
    tracks = examples[split]["tracks"][: max_tracks or None]
    if tracks:
        caps = pipe.caption_examples(tracks, gen)
        params = [t["params"] for t in tracks]
        results["tracks"] = {"n": len(tracks), "accuracy": track_attribute_accuracy(caps, params),
                             **score(caps, [t["captions"] for t in tracks], train_caps, similarity)}
        hyps["tracks"] = caps
        if controls:
            hyps["tracks_shuffled"] = pipe.caption_examples(shuffle_branches(tracks, ["audio"], seed), gen)
            results["tracks"]["accuracy_shuffled_audio"] = track_attribute_accuracy(hyps["tracks_shuffled"], params)
    results["captions"] = {
        "ids": [e["id"] for e in test], "references": refs, "hypotheses": hyps,
        "track_ids": [t["id"] for t in tracks], "track_references": [t["captions"] for t in tracks],
    }
    return results


def headline(results: dict[str, Any]) -> dict[str, float]:
    """CIDEr-D of every system in ``results`` (for reports)."""
    return {k: v["cider_d"] for k, v in results.items() if isinstance(v, dict) and "cider_d" in v}


def write_eval(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, json.loads(json.dumps(results, default=float)))
    return path
