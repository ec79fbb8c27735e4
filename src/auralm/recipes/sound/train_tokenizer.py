"""Train the mel VQ-VAE tokenizer: ``train_tokenizer(cfg) -> checkpoint folder``.

Read top to bottom: load the train/valid clips' log-mels once (the digit corpus is minutes of audio),
set the normalisation from the training mels, then hand a :class:`TokenizerTask` to the training engine
(:func:`auralm.training.loop.fit`): AdamW on random crops (``crop_frames``; shorter clips are padded with
silence) with L1 reconstruction + commitment loss, warm-up then cosine to 10 %, for ``optim.max_steps``
(``optim.max_minutes`` is a guard). Every ``eval_every`` steps and at the end: validation metrics and
TensorBoard scalars, a mel image (input | reconstruction) and Griffin-Lim audio of a validation clip.

Layout of ``cfg.out`` (the engine's): ``checkpoints/step-N/`` (``config.yaml`` with ``mel`` and ``model``,
``weights.safetensors``: what :func:`auralm.components.codecs.mel_vq.load_codec` reads; ``trainer_state.pt``,
``metrics.json``), ``latest``, ``train_log.jsonl``, ``tb/``, ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import torch

from auralm.components.codecs.mel import LOG_SILENCE, MelConfig, MelFrontend, mel_l1
from auralm.components.codecs.mel_vq import MelVQConfig, MelVQTokenizer, MelVQVAE, save_tokenizer_weights
from auralm.core.config import check_recipe, help_field, recipe_field
from auralm.core.errors import ConfigError
from auralm.training.config import OptimConfig, RunConfig
from auralm.training.loop import Task


@dataclasses.dataclass
class TokenizerOptimConfig(OptimConfig):
    """The engine's optimizer settings with the tokenizer's defaults (warm-up, then cosine to 10 %)."""

    lr: float = help_field(1e-3, "peak learning rate (AdamW, no weight decay)")
    grad_clip: float = help_field(0.0, "clip the global gradient norm to this (0: no clipping)")
    warmup_steps: int = help_field(100, "linear warm-up steps from 0 to lr")
    min_lr_frac: float = help_field(0.1, "the cosine decay ends at lr * this")
    batch_size: int = help_field(32, "GLOBAL crops per optimizer step")
    max_steps: int = help_field(3000, "optimizer steps of the whole run")


@dataclasses.dataclass
class TokenizerTrainConfig(RunConfig):
    """Settings of ``auralm sound train-tokenizer``: the run (:class:`auralm.training.config.RunConfig`) and the tokenizer."""

    recipe: str = recipe_field("sound")
    out: str = help_field("", "run folder: config.yaml, train_log.jsonl, tb/, checkpoints/step-N/, latest")
    optim: TokenizerOptimConfig = help_field(default_factory=TokenizerOptimConfig, help="optimizer + run length")
    log_every: int = help_field(25, "log the means of the last log_every steps")
    eval_every: int = help_field(500, "validate (metrics, a mel image and audio to TensorBoard) every K steps and at the end")
    save_every: int = help_field(500, "write a checkpoint every K steps (and always at the end)")
    manifest: str = help_field("", "manifest of training clips (split train; valid for evaluation)")
    mel: MelConfig = help_field(default_factory=MelConfig, help="log-mel frontend")
    model: MelVQConfig = help_field(default_factory=MelVQConfig, help="VQ-VAE shape")
    crop_frames: int = help_field(128, "mel frames per crop (a multiple of model.downsample)")
    max_eval_clips: int = help_field(64, "validation clips used for the metrics")

    RESUMABLE = RunConfig.RESUMABLE | {"max_eval_clips"}

    def validate(self) -> None:
        check_recipe(self, 'sound')
        super().validate()
        if not self.manifest or not self.out:
            raise ConfigError("TokenizerTrainConfig: manifest and out are required")
        if self.crop_frames < self.model.downsample or self.crop_frames % self.model.downsample:
            raise ConfigError(f"TokenizerTrainConfig.crop_frames must be a multiple of model.downsample "
                              f"({self.model.downsample}), got {self.crop_frames}")  # fmt: skip


def load_mels(manifest: str, split: str, mel: MelConfig, limit: int | None = None) -> tuple[list[torch.Tensor], list]:
    """Log-mels ``(M, F)`` and labels of one split's clips."""
    from auralm.recipes.sound.data import load_clips

    wavs, labels, _ = load_clips(manifest, split, mel.sample_rate, limit)
    front = MelFrontend(mel)
    return [front.mel(w) for w in wavs if len(w) >= mel.hop], labels


