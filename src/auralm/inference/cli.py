"""``auralm generate --checkpoint DIR --audio FILE [--prompt TEXT] [--strategy ...]``.

Prints only the generated text on stdout (one line per ``--audio``); everything else goes to stderr,
so ``text=$(auralm generate ...)`` captures the answer alone.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


def generate_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm generate", description="Transcribe or answer about audio.")
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
    args = parser.parse_args(argv)

    import torch

    from auralm.inference import load_checkpoint, transcribe
    from auralm.inference.generate import GenerationConfig

    given = {"strategy": args.strategy, "num_beams": args.num_beams, "temperature": args.temperature,
             "top_k": args.top_k, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    gen = GenerationConfig.from_dict({k: v for k, v in given.items() if v is not None})
    with contextlib.redirect_stdout(sys.stderr):  # library chatter never reaches stdout
        torch.manual_seed(args.seed)
        model = load_checkpoint(args.checkpoint)
        texts = transcribe(model, args.audio, args.prompt, gen, long_audio=args.long_audio,
                           context_tokens=args.context_tokens, chunk_seconds=args.chunk_seconds)
    for text in texts:
        print(text)
    return 0
