"""The ``auralm`` command: one table from subcommand to the function that runs it.

Each entry names ``module:function``; the module is imported only when its command runs, so
``auralm --help`` stays fast and imports no torch. Each function takes the remaining argv and
returns an exit code. Errors derived from :class:`auralm.core.errors.AuralmError` print one line
(``auralm <cmd>: error: ...``) and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from auralm import __version__
from auralm.core.errors import AuralmError

# subcommand -> (module:function, one-line help). Two-word commands form groups ("synth speech").
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("auralm.recipes.hear.cli:demo_cli", "the main job (S1 hear) end to end on the embedded default"),
    # data tools, shared by every recipe
    "prepare": ("auralm.data.prepare:cli", "pair audio files with transcripts into a manifest"),
    "synth speech": ("auralm.data.synth:cli", "render a synthetic speech corpus with espeak-ng and flite"),
    "synth scenes": ("auralm.data.scenes:cli", "draw scenes of coloured shapes with captions, questions and chats"),
    "synth music": ("auralm.data.music:cli", "render synthetic music tracks and playlists with captions, tags, metadata"),
    "chunk": ("auralm.data.chunk:cli", "cut long audio and its transcript into chunks"),
    "embed": ("auralm.data.embed_cache:cli", "cache audio-encoder outputs for a manifest"),
    "models": ("auralm.hub:cli", "list known model names and where each resolves"),
    # S1 hear
    "hear train": ("auralm.recipes.hear.cli:train_cli", "S1: train an audio LM (--preset NAME)"),
    "hear generate": ("auralm.recipes.hear.cli:generate_cli", "S1: transcribe / answer about audio files"),
    "hear eval": ("auralm.recipes.hear.cli:eval_cli", "S1: WER/CER of a checkpoint on a manifest, with shuffled-audio control"),
    "hear demo": ("auralm.recipes.hear.cli:demo_cli", "S1: the whole chain on the embedded default (= auralm demo)"),
    # S3 chat
    "chat synth": ("auralm.recipes.chat.cli:synth_cli", "S3: build the chat dataset (scenes, spoken questions, sounds)"),
    "chat train": ("auralm.recipes.chat.cli:train_cli", "S3: train the chat model (--preset NAME; stage 1 or 2)"),
    "chat eval": ("auralm.recipes.chat.cli:eval_cli", "S3: accuracy per question type on held-out scenes, with controls"),
    "chat generate": ("auralm.recipes.chat.cli:generate_cli", "S3: answer about images and audio (--image, --audio, --prompt)"),
    "chat export": ("auralm.recipes.chat.cli:export_cli", "S3: merge LoRA into the LM; write a plain HF folder + projectors"),
    "chat demo": ("auralm.recipes.chat.cli:demo_cli", "S3: the whole chat chain on the embedded default"),
    # S2 caption
    "caption synth": ("auralm.recipes.caption.cli:synth_cli", "S2: render the music corpus (= auralm synth music)"),
    "caption train": ("auralm.recipes.caption.cli:train_cli", "S2: train the playlist/track captioner (--preset NAME)"),
    "caption eval": ("auralm.recipes.caption.cli:eval_cli", "S2: COCO metrics on held-out playlists, with baselines and shuffled branches"),
    "caption generate": ("auralm.recipes.caption.cli:generate_cli", "S2: caption a track or a playlist (--audio a.wav b.wav --tags ...)"),
    "caption demo": ("auralm.recipes.caption.cli:demo_cli", "S2: the whole caption chain on the embedded default"),
    # S5 sound
    "sound train-tokenizer": ("auralm.recipes.sound.cli:train_tokenizer_cli", "S5: train the mel VQ-VAE audio tokenizer"),
    "sound train-vocoder": ("auralm.recipes.sound.cli:train_vocoder_cli", "S5: train the neural vocoder"),
    "sound train-gpt": ("auralm.recipes.sound.cli:train_gpt_cli", "S5: train the token GPT (class-conditioned or VAE)"),
    "sound generate": ("auralm.recipes.sound.cli:generate_cli", "S5: generate sounds for a label"),
    "sound interpolate": ("auralm.recipes.sound.cli:interpolate_cli", "S5: interpolate two sounds through the GPT-VAE latent"),
    "sound eval": ("auralm.recipes.sound.cli:eval_cli", "S5: judge generated sounds (Whisper accuracy, FAD-style distance)"),
    "sound demo": ("auralm.recipes.sound.cli:demo_cli", "S5: the whole sound chain on the embedded default"),
    # S4 imagine
    "imagine corpus": ("auralm.recipes.imagine.cli:corpus_cli", "S4: draw scenes, speak their captions, cache audio states"),
    "imagine train-judge": ("auralm.recipes.imagine.cli:train_judge_cli", "S4: train the judge (colour, shape, count) on drawings"),
    "imagine train-aligner": ("auralm.recipes.imagine.cli:train_aligner_cli", "S4: train the aligner (audio -> text-encoder states)"),
    "imagine train-diffusion": ("auralm.recipes.imagine.cli:train_diffusion_cli", "S4: train the text-conditioned pixel UNet"),
    "imagine bundle": ("auralm.recipes.imagine.cli:bundle_cli", "S4: join aligner, generator and judge into one checkpoint"),
    "imagine generate": ("auralm.recipes.imagine.cli:generate_cli", "S4: a picture from a spoken (or written) description"),
    "imagine eval": ("auralm.recipes.imagine.cli:eval_cli", "S4: retrieval R@k and judged attributes (text vs audio vs other audio)"),
    "imagine demo": ("auralm.recipes.imagine.cli:demo_cli", "S4: the whole chain on the embedded default"),
    # serving, over auralm.load() pipelines
    "serve": ("auralm.serve.cli:serve_cli", "serve checkpoints over an OpenAI-compatible HTTP API (docs/serving.md)"),
    "ui": ("auralm.serve.cli:ui_cli", "serve checkpoints with a Gradio UI at /ui (and the same API)"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: auralm <command> [options]   (auralm {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `auralm <command> --help` for the options of one command."]
    return "\n".join(lines)


def _lookup(argv: list[str]) -> tuple[str, list[str]] | None:
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in COMMANDS:
            return name, argv[words:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    found = _lookup(argv)
    if found is None:
        group = [name for name in COMMANDS if name.split()[0] == argv[0]]
        if group:
            print(f"auralm {argv[0]}: choose one of: {', '.join(n.split(' ', 1)[1] for n in group)}", file=sys.stderr)
        else:
            print(f"auralm: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    name, rest = found
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except AuralmError as exc:
        print(f"auralm {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"auralm {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
