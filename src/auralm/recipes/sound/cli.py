"""The ``auralm sound ...`` commands: argparse over the library (:mod:`.pipeline`, :mod:`.train_tokenizer`,
:mod:`.train_vocoder`, :mod:`.train_gpt`, :mod:`.evaluate`, :mod:`.demo`); no library code lives here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from auralm.core.config import apply_overrides
from auralm.core.errors import ConfigError
from auralm.recipes.sound.pipeline import (
    generate_sounds,
    interpolate_sounds,
    load_parts_tokenizer,
    log_sounds,
    resolve_bundle,
    tokenize_manifest,
)


# -- commands --------------------------------------------------------------------------------------
def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"auralm sound {prog}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _config(cls, path: str | None, overrides: list[str], **flags):  # noqa: ANN001, ANN202
    """``cls`` from a YAML file (optional), the command's flags, then ``key=value`` overrides."""
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    data.update({k: v for k, v in flags.items() if v is not None})
    return apply_overrides(cls.from_dict(data), list(overrides))


def train_tokenizer_cli(argv: list[str]) -> int:
    """auralm sound train-tokenizer --manifest M --out DIR [key=value ...]"""
    from auralm.recipes.sound.train_tokenizer import TokenizerTrainConfig, train_tokenizer

    p = _parser("train-tokenizer", "Train the mel VQ-VAE audio tokenizer (writes OUT/checkpoints/step-N, OUT/latest).")
    p.add_argument("--manifest", help="labelled manifest (split train; valid for evaluation)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. optim.max_steps=500 model.codebook_size=64")
    a = p.parse_args(argv)
    cfg = _config(TokenizerTrainConfig, a.config, a.overrides, manifest=a.manifest, out=a.out)
    print(train_tokenizer(cfg))
    return 0


def train_vocoder_cli(argv: list[str]) -> int:
    """auralm sound train-vocoder --manifest M --out DIR [key=value ...]"""
    from auralm.recipes.sound.train_vocoder import VocoderTrainConfig, train_vocoder

    p = _parser("train-vocoder", "Train the neural (HiFi-GAN-style) vocoder on log-mels of a manifest.")
    p.add_argument("--manifest", help="manifest of training clips")
    p.add_argument("--out", help="run folder")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings")
    a = p.parse_args(argv)
    cfg = _config(VocoderTrainConfig, a.config, a.overrides, manifest=a.manifest, out=a.out)
    print(train_vocoder(cfg))
    return 0


def train_gpt_cli(argv: list[str]) -> int:
    """auralm sound train-gpt --kind class|vae (--tokens DIR | --manifest M --tokenizer DIR) --out DIR"""
    from auralm.recipes.sound.train_gpt import TokenSet, TrainGPTConfig, train_gpt

    p = _parser("train-gpt", "Train the class-conditioned token GPT or the GPT-VAE (stage ae, then vae).")
    p.add_argument("--kind", choices=["class", "vae"], help="class (default) or vae")
    p.add_argument("--tokens", help="token set folder (else made from --manifest with --tokenizer into OUT/tokens)")
    p.add_argument("--manifest", help="labelled manifest to tokenize")
    p.add_argument("--tokenizer", help="tokenizer checkpoint folder")
    p.add_argument("--out", help="run folder (checkpoints/, latest, tb/, config.yaml)")
    p.add_argument("--stage", choices=["ae", "vae"], help="GPT-VAE stage")
    p.add_argument("--init-from", help="GPT-VAE stage 2: the stage-1 checkpoint")
    p.add_argument("--max-steps", "--steps", dest="max_steps", type=int, help="optimizer steps (optim.max_steps)")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. gpt.n_layer=2 free_bits=total")
    a = p.parse_args(argv)
    steps = [f"optim.max_steps={a.max_steps}"] if a.max_steps else []
    cfg = _config(TrainGPTConfig, a.config, steps + list(a.overrides), kind=a.kind, tokens=a.tokens, out=a.out,
                  stage=a.stage, init_from=a.init_from)
    if not cfg.tokens:
        if not (a.manifest and a.tokenizer):
            raise ConfigError("give --tokens DIR, or --manifest and --tokenizer to make one")
        tokens = tokenize_manifest(a.tokenizer, a.manifest, Path(cfg.out) / "tokens")
        cfg = cfg.replace(tokens=str(Path(cfg.out) / "tokens"))
    else:
        tokens = TokenSet.load(cfg.tokens)
    ckpt = train_gpt(cfg, tokens)
    if cfg.logger == "tensorboard" and tokens.tokenizer and Path(tokens.tokenizer).is_dir():
        _log_checkpoint_samples(ckpt, tokens, Path(cfg.out) / "tb")
    print(ckpt)
    return 0


