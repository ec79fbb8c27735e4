"""The ``auralm sound ...`` commands, and the library functions behind them.

* ``train-tokenizer``, ``train-vocoder``, ``eval``: argparse over the trainers and evaluation of
  :mod:`auralm.sound.train_tokenizer`, :mod:`auralm.sound.train_vocoder`, :mod:`auralm.sound.evaluate`.
* ``train-gpt --kind class|vae``: :func:`auralm.sound.train_gpt.train_gpt` on a token set, made
  first from ``--manifest`` with ``--tokenizer`` when no ``--tokens`` is given (:func:`tokenize_manifest`).
* ``generate``: :func:`generate_sounds` (a label's codes from the class GPT, or latents from the
  GPT-VAE prior) decoded to WAVs; ``interpolate``: :func:`interpolate_sounds`.
* ``demo``: :mod:`auralm.sound.demo`.

``--checkpoint`` is either a token-GPT checkpoint (its ``meta.json`` names the tokenizer) or a
*sound bundle*: a folder whose ``config.yaml`` has ``kind: bundle`` and names (relative to itself)
its ``tokenizer``, ``vocoder``, ``gpt`` and ``vae`` folders, as ``auralm sound demo`` writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from auralm.config import Config, apply_overrides, help_field, save_config
from auralm.errors import ConfigError, ModelNotFoundError


@dataclasses.dataclass
class SoundBundle(Config):
    """``config.yaml`` of a sound bundle: the parts, as paths relative to the bundle ("" = absent)."""

    kind: str = help_field("bundle", "always 'bundle' (how loaders tell a bundle from a GPT checkpoint)")
    tokenizer: str = help_field("tokenizer", "tokenizer checkpoint folder")
    vocoder: str = help_field("vocoder", "neural vocoder folder ('' = Griffin-Lim)")
    gpt: str = help_field("gpt", "class-conditioned token GPT checkpoint ('' = none)")
    vae: str = help_field("vae", "GPT-VAE checkpoint ('' = none)")


@dataclasses.dataclass
class Parts:
    """Absolute folders of what a ``--checkpoint`` provides."""

    tokenizer: Path
    vocoder: Path | None = None
    gpt: Path | None = None
    vae: Path | None = None


def resolve_checkpoint(path: str | Path) -> Parts:
    """A bundle or a GPT checkpoint -> its parts (dispatching on ``config.yaml``, not on folder names)."""
    folder = Path(path)
    cfg_path = folder / "config.yaml"
    if not cfg_path.is_file():
        raise ModelNotFoundError(f"{folder} is not a checkpoint (no config.yaml)")
    kind = (yaml.safe_load(cfg_path.read_text()) or {}).get("kind")
    if kind == "bundle":
        b = SoundBundle.from_yaml(cfg_path)
        part = lambda name: (folder / name).resolve() if name else None  # noqa: E731
        return Parts(tokenizer=part(b.tokenizer), vocoder=part(b.vocoder), gpt=part(b.gpt), vae=part(b.vae))
    if kind in ("class", "vae"):
        meta = json.loads((folder / "meta.json").read_text())
        if not meta.get("tokenizer"):
            raise ModelNotFoundError(f"{folder}/meta.json names no tokenizer; pass a bundle instead")
        tok = Path(meta["tokenizer"])
        return Parts(tokenizer=tok, **{kind if kind == "vae" else "gpt": folder.resolve()})
    raise ConfigError(f"{cfg_path}: kind {kind!r} is neither a sound bundle nor a token-GPT checkpoint")


def load_parts_tokenizer(parts: Parts, vocoder: str | None = None):  # noqa: ANN201 - MelVQTokenizer
    """The tokenizer with the bundle's vocoder (or ``vocoder``: ``griffin-lim`` or a folder)."""
    from auralm.sound.tokenizer import load_tokenizer

    choice = vocoder or (str(parts.vocoder) if parts.vocoder and parts.vocoder.is_dir() else None)
    return load_tokenizer(parts.tokenizer, vocoder=choice)


