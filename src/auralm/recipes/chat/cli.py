"""The ``auralm chat`` commands: ``synth``, ``train``, ``eval``, ``generate``, ``export`` and ``demo``.
Command functions only: each parses its flags and calls the library (:mod:`.data`, :mod:`.train`,
:mod:`.evaluate`, :mod:`.pipeline`, :mod:`.demo`).

``auralm chat generate --checkpoint DIR [--image A.png ...] [--audio B.wav ...] [--prompt TEXT]`` prints the
reply alone on stdout; the prompt is optional (a spoken question alone is enough).
"""

from __future__ import annotations

import argparse
import sys

from auralm.core.config import apply_overrides, comma_list, load_preset, preset_names


def synth_cli(argv: list[str]) -> int:
    from auralm.recipes.chat.data import cli

    return cli(argv)


def train_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm chat train", description="Train the chat model (stage 1 or 2).")
    parser.add_argument("--preset", required=True, help=f"preset name or YAML file (e.g. "
                        f"{', '.join(n for n in preset_names() if n.startswith('chat'))})")  # fmt: skip
    parser.add_argument("--out", help="run folder (overrides the preset's `out`)")
    parser.add_argument("--dataset", help="folder of `auralm chat synth` (same as data.dataset=...)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as optim.lr=3e-4 optim.max_steps=200")
    args = parser.parse_args(argv)
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.train import train

    cfg = apply_overrides(TrainConfig.from_dict(load_preset(args.preset)), list(args.overrides))
    if args.out:
        cfg = cfg.replace(out=args.out)
    if args.dataset:
        cfg = cfg.replace(data=cfg.data.replace(dataset=args.dataset))
    final = train(cfg)
    print(f"[train] checkpoint: {final}", file=sys.stderr)
    return 0


def eval_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm chat eval", description="Exact-match accuracy per question type on "
                                     "held-out scenes: real / another scene's / no image, typed / spoken questions, "
                                     "right / shuffled sound, held-out colour-shape combinations apart, chance beside.")  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--dataset", required=True, help="folder of `auralm chat synth`")
    parser.add_argument("--split", default="test", help="split evaluated (default test)")
    parser.add_argument("--per-type", type=int, default=40, help="questions per type (default 40; 0: all)")
    parser.add_argument("--types", default="", help="question types asked, comma-separated (default: all), e.g. cross,sound")
    parser.add_argument("--conditions", default="", help="conditions run besides typed, comma-separated (default: all), "
                                                         "e.g. shuffled_sound")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="questions decoded at once")
    parser.add_argument("--out", help="write the report here as JSON (default: stdout)")
    args = parser.parse_args(argv)
    import json

    from auralm.recipes.chat.evaluate import evaluate
    from auralm.recipes.chat.pipeline import ChatPipeline

    pipe = ChatPipeline.from_checkpoint(args.checkpoint)
    report = evaluate(pipe, args.dataset, args.split, per_type=args.per_type, batch_size=args.batch_size,
                      conditions=tuple(comma_list(args.conditions)) or None,
                      types=tuple(comma_list(args.types)) or None)  # fmt: skip
    text = json.dumps(report, indent=2)
    if args.out:
        from auralm.core.io import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    else:
        print(text)
    return 0


def generate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm chat generate", description="Answer about images and audio clips. "
                                     "The reply alone goes to stdout.")  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--audio", action="append", default=[], help="audio file: a spoken question or a sound (repeatable)")
    parser.add_argument("--prompt", default="", help="typed text of the turn (optional with audio)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    from auralm.recipes.chat.pipeline import ChatPipeline

    pipe = ChatPipeline.from_checkpoint(args.checkpoint)
    print(pipe.reply(images=args.image, audio=args.audio, prompt=args.prompt, max_new_tokens=args.max_new_tokens))
    return 0


def export_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm chat export", description="Merge the LoRA adapters into the LM and "
                                     "write a plain Hugging Face model folder plus the projectors.")  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    from auralm.recipes.chat.pipeline import ChatPipeline

    out = ChatPipeline.from_checkpoint(args.checkpoint).export(args.out)
    print(f"[export] wrote {out}", file=sys.stderr)
    return 0


def demo_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm chat demo", description="The whole S3 chain on the embedded default: "
                                     "synth, stage 1, stage 2, evaluation, report (at most 30 minutes on a 2-core CPU).")  # fmt: skip
    parser.add_argument("--out", default="runs/chat-demo", help="output folder (default runs/chat-demo)")
    parser.add_argument("--preset", default="chat-demo", help="demo preset (default chat-demo)")
    parser.add_argument("overrides", nargs="*", help="overrides of the demo preset")
    args = parser.parse_args(argv)
    from auralm.recipes.chat.demo import run_demo

    run_demo(args.out, args.preset, list(args.overrides))
    return 0
