"""``auralm hear eval --checkpoint DIR --manifest FILE [--out FILE.json] [--split test] [--limit N]``.

:func:`evaluate` transcribes every chosen row and scores it after Whisper's English normalisation:

* ``wer``, ``cer``, ``n`` and ``hypotheses`` (``{id: text}``);
* ``wer_shuffled_audio`` / ``cer_shuffled_audio``: each row's audio replaced by another row's audio (a
  deterministic derangement: no row keeps its own), scored against the row's own text. A model that
  uses the audio gets far worse; one that ignores it scores the same;
* ``lm_wer`` / ``lm_cer``, when the decoding rescores a head's N-best (``--rescore-beam``): the same
  clips transcribed by the LM itself (the same settings with ``rescore_beam`` 0), so both are reported;
* ``whisper_wer`` / ``whisper_cer``: Whisper's own decoder on the same clips when the model's encoder is
  a Whisper model (None otherwise, or when its weights cannot be loaded; ``--no-whisper`` skips it);
* ``groups``: the same figures per group of rows (:func:`row_groups`: ``text_source=NAME`` from the
  rows' ``meta.text_source``, ``held_out_voice=yes|no`` from ``meta.held_out_voice``), when a manifest
  has those fields (``auralm synth speech`` writes them);
* ``generation``: the decoding settings. Greedy by default, with the loop guard and each hypothesis
  capped at 2 tokens per audio position the LM reads, plus 8 (``--max-new-per-audio``); ``--copy-bias``
  favours the tokens a ``feed=ctc_soft`` model reads as audio.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from auralm.core.errors import AuralmError
from auralm.data.collate import check_rows, select_split
from auralm.data.manifest import Row, read_manifest
from auralm.metrics.text import cer, wer


def derangement(n: int, seed: int = 0) -> list[int]:
    """A permutation of ``range(n)`` with no fixed point (n >= 2): shuffle, then each takes its successor."""
    if n < 2:
        raise ValueError("a derangement needs at least two items")
    order = np.random.default_rng(seed).permutation(n)
    perm = [0] * n
    for k in range(n):
        perm[int(order[k])] = int(order[(k + 1) % n])
    return perm


# a transcript is about as long as its audio: at most 2 tokens per audio position the LM reads (+8)
TRANSCRIPT_TOKENS_PER_AUDIO = 2.0


def row_groups(rows: list[Row]) -> dict[str, list[int]]:
    """Indices of ``rows`` per group: ``text_source=NAME`` and ``held_out_voice=yes|no`` (from ``meta``)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.meta.get("text_source"):
            groups.setdefault(f"text_source={r.meta['text_source']}", []).append(i)
    for i, r in enumerate(rows):
        if "held_out_voice" in r.meta:
            groups.setdefault(f"held_out_voice={'yes' if r.meta['held_out_voice'] else 'no'}", []).append(i)
    return dict(sorted(groups.items()))


def group_scores(refs: list[str], groups: dict[str, list[int]], **hyps: list[str] | None) -> dict[str, dict[str, Any]]:
    """``{group: {"n", "<name>": WER of hyps[name] on the group's rows, ...}}`` for each list of hypotheses."""
    out = {}
    for name, idx in groups.items():
        sub = [refs[i] for i in idx]
        out[name] = {"n": len(idx), **{k: (_score(sub, [h[i] for i in idx], wer) if h is not None else None)
                                        for k, h in hyps.items()}}  # fmt: skip
    return out


def _score(refs: list[str], hyps: list[str], metric: Any) -> float | None:
    try:
        return metric(refs, hyps)
    except ValueError:  # every reference empty after normalisation
        return None


def evaluate(pipeline: Any, manifest: str | Path | list[Row], split: str | None = "test", limit: int | None = None,
             gen: Any = None, prompt: str | None = None, whisper: bool = True, batch_size: int = 8,
             seed: int = 0) -> dict[str, Any]:
    """Score ``pipeline`` (a :class:`~auralm.recipes.hear.pipeline.HearPipeline`) on the rows of ``split``
    (None: all rows); see the module docstring."""
    from auralm.components.generation import GenerationConfig
    from auralm.data.audio import load_audio

    gen = gen or GenerationConfig(max_new_per_audio=TRANSCRIPT_TOKENS_PER_AUDIO)
    rows = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    what = str(manifest) if isinstance(manifest, (str, Path)) else "manifest"
    rows = select_split(rows, split, what)
    rows, _ = check_rows(rows, None, need_text=True, what=f"{what} (split {split})" if split else what)
    if limit:
        rows = rows[:limit]
    wavs = [load_audio(r.audio_path(), 16000, r.start, r.end)[0] for r in rows]
    refs = [r.text or "" for r in rows]
    hyps = pipeline.transcribe(wavs, prompt, gen, batch_size=batch_size, desc="eval")
    result: dict[str, Any] = {"n": len(rows), "split": split, "wer": _score(refs, hyps, wer),
                              "cer": _score(refs, hyps, cer), "generation": gen.to_dict()}
    if len(rows) >= 2:
        perm = derangement(len(rows), seed)
        shuffled = pipeline.transcribe([wavs[j] for j in perm], prompt, gen, batch_size=batch_size, desc="eval shuffled")
    else:
        shuffled = None
    if shuffled is not None:
        result["wer_shuffled_audio"] = _score(refs, shuffled, wer)
        result["cer_shuffled_audio"] = _score(refs, shuffled, cer)
    else:
        result["wer_shuffled_audio"] = result["cer_shuffled_audio"] = None
    lm_hyps = None
    if gen.rescore_beam:  # beside the rescored transcripts: what the LM writes itself, from the same audio
        lm_hyps = pipeline.transcribe(wavs, prompt, gen.replace(rescore_beam=0), batch_size=batch_size, desc="eval LM")
        result["lm_wer"], result["lm_cer"] = _score(refs, lm_hyps, wer), _score(refs, lm_hyps, cer)
    result["whisper_wer"] = result["whisper_cer"] = None
    whisper_hyps = None
    encoder = pipeline.model.frozen_parts()["encoder"]["name"]
    if whisper and encoder.startswith("whisper-") and "random" not in encoder:
        from auralm.components.asr import WhisperBaseline

        try:
            baseline = WhisperBaseline(encoder)
        except AuralmError as exc:
            print(f"[eval] no Whisper baseline: {exc}", file=sys.stderr)
        else:
            whisper_hyps = baseline.transcribe(wavs, batch_size=batch_size, desc="whisper baseline")
            result["whisper_wer"] = _score(refs, whisper_hyps, wer)
            result["whisper_cer"] = _score(refs, whisper_hyps, cer)
            result["whisper_model"] = encoder
    groups = row_groups(rows)
    if len(groups) > 1:
        result["groups"] = group_scores(refs, groups, wer=hyps, wer_shuffled_audio=shuffled, lm_wer=lm_hyps,
                                        whisper_wer=whisper_hyps)
    result["hypotheses"] = {r.id: h for r, h in zip(rows, hyps)}
    return result