def tokenize_manifest(tokenizer_dir: str | Path, manifest: str | Path, out: str | Path):  # noqa: ANN201 - TokenSet
    """Encode every clip of a labelled manifest with the tokenizer; save and return a TokenSet at ``out``."""
    import torch

    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.progress import progress
    from auralm.sound.tokenizer import load_tokenizer
    from auralm.sound.train_gpt import TokenSet

    tok = load_tokenizer(tokenizer_dir, vocoder="griffin-lim")
    rows = read_manifest(manifest)
    unlabelled = [r.id for r in rows if not r.label]
    if unlabelled:
        raise ConfigError(f"{manifest}: {len(unlabelled)} rows have no label (first: {unlabelled[0]})")
    names = sorted({r.label for r in rows})
    seqs = []
    for r in progress(rows, desc="tokenize", total=len(rows)):
        wav = load_audio(r.audio_path(), tok.sample_rate, start=r.start, end=r.end)[0]
        seqs.append(tok.encode(wav)[0])
    T = max(len(s) for s in seqs)
    codes = torch.zeros(len(seqs), T, dtype=torch.long)
    for i, s in enumerate(seqs):
        codes[i, : len(s)] = s
    ts = TokenSet(codes=codes, lengths=torch.tensor([len(s) for s in seqs]),
                  labels=torch.tensor([names.index(r.label) for r in rows]), label_names=names,
                  codebook_size=tok.codebook_size, ids=[r.id for r in rows], splits=[r.split or "train" for r in rows],
                  tokenizer=str(Path(tokenizer_dir).resolve()))
    ts.save(out)
    return ts


def generate_sounds(checkpoint: str | Path, label: str | None, n: int, sampling=None, seed: int = 0,
                    vocoder: str | None = None) -> tuple[list[np.ndarray], int, list]:
    """``n`` clips of ``label`` from the class GPT (or, without a GPT, from the GPT-VAE prior).

    Returns (waveforms, sample rate, code sequences).
    """
    import torch

    from auralm.sound.gpt import SamplingConfig, class_inputs, generate
    from auralm.sound.train_gpt import load_checkpoint

    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    parts = resolve_checkpoint(checkpoint)
    sampling = sampling or SamplingConfig()
    gen = torch.Generator().manual_seed(seed)
    if parts.gpt is not None:
        model, _, meta = load_checkpoint(parts.gpt)
        known = meta["label_names"]
        if label not in known:
            raise ConfigError(f"label {label!r} is not one the model was trained on; known labels: {', '.join(known)}")
        first = class_inputs(model.cfg, torch.full((n,), known.index(label)))
        codes = generate(model, first, meta["max_tokens"] if meta.get("variable_length") else meta["clip_tokens"],
                         sampling, stop_at_eos=bool(meta.get("variable_length")), generator=gen)
    elif parts.vae is not None:
        if label:
            raise ConfigError("this checkpoint has only a GPT-VAE, which is not class-conditioned: leave out --label")
        model, _, meta = load_checkpoint(parts.vae)
        z = torch.randn(n, model.cfg.latent_dim, generator=gen)
        codes = model.decode(z, meta["clip_tokens"], sampling)
    else:
        raise ModelNotFoundError(f"{checkpoint} holds no token GPT or GPT-VAE")
    tok = load_parts_tokenizer(parts, vocoder)
    wavs = [tok.decode(c)[0] for c in codes]
    return wavs, tok.sample_rate, codes


def interpolate_sounds(checkpoint: str | Path, a: str | Path, b: str | Path, steps: int, out: str | Path,
                       vocoder: str | None = None) -> list[Path]:
    """Encode two clips, decode ``steps`` points on the line between their GPT-VAE latents (greedy),
    write ``step_XX.wav`` and ``step_XX.png`` (log-mel) into ``out``; returns the WAV paths."""
    from auralm.data.audio import load_audio, write_wav
    from auralm.sound.train_gpt import load_checkpoint

    if steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two ends), got {steps}")
    parts = resolve_checkpoint(checkpoint)
    if parts.vae is None:
        raise ModelNotFoundError(f"{checkpoint} holds no GPT-VAE; interpolation needs one (train-gpt --kind vae)")
    model, _, meta = load_checkpoint(parts.vae)
    tok = load_parts_tokenizer(parts, vocoder)
    codes = [tok.encode(load_audio(p, tok.sample_rate)[0])[0] for p in (a, b)]  # short clip -> AudioError
    path = model.interpolate(codes[0], codes[1], steps, n_tokens=max(len(c) for c in codes))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, c in enumerate(path):
        wav = tok.decode(c)[0]
        write_wav(out / f"step_{k:02d}.wav", wav, tok.sample_rate)
        save_spectrogram_png(tok.mel(wav)[0].numpy(), out / f"step_{k:02d}.png", f"step {k} of {steps - 1}")
        written.append(out / f"step_{k:02d}.wav")
    return written