def random_crops(mels: list[torch.Tensor], n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random crops ``(n, M, frames)``; clips shorter than ``frames`` are placed at a random offset in silence."""
    out = torch.full((n, mels[0].shape[0], frames), LOG_SILENCE)
    for i, j in enumerate(torch.randint(0, len(mels), (n,), generator=gen).tolist()):
        m = mels[j]
        if m.shape[1] >= frames:
            s = int(torch.randint(0, m.shape[1] - frames + 1, (1,), generator=gen))
            out[i] = m[:, s : s + frames]
        else:
            s = int(torch.randint(0, frames - m.shape[1] + 1, (1,), generator=gen))
            out[i, :, s : s + m.shape[1]] = m
    return out


@torch.no_grad()
def evaluate_tokenizer(model: MelVQVAE, mels: list[torch.Tensor]) -> dict[str, float]:
    """Mel L1 (log units) of whole-clip reconstructions and codebook usage over all their codes."""
    from auralm.metrics.audio import codebook_usage

    model.eval()
    errs, codes = [], []
    for m in mels:
        codes.append(model.encode(m[None])[0])
        errs.append(mel_l1(model.decode(codes[-1][None])[0], m))
    model.train()
    out = {"mel_l1": float(np.mean(errs)), "n_clips": len(mels)}
    out.update(codebook_usage(torch.cat(codes), model.cfg.codebook_size))
    return out


class TokenizerTask(Task):
    """The VQ-VAE on random crops of the training mels: L1 reconstruction + commitment (the EMA codebook is
    a buffer: with several processes, process 0's is copied to the others after each step, as DDP does)."""

    sync_buffers = True

    def __init__(self, cfg: TokenizerTrainConfig, train: list[torch.Tensor], valid: list[torch.Tensor]):
        self.cfg, self.train, self.valid = cfg, train, valid
        torch.manual_seed(cfg.optim.seed)
        self.model = MelVQVAE(cfg.model, cfg.mel.n_mels)
        crops, restarts = torch.Generator().manual_seed(cfg.optim.seed), torch.Generator().manual_seed(cfg.optim.seed + 1)
        self.model.quantizer.generator = restarts  # k-means init and dead-code restarts
        self.generators = {"crops": crops, "quantizer": restarts}
        self.device = torch.device("cpu")

    def bind(self, ctx) -> None:  # noqa: ANN001
        self.device = ctx.device

    def global_batch(self, step: int) -> torch.Tensor:
        return random_crops(self.train, self.cfg.optim.batch_size, self.cfg.crop_frames, self.generators["crops"])

    def loss(self, crops: torch.Tensor) -> dict:
        _, _, stats = self.model(crops.to(self.device))
        return {"loss": stats["total"], "n": len(crops), **{k: stats[k] for k in ("recon", "commitment", "perplexity",
                                                                                   "usage", "restarted")}}

    def validate(self, step: int, logger) -> dict:  # noqa: ANN001
        from auralm.recipes.sound.evaluate import log_media

        scores = evaluate_tokenizer(self.model, self.valid)
        if logger.tb is not None:
            tok = MelVQTokenizer(self.model, self.cfg.mel)
            log_media(logger.tb, "tokenizer", self.valid[0], tok.decode_mel(tok.model.encode(self.valid[0][None]))[0],
                      self.cfg.mel, step)
        return {f"valid/{k}": float(v) for k, v in scores.items()}

    def save_weights(self, folder: Path, step: int) -> None:
        save_tokenizer_weights(self.model, folder)  # + the engine's config.yaml (mel, model): what load_codec reads

    def load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(folder / "weights.safetensors")))


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    """Train (or resume, per ``cfg.resume``) the mel VQ-VAE described by ``cfg``; return the checkpoint folder."""
    import json

    from auralm.training.loop import fit

    train = load_mels(cfg.manifest, "train", cfg.mel)[0]
    try:
        valid = load_mels(cfg.manifest, "valid", cfg.mel, cfg.max_eval_clips)[0]
    except ConfigError:
        valid = train[: cfg.max_eval_clips]
    if not train:
        raise ConfigError(f"{cfg.manifest}: no training clips long enough for one mel frame")
    allm = torch.cat([m.reshape(-1) for m in train])  # the normalisation, from the training data
    cfg = cfg.replace(model=cfg.model.replace(mel_mean=round(float(allm.mean()), 4), mel_std=round(float(allm.std()), 4)))
    ckpt = fit(TokenizerTask(cfg, train, valid), cfg, name="train tokenizer", device="cpu")
    m = json.loads((ckpt / "metrics.json").read_text())
    v = m.get("valid", {})
    if v and int(os.environ.get("RANK", "0")) == 0:
        print(f"auralm sound train-tokenizer: step {m['step']} ({m['stopped_by']}), {m['elapsed_s']:.0f} s; valid mel L1 "
              f"{v['mel_l1']:.3f}, perplexity {v['perplexity']:.1f}, codes used {v['usage']:.0%}; wrote {ckpt}",
              file=sys.stderr)  # fmt: skip
    return ckpt
