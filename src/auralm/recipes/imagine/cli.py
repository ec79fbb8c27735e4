"""The ``auralm imagine ...`` commands: argparse over the library (:mod:`.data`, :mod:`.train`, :mod:`.pipeline`,
:mod:`.evaluate`, :mod:`.demo`); no library code lives here."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from auralm.core.config import apply_overrides, load_preset


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"auralm imagine {prog}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip


def _config(cls, path: str | None, overrides: list[str], **flags):  # noqa: ANN001, ANN202
    """``cls`` from a YAML file (optional), the command's flags, then ``key=value`` overrides."""
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    return apply_overrides(cls.from_dict(data), list(overrides))


def _train(argv: list[str], prog: str, doc: str, cls_name: str, fn_name: str) -> int:
    from auralm.recipes.imagine import train

    p = _parser(prog, doc)
    p.add_argument("--corpus", help="corpus folder (auralm imagine corpus, or a demo's OUT/corpus)")
    p.add_argument("--out", help="run folder (checkpoints/step-N, latest, config.yaml)")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. optim.max_steps=500 loss.queue_size=0")
    a = p.parse_args(argv)
    cfg = _config(getattr(train, cls_name), a.config, a.overrides, corpus=a.corpus, out=a.out)
    print(getattr(train, fn_name)(cfg))
    return 0


def corpus_cli(argv: list[str]) -> int:
    """auralm imagine corpus --out DIR [--n N] [key=value ...]"""
    from auralm.recipes.imagine.data import CorpusConfig, build_corpus

    p = _parser("corpus", "Draw scenes, speak their captions and cache the audio encoder's states.")
    p.add_argument("--out", help="corpus folder")
    p.add_argument("--n", type=int, help="number of scenes")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. image_size=32 scenes.max_objects=2")
    a = p.parse_args(argv)
    print(build_corpus(_config(CorpusConfig, a.config, a.overrides, out=a.out, n=a.n)))
    return 0


def train_aligner_cli(argv: list[str]) -> int:
    """auralm imagine train-aligner --corpus DIR --out DIR [key=value ...]"""
    return _train(argv, "train-aligner", "Train the aligner: audio-encoder states -> the text encoder's token states.",
                  "AlignerTrainConfig", "train_aligner")  # fmt: skip


def train_diffusion_cli(argv: list[str]) -> int:
    """auralm imagine train-diffusion --corpus DIR --out DIR [key=value ...]"""
    return _train(argv, "train-diffusion", "Train the small text-conditioned pixel UNet on the corpus's scenes.",
                  "DiffusionTrainConfig", "train_diffusion")  # fmt: skip


def train_judge_cli(argv: list[str]) -> int:
    """auralm imagine train-judge --corpus DIR --out DIR [key=value ...]"""
    return _train(argv, "train-judge", "Train the judge (colour, shape, count) on drawn scenes.",
                  "JudgeTrainConfig", "train_judge")  # fmt: skip


def bundle_cli(argv: list[str]) -> int:
    """auralm imagine bundle --out DIR --aligner A [--diffusion D | --generator G] [--judge J]"""
    import shutil

    from auralm.core.config import save_config
    from auralm.core.io import atomic_dir
    from auralm.recipes.imagine.pipeline import ImagineBundle
    from auralm.training.checkpoint import resolve_checkpoint

    p = _parser("bundle", "Put an aligner, a generator and a judge into one checkpoint folder (auralm.load()).")
    p.add_argument("--out", required=True)
    p.add_argument("--aligner", required=True, help="aligner run or checkpoint folder")
    p.add_argument("--diffusion", help="pixel UNet run or checkpoint folder")
    p.add_argument("--generator", help="a diffusers pipeline (folder or HF id) instead of --diffusion")
    p.add_argument("--judge", help="judge run or checkpoint folder")
    a = p.parse_args(argv)
    parts = {k: resolve_checkpoint(v) for k, v in (("aligner", a.aligner), ("diffusion", a.diffusion),
                                                   ("judge", a.judge)) if v}  # fmt: skip
    bundle = ImagineBundle(diffusion="diffusion" if a.diffusion else "", judge="judge" if a.judge else "",
                           generator=a.generator or "")  # fmt: skip
    with atomic_dir(a.out) as tmp:
        for name, src in parts.items():
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("trainer_state.pt", "unet_train.safetensors"))
        save_config(bundle, tmp)
    print(a.out)
    return 0


