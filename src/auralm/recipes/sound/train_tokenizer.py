"""Train the mel VQ-VAE tokenizer: ``train_tokenizer(cfg) -> checkpoint folder``.

Read top to bottom: load the train/valid clips' log-mels once (the digit corpus is minutes of audio),
set the normalisation from the training mels, then Adam on random crops (``crop_frames``; shorter
clips are padded with silence) with L1 reconstruction + commitment loss, until ``steps`` or
``max_minutes``. Every ``eval_every`` steps and at the end: the checkpoint (atomically: config.yaml,
weights.safetensors, state.pt with optimizer, step and RNG states, metrics.json) and TensorBoard
scalars, a mel image (input | reconstruction) and Griffin-Lim audio of a validation clip.

Layout of ``cfg.out``: ``checkpoint/`` (what :func:`auralm.components.codecs.mel_vq.load_codec` reads),
``tb/`` (TensorBoard events), ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from auralm.components.codecs.mel import LOG_SILENCE, MelConfig, MelFrontend, mel_l1
from auralm.components.codecs.mel_vq import MelVQConfig, MelVQTokenizer, MelVQVAE, save_tokenizer_weights
from auralm.core.config import Config, check_recipe, help_field, recipe_field, save_config
from auralm.core.errors import ConfigError
from auralm.core.io import atomic_dir, atomic_write_json


@dataclasses.dataclass
class TokenizerTrainConfig(Config):
    """Settings of ``auralm sound train-tokenizer``."""

    recipe: str = recipe_field("sound")
    manifest: str = help_field("", "manifest of training clips (split train; valid for evaluation)")
    out: str = help_field("", "run folder: checkpoint/, tb/, config.yaml")
    mel: MelConfig = help_field(default_factory=MelConfig, help="log-mel frontend")
    model: MelVQConfig = help_field(default_factory=MelVQConfig, help="VQ-VAE shape")
    steps: int = help_field(3000, "optimizer steps")
    max_minutes: float = help_field(8.0, "stop (and save) after this much training time; 0 = no limit")
    batch_size: int = help_field(32, "crops per step")
    crop_frames: int = help_field(128, "mel frames per crop (a multiple of model.downsample)")
    lr: float = help_field(1e-3, "peak Adam learning rate (cosine decay to 10%)")
    seed: int = help_field(0, "seed of weights, crops and codebook restarts")
    eval_every: int = help_field(500, "steps between checkpoints, evaluation and TensorBoard media")
    log_every: int = help_field(25, "steps between TensorBoard scalars")
    resume: bool = help_field(True, "continue from out/checkpoint/state.pt when it exists")
    stop_at: int = help_field(0, "stop (and save) once this step is reached, keeping the schedule of `steps`; 0 = off")
    max_eval_clips: int = help_field(64, "validation clips used for the metrics")

    def validate(self) -> None:
        check_recipe(self, 'sound')
        if not self.manifest or not self.out:
            raise ConfigError("TokenizerTrainConfig: manifest and out are required")
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.log_every < 1 or self.lr <= 0:
            raise ConfigError("TokenizerTrainConfig: steps, batch_size, eval_every, log_every >= 1 and lr > 0 needed")
        if self.crop_frames < self.model.downsample or self.crop_frames % self.model.downsample:
            raise ConfigError(f"TokenizerTrainConfig.crop_frames must be a multiple of model.downsample "
                              f"({self.model.downsample}), got {self.crop_frames}")  # fmt: skip
        if self.max_minutes < 0:
            raise ConfigError("TokenizerTrainConfig.max_minutes must be >= 0")


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


def tb_writer(folder: Path):  # noqa: ANN201 - SummaryWriter, or None without tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("auralm sound: tensorboard is not installed; no TensorBoard logs", file=sys.stderr)
        return None
    return SummaryWriter(str(folder))


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


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    """Train (or resume) the mel VQ-VAE described by ``cfg``; return the checkpoint folder."""
    from auralm.core.progress import progress
    from auralm.recipes.sound.evaluate import log_media

    out = Path(cfg.out)
    ckpt = out / "checkpoint"
    train = load_mels(cfg.manifest, "train", cfg.mel)[0]
    try:
        valid = load_mels(cfg.manifest, "valid", cfg.mel, cfg.max_eval_clips)[0]
    except ConfigError:
        valid = train[: cfg.max_eval_clips]
    if not train:
        raise ConfigError(f"{cfg.manifest}: no training clips long enough for one mel frame")
    state = torch.load(ckpt / "state.pt", weights_only=False) if cfg.resume and (ckpt / "state.pt").is_file() else None
    if state is None:  # normalisation from the training data
        allm = torch.cat([m.reshape(-1) for m in train])
        cfg = cfg.replace(model=cfg.model.replace(mel_mean=round(float(allm.mean()), 4), mel_std=round(float(allm.std()), 4)))
    else:
        cfg = cfg.replace(model=MelVQConfig.from_dict(state["model_config"]))
    save_config(cfg, out)
    torch.manual_seed(cfg.seed)
    model = MelVQVAE(cfg.model, cfg.mel.n_mels)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.quantizer.generator = gen
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    first, elapsed = 0, 0.0
    if state is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt / "weights.safetensors")))
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"auralm sound train-tokenizer: resuming at step {first}", file=sys.stderr)

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / 100)
        return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps))))

    def save(metrics: dict, next_step: int) -> None:
        with atomic_dir(ckpt) as tmp:
            save_config(cfg, tmp)
            save_tokenizer_weights(model, tmp)
            torch.save({"optimizer": opt.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                        "step": next_step, "elapsed": elapsed, "model_config": cfg.model.to_dict()}, tmp / "state.pt")  # fmt: skip
            atomic_write_json(tmp / "metrics.json", metrics)

    writer = tb_writer(out / "tb")
    model.train()
    metrics: dict = {}
    start = time.perf_counter() - elapsed
    bar = progress(range(first, cfg.steps), desc="train tokenizer", total=cfg.steps - first)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        batch = random_crops(train, cfg.batch_size, cfg.crop_frames, gen)
        _, _, stats = model(batch)
        opt.zero_grad(set_to_none=True)
        stats["total"].backward()
        opt.step()
        elapsed = time.perf_counter() - start
        done = step + 1 == cfg.steps or step + 1 == cfg.stop_at or (cfg.max_minutes and elapsed > cfg.max_minutes * 60)
        if writer is not None and step % cfg.log_every == 0:
            for k in ("recon", "commitment", "total"):
                writer.add_scalar(f"tokenizer/{k}", float(stats[k].detach()), step)
            for k in ("perplexity", "usage", "restarted"):
                writer.add_scalar(f"tokenizer/{k}", stats[k], step)
            writer.add_scalar("tokenizer/lr", lr_at(step), step)
        if (step + 1) % cfg.eval_every == 0 or done:
            metrics = {"step": step + 1, "train_seconds": round(elapsed, 1), "valid": evaluate_tokenizer(model, valid)}
            if writer is not None:
                for k, v in metrics["valid"].items():
                    writer.add_scalar(f"tokenizer_valid/{k}", v, step + 1)
                tok = MelVQTokenizer(model, cfg.mel)
                log_media(writer, "tokenizer", valid[0], tok.decode_mel(tok.model.encode(valid[0][None]))[0], cfg.mel, step + 1)
                model.train()
            save(metrics, step + 1)
            if done:
                break
    if writer is not None:
        writer.close()
    if metrics:
        v = metrics["valid"]
        print(f"auralm sound train-tokenizer: step {metrics['step']}, {metrics['train_seconds']:.0f} s; valid mel L1 "
              f"{v['mel_l1']:.3f}, perplexity {v['perplexity']:.1f}, codes used {v['usage']:.0%}; wrote {ckpt}",
              file=sys.stderr)  # fmt: skip
    return ckpt
