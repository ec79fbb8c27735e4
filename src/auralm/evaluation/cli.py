"""``auralm eval --checkpoint DIR --manifest FILE [--out FILE.json] [--split test] [--limit N]``.

:func:`evaluate` transcribes every chosen row and scores it after Whisper's English normalisation:

* ``wer``, ``cer``, ``n`` and ``hypotheses`` (``{id: text}``);
* ``wer_shuffled_audio`` / ``cer_shuffled_audio``: each row's audio replaced by another row's audio (a
  deterministic derangement: no row keeps its own), scored against the row's own text. A model that
  uses the audio gets far worse; one that ignores it scores the same;
* ``whisper_wer`` / ``whisper_cer``: Whisper's own decoder on the same clips when the model's encoder is
  a Whisper model (None otherwise, or when its weights cannot be loaded; ``--no-whisper`` skips it);
* ``generation``: the decoding settings. Greedy by default, with the loop guard and each hypothesis
  capped at 2 tokens per audio position the LM reads, plus 8 (``--max-new-per-audio``); ``--copy-bias``
  favours the tokens a ``feed=ctc_soft`` model reads as audio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from auralm.data.collate import check_rows, select_split
from auralm.data.manifest import Row, read_manifest
from auralm.errors import AuralmError, ManifestError
from auralm.evaluation.metrics import cer, wer
from auralm.io import atomic_write_json


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


def _score(refs: list[str], hyps: list[str], metric: Any) -> float | None:
    try:
        return metric(refs, hyps)
    except ValueError:  # every reference empty after normalisation
        return None


def evaluate(model: Any, manifest: str | Path | list[Row], split: str | None = "test", limit: int | None = None,
             gen: Any = None, prompt: str | None = None, whisper: bool = True, batch_size: int = 8,
             seed: int = 0) -> dict[str, Any]:
    """Score ``model`` (an AudioLM) on the rows of ``split`` (None: all rows); see the module docstring."""
    from auralm.data.audio import load_audio
    from auralm.inference import transcribe
    from auralm.inference.generate import GenerationConfig

    gen = gen or GenerationConfig(max_new_per_audio=TRANSCRIPT_TOKENS_PER_AUDIO)
    rows = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    what = str(manifest) if isinstance(manifest, (str, Path)) else "manifest"
    rows = select_split(rows, split, what)
    rows, _ = check_rows(rows, None, need_text=True, what=f"{what} (split {split})" if split else what)
    if limit:
        rows = rows[:limit]
    wavs = [load_audio(r.audio_path(), 16000, r.start, r.end)[0] for r in rows]
    refs = [r.text or "" for r in rows]
    hyps = transcribe(model, wavs, prompt, gen, batch_size=batch_size, desc="eval")
    result: dict[str, Any] = {"n": len(rows), "split": split, "wer": _score(refs, hyps, wer),
                              "cer": _score(refs, hyps, cer), "generation": gen.to_dict()}
    if len(rows) >= 2:
        perm = derangement(len(rows), seed)
        shuffled = transcribe(model, [wavs[j] for j in perm], prompt, gen, batch_size=batch_size, desc="eval shuffled")
        result["wer_shuffled_audio"] = _score(refs, shuffled, wer)
        result["cer_shuffled_audio"] = _score(refs, shuffled, cer)
    else:
        result["wer_shuffled_audio"] = result["cer_shuffled_audio"] = None
    result["whisper_wer"] = result["whisper_cer"] = None
    encoder = model.frozen_parts()["encoder"]["name"]
    if whisper and encoder.startswith("whisper-") and "random" not in encoder:
        from auralm.evaluation.whisper_baseline import WhisperBaseline

        try:
            baseline = WhisperBaseline(encoder)
        except AuralmError as exc:
            print(f"[eval] no Whisper baseline: {exc}", file=sys.stderr)
        else:
            whisper_hyps = baseline.transcribe(wavs, batch_size=batch_size, desc="whisper baseline")
            result["whisper_wer"] = _score(refs, whisper_hyps, wer)
            result["whisper_cer"] = _score(refs, whisper_hyps, cer)
            result["whisper_model"] = encoder
    result["hypotheses"] = {r.id: h for r, h in zip(rows, hyps)}
    return result


def eval_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm eval", description="WER/CER of a checkpoint on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its latest)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest with audio and reference text")
    parser.add_argument("--out", help="JSON file for the results (default: print them)")
    parser.add_argument("--split", default="test", help="split to score (default test; 'all' for every row)")
    parser.add_argument("--limit", type=int, help="score at most this many rows (first in manifest order)")
    parser.add_argument("--prompt", help="instruction (default: the model's prompt)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate call")
    parser.add_argument("--no-whisper", action="store_true", help="skip the Whisper baseline")
    parser.add_argument("--max-new-tokens", type=int, help="longest hypothesis in tokens")
    parser.add_argument("--max-new-per-audio", type=float, default=TRANSCRIPT_TOKENS_PER_AUDIO,
                        help="cap each hypothesis at this many tokens per audio position the LM reads, plus 8 "
                             f"(default {TRANSCRIPT_TOKENS_PER_AUDIO}; 0: no cap)")
    parser.add_argument("--copy-bias", type=float, default=0.0,
                        help="logit bonus on the tokens the LM reads as audio (feed=ctc_soft checkpoints; 0: off)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        raise ManifestError(f"--limit must be positive, got {args.limit}")
    split = None if args.split == "all" else args.split
    # bad rows (missing or empty audio, no text) and empty splits fail before any weights load
    check_rows(select_split(read_manifest(args.manifest), split, args.manifest), None, what=args.manifest)

    from auralm.inference import load_checkpoint
    from auralm.inference.generate import GenerationConfig

    gen = GenerationConfig.from_dict({"max_new_per_audio": args.max_new_per_audio, "copy_bias": args.copy_bias,
                                      **({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})})
    model = load_checkpoint(args.checkpoint)
    result = {"checkpoint": str(model.checkpoint_dir), "manifest": str(args.manifest),
              **evaluate(model, args.manifest, split, args.limit, gen, args.prompt, not args.no_whisper,
                         args.batch_size)}
    summary = ", ".join(f"{k} {result[k]:.4f}" for k in ("wer", "wer_shuffled_audio", "whisper_wer")
                        if result.get(k) is not None)
    print(f"[eval] n={result['n']}: {summary}", file=sys.stderr)
    if args.out:
        atomic_write_json(args.out, result)
    else:
        import json

        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