def generate_cli(argv: list[str]) -> int:
    """auralm imagine generate --checkpoint DIR (--audio FILE | --text TEXT) --out PICTURE.png [--seed S] [--steps K]"""
    from auralm.recipes.imagine.pipeline import ImaginePipeline

    p = _parser("generate", "Draw what a spoken (or written) description says.")
    p.add_argument("--checkpoint", required=True, help="imagine bundle (a demo's OUT/checkpoint) or aligner checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio", help="a recording of the description (any format soundfile/ffmpeg reads)")
    src.add_argument("--text", help="the description as text (through the text encoder, no aligner)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampling steps (default: the checkpoint's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the checkpoint's)")
    p.add_argument("--generator", help="a diffusers pipeline (folder or HF id) instead of the bundle's UNet")
    p.add_argument("--size", type=int, help="image side for diffusers pipelines")
    p.add_argument("--scale", type=int, default=1, help="enlarge the written picture this many times (nearest)")
    a = p.parse_args(argv)
    from auralm.core.errors import ConfigError

    if not a.out.lower().endswith(".png"):
        raise ConfigError(f"--out {a.out}: write a .png file")
    pipe = ImaginePipeline.from_checkpoint(a.checkpoint, generator=a.generator)
    extra = {"height": a.size, "width": a.size} if a.size and pipe.pipe is not None else {}
    image = pipe.generate(audio=[a.audio] if a.audio else None, text=a.text, seed=a.seed, steps=a.steps,
                          guidance=a.guidance, **extra)[0]  # fmt: skip
    if a.scale > 1:
        from PIL import Image

        image = image.resize((image.size[0] * a.scale, image.size[1] * a.scale), Image.NEAREST)
    from auralm.core.io import atomic_path

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(a.out)) as tmp:
        image.save(tmp, format="PNG")
    print(a.out)
    return 0


def eval_cli(argv: list[str]) -> int:
    """auralm imagine eval --checkpoint DIR --corpus DIR [--aligner A] [--out metrics.json]"""
    from auralm.recipes.imagine.data import Corpus
    from auralm.recipes.imagine.evaluate import evaluate, write_metrics
    from auralm.recipes.imagine.pipeline import ImaginePipeline, load_aligner

    p = _parser("eval", "Retrieval R@k of the aligner and, with a generator and a judge, judged attribute accuracy "
                        "of images from text, from the spoken caption and from another clip's audio.")  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="imagine bundle, or an aligner checkpoint (retrieval only)")
    p.add_argument("--corpus", required=True, help="corpus folder (its test scenes are scored)")
    p.add_argument("--aligner", help="use this aligner checkpoint instead of the bundle's")
    p.add_argument("--n-retrieval", type=int, default=100)
    p.add_argument("--n-judge", type=int, default=60)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", help="write a PNG grid of the first scenes here")
    p.add_argument("--out", help="write the metrics JSON here")
    a = p.parse_args(argv)
    folder = Path(a.checkpoint)
    kind = (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("kind") if (folder / "config.yaml").is_file() else None
    if kind == "bundle":
        pipe = ImaginePipeline.from_checkpoint(folder)
    else:
        aligner, acfg = load_aligner(folder)
        pipe = ImaginePipeline(aligner, acfg, text_encoder=_text(acfg))
    if a.aligner:
        pipe = pipe.with_aligner(a.aligner)
    metrics = evaluate(pipe, Corpus(a.corpus), n_retrieval=a.n_retrieval, n_judge=a.n_judge, steps=a.steps,
                       guidance=a.guidance, seed=a.seed, grid=a.grid)  # fmt: skip
    if a.out:
        write_metrics(a.out, metrics)
    print(json.dumps(metrics, indent=2))
    return 0


def _text(acfg):  # noqa: ANN001, ANN202
    from auralm.components.encoders import build_text_encoder

    return build_text_encoder(acfg.model.text_encoder, max_length=acfg.text_max_length)


def demo_cli(argv: list[str]) -> int:
    """auralm imagine demo [--preset NAME] [--out DIR] [key=value ...]"""
    from auralm.recipes.imagine import demo
    from auralm.recipes.imagine.demo import DemoConfig, run_demo

    p = _parser("demo", demo.__doc__ or "")
    p.add_argument("--preset", default="imagine-demo", help="preset name or YAML file (default: imagine-demo)")
    p.add_argument("--out", help="output folder (default: runs/imagine-demo)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. diffusion.optim.max_steps=500")
    a = p.parse_args(argv)
    cfg = DemoConfig.from_dict(load_preset(a.preset))
    cfg = apply_overrides(cfg, list(a.overrides) + ([f"out={a.out}"] if a.out else []))
    metrics = run_demo(cfg)
    keys = ("judged_text", "judged_audio", "judged_other_audio", "audio_over_text")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics} | {"retrieval": metrics["retrieval"]}, indent=2),
          file=sys.stdout)  # fmt: skip
    return 0
