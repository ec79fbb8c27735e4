"""The ``auralm caption`` commands: ``synth``, ``train``, ``eval``, ``generate`` and ``demo``. Command functions
only: each parses its flags and calls the library (:mod:`auralm.data.music`, :mod:`.train`, :mod:`.evaluate`,
:mod:`.pipeline`, :mod:`.demo`).

``auralm caption generate --checkpoint DIR --audio a.wav [b.wav ...] [--tags "calm, piano"]`` prints one caption
for the playlist (one file and no tags: a track caption) on stdout; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

from auralm.core.config import comma_list, preset_names


def synth_cli(argv: list[str]) -> int:
    """``auralm caption synth`` = ``auralm synth music``."""
    from auralm.data.music import cli

    return cli(argv)


def train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm caption train", description="Train the S2 captioner.")
    parser.add_argument("--preset", required=True,
                        help=f"preset name or YAML file ({', '.join(n for n in preset_names() if n.startswith('caption'))})")
    parser.add_argument("--out", help="run folder (overrides the preset's `out`)")
    parser.add_argument("--corpus", help="music corpus folder (same as data.corpus=...)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as optim.max_steps=200 model.gate=tanh")
    args = parser.parse_args(argv)
    from auralm.recipes.caption.config import config_from_preset
    from auralm.recipes.caption.train import train

    cfg = config_from_preset(args.preset, args.overrides)
    if args.out:
        cfg = cfg.replace(out=args.out)
    if args.corpus:
        cfg = cfg.replace(data=cfg.data.replace(corpus=args.corpus))
    print(f"[caption train] checkpoint: {train(cfg)}", file=sys.stderr)
    return 0


def _gen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", choices=["greedy", "beam", "sample"], help="decoding (default: the checkpoint's)")
    parser.add_argument("--num-beams", type=int, help="beams for --strategy beam")
    parser.add_argument("--length-penalty", type=float, help="beam: score / length ** this")
    parser.add_argument("--max-new-tokens", type=int, help="longest caption in tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling")


def _gen(pipe, args: argparse.Namespace):
    changes = {k: v for k, v in {"strategy": args.strategy, "num_beams": args.num_beams,
                                 "length_penalty": args.length_penalty, "max_new_tokens": args.max_new_tokens}.items()
               if v is not None}
    return pipe.generation.replace(**changes)


def generate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm caption generate", description="Caption a track or a playlist.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder (its latest)")
    parser.add_argument("--audio", required=True, nargs="+", help="the playlist's audio files (one: a track)")
    parser.add_argument("--tags", default="", help='comma-separated tags, e.g. "calm, organ"')
    parser.add_argument("--metadata", default="", help="comma-separated numbers (the metadata vector)")
    parser.add_argument("--skip-bad", action="store_true", help="skip (and report) files that cannot be decoded")
    _gen_args(parser)
    args = parser.parse_args(argv)
    import torch

    from auralm.core.errors import ConfigError
    from auralm.recipes.caption.pipeline import CaptionPipeline

    torch.manual_seed(args.seed)
    pipe = CaptionPipeline.from_checkpoint(args.checkpoint)
    tags = comma_list(args.tags)
    try:
        metadata = [float(x) for x in comma_list(args.metadata)]
    except ValueError:
        raise ConfigError(f"--metadata: expected comma-separated numbers, got {args.metadata!r}") from None
    text = pipe.caption(args.audio, tags, metadata or None, _gen(pipe, args), skip_bad=args.skip_bad)
    for s in pipe.skipped:
        print(f"[caption generate] skipped {s}", file=sys.stderr)
    print(text)
    return 0


def eval_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm caption eval", description="Score a checkpoint on held-out "
                                     "playlists and tracks, beside a nearest-neighbour baseline and shuffled branches.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or a run folder")
    parser.add_argument("--corpus", help="music corpus (default: the checkpoint's data.corpus)")
    parser.add_argument("--split", default="test", help="split scored (default test)")
    parser.add_argument("--out", help="write the results (with hypotheses and references) to this JSON file")
    parser.add_argument("--no-controls", action="store_true", help="skip the shuffled-branch controls")
    parser.add_argument("--max-tracks", type=int, default=0, help="at most this many tracks (0: all)")
    _gen_args(parser)
    args = parser.parse_args(argv)
    import json

    import yaml

    from auralm.recipes.caption.data import load_examples
    from auralm.recipes.caption.evaluate import evaluate, headline, write_eval
    from auralm.recipes.caption.pipeline import CaptionPipeline
    from auralm.training.checkpoint import resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    saved = yaml.safe_load((ckpt / "config.yaml").read_text()) or {}
    corpus = args.corpus or (saved.get("data") or {}).get("corpus")
    pipe = CaptionPipeline.from_checkpoint(ckpt)
    examples = load_examples(corpus, pipe.featurizer, pipe.model.config, (saved.get("data") or {}).get("cache_dir") or None)
    results = evaluate(pipe, examples, args.split, _gen(pipe, args), controls=not args.no_controls,
                       max_tracks=args.max_tracks)
    if args.out:
        write_eval(results, args.out)
    summary = {"cider_d": headline(results), "track_accuracy": (results.get("tracks") or {}).get("accuracy")}
    print(json.dumps(summary, indent=1))
    return 0


def demo_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm caption demo", description="The S2 chain end to end: synth music, "
                                     "cache features, train, evaluate with controls, gates and data fractions.")
    parser.add_argument("--preset", default="caption-demo", help="demo preset (caption-demo; caption-tiny-demo: a minute)")
    parser.add_argument("--out", help="output folder (default: the preset's)")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo config, e.g. steps=200 fractions=[0.25,1.0]")
    args = parser.parse_args(argv)
    from auralm.recipes.caption.demo import demo_config, run_demo

    cfg = demo_config(args.preset, args.overrides)
    if args.out:
        cfg = cfg.replace(out=args.out)
    run_demo(cfg)
    return 0