def _log_checkpoint_samples(ckpt: Path, tokens, tb_dir: Path) -> None:  # noqa: ANN001
    """TensorBoard audio + mel images: one sample per label (class GPT) or two prior samples (GPT-VAE)."""
    from auralm.recipes.sound.gpt import SamplingConfig

    meta = json.loads((ckpt / "meta.json").read_text())
    labels = tokens.label_names[:8] if meta["kind"] == "class" else [None]
    wavs = []
    for label in labels:
        w, _, _ = generate_sounds(ckpt, label, 1 if label else 2, SamplingConfig(temperature=0.8, top_p=0.9))
        wavs += w
    tok = load_parts_tokenizer(resolve_bundle(ckpt), "griffin-lim")
    log_sounds(tb_dir, "samples", wavs, tok.sample_rate, tok, int(meta["step"]))


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--greedy", action="store_true", help="argmax decoding (no sampling)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely codes (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (1: off)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance (1: off)")
    p.add_argument("--vocoder", help="griffin-lim or a vocoder folder (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")


def _sampling(a: argparse.Namespace):  # noqa: ANN202
    from auralm.recipes.sound.gpt import SamplingConfig

    return SamplingConfig(strategy="greedy" if a.greedy else "sample", temperature=a.temperature, top_k=a.top_k,
                          top_p=a.top_p, guidance_scale=a.guidance_scale)


def generate_cli(argv: list[str]) -> int:
    """auralm sound generate --checkpoint DIR --label LABEL --n N --out DIR"""
    from auralm.data.audio import write_wav

    p = _parser("generate", "Generate sounds of a label with the class GPT (WAVs into --out).")
    p.add_argument("--checkpoint", required=True, help="sound bundle or token-GPT checkpoint")
    p.add_argument("--label", help="class label (one the model was trained on)")
    p.add_argument("--n", type=int, default=4, help="number of clips")
    p.add_argument("--out", required=True, help="output folder")
    _sampling_args(p)
    a = p.parse_args(argv)
    if a.n < 1:
        raise ConfigError(f"--n must be at least 1, got {a.n}")
    wavs, sr, _ = generate_sounds(a.checkpoint, a.label, a.n, _sampling(a), a.seed, a.vocoder)
    out = Path(a.out)
    name = a.label or "prior"
    for i, w in enumerate(wavs):
        write_wav(out / f"{name}_{i:03d}.wav", w, sr)
    print(f"wrote {len(wavs)} clips to {out}", file=sys.stderr)
    return 0


def interpolate_cli(argv: list[str]) -> int:
    """auralm sound interpolate --checkpoint DIR --a A.wav --b B.wav --steps K --out DIR"""
    p = _parser("interpolate", "Walk the GPT-VAE latent from clip A to clip B: WAVs and spectrogram PNGs.")
    p.add_argument("--checkpoint", required=True, help="sound bundle or GPT-VAE checkpoint")
    p.add_argument("--a", required=True, help="first clip")
    p.add_argument("--b", required=True, help="second clip")
    p.add_argument("--steps", type=int, default=5, help="points on the line, both ends included")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--vocoder", help="griffin-lim or a vocoder folder (default: the checkpoint's)")
    a = p.parse_args(argv)
    written = interpolate_sounds(a.checkpoint, a.a, a.b, a.steps, a.out, a.vocoder)
    print(f"wrote {len(written)} WAVs and spectrograms to {a.out}", file=sys.stderr)
    return 0


def eval_cli(argv: list[str]) -> int:
    """``auralm sound eval --manifest M [--tokenizer DIR] [--vocoder V] [--generated DIR] [--out FILE]``."""
    import argparse
    import json
    import sys

    from auralm.core.io import atomic_write_json
    from auralm.recipes.sound.evaluate import evaluate_sound

    p = argparse.ArgumentParser(prog="auralm sound eval", description="Judge real, reconstructed, vocoded and "
                                "generated sounds (see docs/sound.md).")  # fmt: skip
    p.add_argument("--manifest", required=True, help="manifest with labelled clips (the real audio)")
    p.add_argument("--split", default="test", help="split of the manifest to use (default test)")
    p.add_argument("--tokenizer", help="tokenizer checkpoint folder: reconstruction figures")
    p.add_argument("--vocoder", help="griffin-lim or a vocoder folder: vocoder on real mels (and for decoding)")
    p.add_argument("--generated", help="folder of generated LABEL_NNN.wav files")
    p.add_argument("--max-clips", type=int, default=0, help="use at most this many real clips (0 = all)")
    p.add_argument("--out", help="write the metrics JSON here (default: print)")
    a = p.parse_args(argv)
    metrics = evaluate_sound(a.manifest, a.split, a.tokenizer, a.vocoder, a.generated, a.max_clips)
    if a.out:
        atomic_write_json(a.out, metrics)
        print(f"auralm sound eval: wrote {a.out}", file=sys.stderr)
    else:
        print(json.dumps(metrics, indent=2))
    return 0


def demo_cli(argv: list[str]) -> int:
    from auralm.core.config import load_preset
    from auralm.recipes.sound import demo
    from auralm.recipes.sound.demo import SoundDemoConfig, run, summary

    parser = argparse.ArgumentParser(prog="auralm sound demo", description=demo.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="sound-demo", help="preset name or YAML file (default: sound-demo)")
    parser.add_argument("--out", help="output folder (default: runs/sound-demo)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. n_per_class=20 gpt.optim.max_steps=500")
    args = parser.parse_args(argv)
    cfg = SoundDemoConfig.from_dict(load_preset(args.preset))
    cfg = apply_overrides(cfg, list(args.overrides) + ([f"out={args.out}"] if args.out else []))
    metrics = run(cfg)
    print(json.dumps(summary(metrics), indent=2))
    return 0
