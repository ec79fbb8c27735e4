"""The S5 sound pipeline: what ``auralm.load()`` returns for a sound checkpoint, and the library functions
behind the ``auralm sound`` commands (:func:`generate_sounds`, :func:`interpolate_sounds`,
:func:`tokenize_manifest`).

A checkpoint is either a token-GPT checkpoint (its ``meta.json`` names the tokenizer) or a *sound
bundle*: a folder whose ``config.yaml`` has ``recipe: sound``, ``kind: bundle`` and names (relative to
itself) its ``tokenizer``, ``vocoder``, ``gpt`` and ``vae`` folders, as ``auralm sound demo`` writes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

from auralm.core.config import Config, check_recipe, help_field, recipe_field
from auralm.core.errors import ConfigError, ModelNotFoundError


@dataclasses.dataclass
class SoundBundle(Config):
    """``config.yaml`` of a sound bundle: the parts, as paths relative to the bundle ("" = absent)."""

    recipe: str = recipe_field("sound")
    kind: str = help_field("bundle", "always 'bundle' (how loaders tell a bundle from a GPT checkpoint)")
    tokenizer: str = help_field("tokenizer", "tokenizer checkpoint folder")
    vocoder: str = help_field("vocoder", "neural vocoder folder ('' = Griffin-Lim)")
    gpt: str = help_field("gpt", "class-conditioned token GPT checkpoint ('' = none)")
    vae: str = help_field("vae", "GPT-VAE checkpoint ('' = none)")

    def validate(self) -> None:
        check_recipe(self, "sound")


@dataclasses.dataclass
class Parts:
    """Absolute folders of what a ``--checkpoint`` provides."""

    tokenizer: Path
    vocoder: Path | None = None
    gpt: Path | None = None
    vae: Path | None = None


def resolve_bundle(path: str | Path) -> Parts:
    """A bundle or a GPT checkpoint (or its run folder) -> its parts (dispatching on ``config.yaml``, not on folder names)."""
    from auralm.training.checkpoint import resolve_checkpoint

    folder = Path(path)
    if (folder / "latest").is_file():  # a training run folder: its latest checkpoint
        folder = resolve_checkpoint(folder)
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
    from auralm.components.codecs.mel_vq import load_codec

    choice = vocoder or (str(parts.vocoder) if parts.vocoder and parts.vocoder.is_dir() else None)
    return load_codec(parts.tokenizer, vocoder=choice)


def tokenize_manifest(tokenizer_dir: str | Path, manifest: str | Path, out: str | Path):  # noqa: ANN201 - TokenSet
    """Encode every clip of a labelled manifest with the tokenizer; save and return a TokenSet at ``out``."""
    import torch

    from auralm.components.codecs.mel_vq import load_codec
    from auralm.core.progress import progress
    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.recipes.sound.train_gpt import TokenSet
    from auralm.training.checkpoint import resolve_checkpoint

    if (Path(tokenizer_dir) / "latest").is_file():  # a training run folder: its latest checkpoint
        tokenizer_dir = resolve_checkpoint(tokenizer_dir)
    tok = load_codec(tokenizer_dir, vocoder="griffin-lim")
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


class SoundPipeline:
    """A trained sound model ready to generate: ``auralm.load(bundle).generate_sound("seven", n=4, seed=0)``.

    Loads the bundle's parts once: the class-conditioned token GPT and/or the GPT-VAE, and the audio
    tokenizer with its vocoder (the bundle's, or ``vocoder``: ``griffin-lim`` or a vocoder folder).
    """

    recipe = "sound"

    def __init__(self, parts: Parts, vocoder: str | None = None):
        from auralm.recipes.sound.train_gpt import load_token_model

        self.parts = parts
        self.gpt = self.vae = None
        self.gpt_meta: dict = {}
        self.vae_meta: dict = {}
        if parts.gpt is not None:
            self.gpt, _, self.gpt_meta = load_token_model(parts.gpt)
        if parts.vae is not None:
            self.vae, _, self.vae_meta = load_token_model(parts.vae)
        if self.gpt is None and self.vae is None:
            raise ModelNotFoundError(f"{parts} holds no token GPT or GPT-VAE")
        self.codec = load_parts_tokenizer(parts, vocoder)

    @classmethod
    def from_checkpoint(cls, path: str | Path, vocoder: str | None = None) -> SoundPipeline:
        return cls(resolve_bundle(path), vocoder)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def labels(self) -> list[str]:
        """The labels the class GPT was trained on (empty for a GPT-VAE alone)."""
        return list(self.gpt_meta.get("label_names", []))

    def generate_codes(self, label: str | None = None, n: int = 1, seed: int = 0, sampling=None) -> list:  # noqa: ANN001
        """``n`` code sequences of ``label`` from the class GPT (or, without one, from the GPT-VAE prior)."""
        import torch

        from auralm.recipes.sound.gpt import SamplingConfig, class_inputs, generate

        if n < 1:
            raise ConfigError(f"n must be at least 1, got {n}")
        if isinstance(sampling, dict):
            sampling = SamplingConfig.from_dict(sampling)
        sampling = sampling or SamplingConfig()
        gen = torch.Generator().manual_seed(seed)
        if self.gpt is not None:
            meta = self.gpt_meta
            if label not in self.labels:
                raise ConfigError(f"label {label!r} is not one the model was trained on; known labels: "
                                  f"{', '.join(self.labels)}")
            first = class_inputs(self.gpt.cfg, torch.full((n,), self.labels.index(label)))
            return generate(self.gpt, first, meta["max_tokens"] if meta.get("variable_length") else meta["clip_tokens"],
                            sampling, stop_at_eos=bool(meta.get("variable_length")), generator=gen)
        if label:
            raise ConfigError("this checkpoint has only a GPT-VAE, which is not class-conditioned: leave out the label")
        z = torch.randn(n, self.vae.cfg.latent_dim, generator=gen)
        return self.vae.decode(z, self.vae_meta["clip_tokens"], sampling)

    def generate_sound(self, label: str | None = None, n: int = 1, seed: int = 0, sampling=None) -> list[np.ndarray]:  # noqa: ANN001
        """``n`` waveforms (float32, ``sample_rate``) of ``label``; ``sampling``: a SamplingConfig or a dict of it."""
        return [self.codec.decode(c)[0] for c in self.generate_codes(label, n, seed, sampling)]

    def interpolate(self, a: str | Path, b: str | Path, steps: int) -> list[np.ndarray]:
        """Waveforms at ``steps`` points on the line between the GPT-VAE latents of clips ``a`` and ``b`` (greedy)."""
        from auralm.data.audio import load_audio

        if steps < 2:
            raise ConfigError(f"steps must be at least 2 (the two ends), got {steps}")
        if self.vae is None:
            raise ModelNotFoundError(f"{self.parts} holds no GPT-VAE; interpolation needs one (train-gpt --kind vae)")
        codes = [self.codec.encode(load_audio(p, self.sample_rate)[0])[0] for p in (a, b)]  # short clip -> AudioError
        path = self.vae.interpolate(codes[0], codes[1], steps, n_tokens=max(len(c) for c in codes))
        return [self.codec.decode(c)[0] for c in path]


def generate_sounds(checkpoint: str | Path, label: str | None, n: int, sampling=None, seed: int = 0,  # noqa: ANN001
                    vocoder: str | None = None) -> tuple[list[np.ndarray], int, list]:
    """``n`` clips of ``label`` from a checkpoint: (waveforms, sample rate, code sequences)."""
    pipe = SoundPipeline.from_checkpoint(checkpoint, vocoder)
    codes = pipe.generate_codes(label, n, seed, sampling)
    return [pipe.codec.decode(c)[0] for c in codes], pipe.sample_rate, codes


def interpolate_sounds(checkpoint: str | Path, a: str | Path, b: str | Path, steps: int, out: str | Path,
                       vocoder: str | None = None) -> list[Path]:
    """:meth:`SoundPipeline.interpolate`, written as ``step_XX.wav`` and ``step_XX.png`` (log-mel) into ``out``;
    returns the WAV paths."""
    from auralm.data.audio import write_wav

    if steps < 2:
        raise ConfigError(f"--steps must be at least 2 (the two ends), got {steps}")
    pipe = SoundPipeline.from_checkpoint(checkpoint, vocoder)
    wavs = pipe.interpolate(a, b, steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, wav in enumerate(wavs):
        write_wav(out / f"step_{k:02d}.wav", wav, pipe.sample_rate)
        save_spectrogram_png(pipe.codec.mel(wav)[0].numpy(), out / f"step_{k:02d}.png", f"step {k} of {steps - 1}")
        written.append(out / f"step_{k:02d}.wav")
    return written


def save_spectrogram_png(logmel: np.ndarray, path: str | Path, title: str = "") -> Path:
    """A log-mel (M, F) as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from auralm.core.io import atomic_path

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
