"""The ``auralm hear`` commands: ``train``, ``generate``, ``eval`` and ``demo``. Command functions only:
each parses its flags and calls the library (:mod:`.train`, :mod:`.pipeline`, :mod:`.evaluate`, :mod:`.demo`).

``auralm hear train --preset NAME [--out DIR] [key=value ...]``: resolve a preset, save config.yaml, train.


Resuming (``resume=``): ``auto`` (default) continues the run in ``--out`` when its latest checkpoint was
made with the same config (run-length and logging fields may differ: ``optim.max_steps``,
``optim.max_minutes``, ``optim.stop_after``, ``log_every`` ...), and refuses an ``--out`` holding a run
with another config; ``true`` requires a checkpoint to resume; ``false`` refuses an ``--out`` already used.
A killed run is continued by running the same command again.

The same command runs on N processes: ``accelerate launch --multi_gpu --num_processes 2 -m auralm hear train ...``
(on a CPU-only machine the workers form a gloo group; ``torchrun --nproc_per_node 2 -m auralm hear train ...``
works too). ``accelerate launch --cpu --num_processes 2`` starts a single process unless mpirun is set
up (accelerate's multi-CPU launcher); the command warns when it sees that.

``auralm hear generate``: ``auralm hear generate --checkpoint DIR --audio FILE [--prompt TEXT] [--strategy ...]``.

Prints only the generated text on stdout (one line per ``--audio``); everything else goes to stderr,
so ``text=$(auralm hear generate ...)`` captures the answer alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from auralm.core.config import apply_overrides, load_preset, preset_names


def train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm hear train", description="Train an audio LM (stage 1 or 2).")
    parser.add_argument("--preset", required=True, help=f"preset name or YAML file (e.g. {', '.join(n for n in preset_names() if n.startswith('hear'))})")
    parser.add_argument("--out", help="run folder (overrides the preset's `out`)")
    parser.add_argument("--manifest", help="training manifest (same as data.manifest=...)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as optim.lr=3e-4 optim.max_steps=200")
    args = parser.parse_args(argv)
    from auralm.recipes.hear.config import TrainConfig
    from auralm.recipes.hear.train import train

    cfg = apply_overrides(TrainConfig.from_dict(load_preset(args.preset)), list(args.overrides))
    if args.out:
        cfg = cfg.replace(out=args.out)
    if args.manifest:
        cfg = cfg.replace(data=cfg.data.replace(manifest=args.manifest))
    if os.environ.get("MASTER_ADDR") and not os.environ.get("WORLD_SIZE") and os.environ.get("ACCELERATE_USE_CPU") == "True":
        print("[train] warning: `accelerate launch --cpu --num_processes N` started ONE process (accelerate needs "
              "mpirun for that); on a CPU-only machine use `accelerate launch --multi_gpu --num_processes N` "
              "or `torchrun --nproc_per_node N -m auralm hear train ...`", file=sys.stderr)
    final = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[train] checkpoint: {final}", file=sys.stderr)
    return 0


def _rescore_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rescore-beam", type=int,
                        help="pick among a head's this many best transcripts by the frozen LM's prior instead of "
                             "letting the LM write (default: the checkpoint's generation_config.json, else 0: off)")
    parser.add_argument("--rescore-weight", type=float, help="--rescore-beam: weight of the LM's log-prob")
    parser.add_argument("--rescore-length-bonus", type=float, help="--rescore-beam: bonus per transcript token or word")
    parser.add_argument("--rescore-head", choices=["ctc", "phones"],
                        help="--rescore-beam: the N-best of the word CTC head (ctc) or of the phone head through its "
                             "lexicon (phones)")
    parser.add_argument("--phone-prior-weight", type=float,
                        help="--rescore-head phones: weight of the lexicon words' unigram prior inside the beam")


def _rescore_given(args: argparse.Namespace) -> dict[str, float | str | None]:
    """The ``GenerationConfig`` fields of :func:`_rescore_flags` (None where a flag was not given)."""
    return {"rescore_beam": args.rescore_beam, "rescore_weight": args.rescore_weight,
            "rescore_length_bonus": args.rescore_length_bonus, "rescore_head": args.rescore_head,
            "phone_prior_weight": args.phone_prior_weight}


def generate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm hear generate", description="Transcribe or answer about audio.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its latest)")
    parser.add_argument("--audio", required=True, action="append", help="audio file (repeat for several)")
    parser.add_argument("--prompt", help="instruction (default: the model's prompt)")
    parser.add_argument("--strategy", choices=["greedy", "beam", "sample"], help="decoding (default greedy)")
    parser.add_argument("--num-beams", type=int, help="beams for --strategy beam")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument("--top-k", type=int, help="sample from the k most likely tokens")
    parser.add_argument("--top-p", type=float, help="sample from the smallest set with this probability mass")
    parser.add_argument("--max-new-tokens", type=int, help="longest answer in tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0)")
    parser.add_argument("--long-audio", choices=["chunks", "context"], default="chunks",
                        help="audio longer than the encoder takes: transcribe each chunk, or one context")
    parser.add_argument("--context-tokens", type=int, default=1500, help="audio-token budget of --long-audio context")
    parser.add_argument("--chunk-seconds", type=float, help="cut audio into chunks of at most this (default: encoder max)")
    _rescore_flags(parser)
    args = parser.parse_args(argv)

    import torch

    from auralm.recipes.hear.pipeline import HearPipeline

    given = {"strategy": args.strategy, "num_beams": args.num_beams, "temperature": args.temperature,
             "top_k": args.top_k, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, **_rescore_given(args)}
    gen = {k: v for k, v in given.items() if v is not None}  # over the checkpoint's own decoding settings
    with contextlib.redirect_stdout(sys.stderr):  # library chatter never reaches stdout
        torch.manual_seed(args.seed)
        pipe = HearPipeline.from_checkpoint(args.checkpoint)
        texts = pipe.transcribe(args.audio, args.prompt, gen, long_audio=args.long_audio,
                                context_tokens=args.context_tokens, chunk_seconds=args.chunk_seconds)
    for text in texts:
        print(text)
    return 0


def eval_cli(argv: list[str]) -> int:
    from auralm.core.errors import ManifestError
    from auralm.core.io import atomic_write_json
    from auralm.data.collate import check_rows, select_split
    from auralm.data.manifest import read_manifest
    from auralm.recipes.hear.evaluate import TRANSCRIPT_TOKENS_PER_AUDIO, evaluate

    parser = argparse.ArgumentParser(prog="auralm hear eval", description="WER/CER of a checkpoint on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its latest)")
    parser.add_argument("--manifest", required=True, help="JSONL manifest with audio and reference text")
    parser.add_argument("--out", help="JSON file for the results (default: print them)")
    parser.add_argument("--split", default="test", help="split to score (default test; 'all' for every row)")
    parser.add_argument("--limit", type=int, help="score at most this many rows (first in manifest order)")
    parser.add_argument("--prompt", help="instruction (default: the model's prompt)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per generate call")
    parser.add_argument("--no-whisper", action="store_true", help="skip the Whisper baseline")
    parser.add_argument("--max-new-tokens", type=int, help="longest hypothesis in tokens")
    parser.add_argument("--max-new-per-audio", type=float,
                        help="cap each hypothesis at this many tokens per audio position the LM reads, plus 8 "
                             f"(default: the checkpoint's generation_config.json, else {TRANSCRIPT_TOKENS_PER_AUDIO}; "
                             "0: no cap)")
    parser.add_argument("--copy-bias", type=float,
                        help="logit bonus on the tokens the LM reads as audio (feed=ctc_soft checkpoints; default: "
                             "the checkpoint's generation_config.json, else 0: off)")
    _rescore_flags(parser)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        raise ManifestError(f"--limit must be positive, got {args.limit}")
    split = None if args.split == "all" else args.split
    # bad rows (missing or empty audio, no text) and empty splits fail before any weights load
    check_rows(select_split(read_manifest(args.manifest), split, args.manifest), None, what=args.manifest)

    from auralm.components.generation import GenerationConfig
    from auralm.recipes.hear.pipeline import HearPipeline

    pipe = HearPipeline.from_checkpoint(args.checkpoint)
    # the checkpoint's own decoding settings (what its report scored), else greedy capped at 2 tokens per audio
    # position; flags given override them
    base = pipe.generation if pipe.generation_saved else GenerationConfig(max_new_per_audio=TRANSCRIPT_TOKENS_PER_AUDIO)
    given = {"max_new_per_audio": args.max_new_per_audio, "copy_bias": args.copy_bias, "max_new_tokens": args.max_new_tokens,
             **_rescore_given(args)}
    gen = GenerationConfig.from_dict({**base.to_dict(), **{k: v for k, v in given.items() if v is not None}})
    result = {"checkpoint": str(pipe.checkpoint_dir), "manifest": str(args.manifest),
              **evaluate(pipe, args.manifest, split, args.limit, gen, args.prompt, not args.no_whisper,
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


def demo_cli(argv: list[str]) -> int:
    import json

    from auralm.recipes.hear import demo
    from auralm.recipes.hear.demo import DemoConfig, run

    parser = argparse.ArgumentParser(prog="auralm demo", description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", help="preset name or YAML file (default: demo)")
    parser.add_argument("--out", help="output folder (default: runs/demo)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. n_clips=600 stage1_preset=my-stage1.yaml")
    args = parser.parse_args(argv)
    cfg = DemoConfig.from_dict(load_preset(args.preset))
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    cfg = apply_overrides(cfg, overrides)
    metrics = run(cfg)
    ev = metrics["eval"]
    print(json.dumps({k: ev.get(k) for k in ("n", "wer", "cer", "wer_shuffled_audio", "whisper_wer")} |
                     {"ctc_wer": metrics.get("ctc_wer"), "seconds": metrics["seconds"]}, indent=2))
    return 0