def save_spectrogram_png(logmel: np.ndarray, path: str | Path, title: str = "") -> Path:
    """A log-mel (M, F) as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auralm.io import atomic_path

    fig, ax = plt.subplots(figsize=(max(3.0, logmel.shape[1] / 20), 2.5))
    ax.imshow(logmel, origin="lower", aspect="auto", cmap="magma")
    ax.set(title=title, xlabel="frame", ylabel="mel bin")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return Path(path)


def log_sounds(tb_dir: str | Path, tag: str, wavs: list[np.ndarray], sample_rate: int, tok, step: int = 0) -> None:
    """Audio and spectrogram images of ``wavs`` into TensorBoard at ``tb_dir``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    writer = SummaryWriter(str(tb_dir))
    for i, wav in enumerate(wavs):
        writer.add_audio(f"{tag}/{i}", np.asarray(wav)[None], step, sample_rate=sample_rate)
        m = tok.mel(wav)[0].numpy()
        img = (m - m.min()) / max(1e-6, float(m.max() - m.min()))
        writer.add_image(f"{tag}_mel/{i}", img[::-1].copy()[None], step)
    writer.close()


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
    from auralm.sound.train_tokenizer import TokenizerTrainConfig, train_tokenizer

    p = _parser("train-tokenizer", "Train the mel VQ-VAE audio tokenizer (writes OUT/checkpoint).")
    p.add_argument("--manifest", help="labelled manifest (split train; valid for evaluation)")
    p.add_argument("--out", help="run folder")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. steps=500 model.codebook_size=64")
    a = p.parse_args(argv)
    cfg = _config(TokenizerTrainConfig, a.config, a.overrides, manifest=a.manifest, out=a.out)
    print(train_tokenizer(cfg))
    return 0


def train_vocoder_cli(argv: list[str]) -> int:
    """auralm sound train-vocoder --manifest M --out DIR [key=value ...]"""
    from auralm.sound.train_vocoder import VocoderTrainConfig, train_vocoder

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
    from auralm.sound.train_gpt import TokenSet, TrainGPTConfig, train_gpt

    p = _parser("train-gpt", "Train the class-conditioned token GPT or the GPT-VAE (stage ae, then vae).")
    p.add_argument("--kind", choices=["class", "vae"], help="class (default) or vae")
    p.add_argument("--tokens", help="token set folder (else made from --manifest with --tokenizer into OUT/tokens)")
    p.add_argument("--manifest", help="labelled manifest to tokenize")
    p.add_argument("--tokenizer", help="tokenizer checkpoint folder")
    p.add_argument("--out", help="run folder (checkpoint/, tb/, config.yaml)")
    p.add_argument("--stage", choices=["ae", "vae"], help="GPT-VAE stage")
    p.add_argument("--init-from", help="GPT-VAE stage 2: the stage-1 checkpoint")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--config", help="YAML file of settings")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. gpt.n_layer=2 free_bits=total")
    a = p.parse_args(argv)
    cfg = _config(TrainGPTConfig, a.config, a.overrides, kind=a.kind, tokens=a.tokens, out=a.out, stage=a.stage,
                  init_from=a.init_from, steps=a.steps)
    if not cfg.tokens:
        if not (a.manifest and a.tokenizer):
            raise ConfigError("give --tokens DIR, or --manifest and --tokenizer to make one")
        tokens = tokenize_manifest(a.tokenizer, a.manifest, Path(cfg.out) / "tokens")
        cfg = cfg.replace(tokens=str(Path(cfg.out) / "tokens"))
    else:
        tokens = TokenSet.load(cfg.tokens)
    save_config(cfg, Path(cfg.out))
    ckpt = train_gpt(cfg, tokens)
    if cfg.tensorboard and tokens.tokenizer and Path(tokens.tokenizer).is_dir():
        _log_checkpoint_samples(ckpt, tokens, Path(cfg.out) / "tb")
    print(ckpt)
    return 0


def _log_checkpoint_samples(ckpt: Path, tokens, tb_dir: Path) -> None:  # noqa: ANN001
    """TensorBoard audio + mel images: one sample per label (class GPT) or two prior samples (GPT-VAE)."""
    from auralm.sound.gpt import SamplingConfig

    meta = json.loads((ckpt / "meta.json").read_text())
    labels = tokens.label_names[:8] if meta["kind"] == "class" else [None]
    wavs = []
    for label in labels:
        w, _, _ = generate_sounds(ckpt, label, 1 if label else 2, SamplingConfig(temperature=0.8, top_p=0.9))
        wavs += w
    tok = load_parts_tokenizer(resolve_checkpoint(ckpt), "griffin-lim")
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
    from auralm.sound.gpt import SamplingConfig

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
    """auralm sound eval: D's evaluation of a bundle on a manifest."""
    from auralm.sound.evaluate import cli

    return int(cli(argv) or 0)


def demo_cli(argv: list[str]) -> int:
    """auralm sound demo [--preset sound-demo] [--out DIR] [key=value ...]"""
    from auralm.sound.demo import cli

    return cli(argv)

