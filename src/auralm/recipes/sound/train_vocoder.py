"""Train the HiFi-GAN-style vocoder: ``train_vocoder(cfg) -> checkpoint folder``.

Read top to bottom: load the training clips once, then for each step take random waveform segments
(``segment`` samples; shorter clips are zero-padded), compute their log-mels, and

1. (from ``disc_start`` on) update the multi-period and multi-scale discriminators with the
   least-squares GAN loss on real vs generated segments;
2. update the generator with ``lambda_mel * L1(mel(generated), mel(real))`` plus, once the
   discriminators run, the adversarial loss and ``lambda_fm *`` feature matching.

HiFi-GAN trains for hundreds of thousands of GPU steps; on a CPU budget of minutes the generator is
far from converged, so the mel loss alone runs first (``disc_start``) to get a usable waveform
quickly. The honest comparison with Griffin-Lim is :func:`auralm.recipes.sound.evaluate` work; the trainer
reports the validation mel error of both. Checkpoints (``out/checkpoint``: config.yaml,
weights.safetensors of the generator, state.pt with discriminators, both optimizers, step and RNG
states, metrics.json) are written atomically; ``out/tb`` has TensorBoard scalars, mel images and audio.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from auralm.components.codecs.mel import MelConfig, MelFrontend, mel_l1
from auralm.components.codecs.vocoder import (
    GriffinLim,
    HifiGanConfig,
    HifiGanVocoder,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
)
from auralm.core.config import Config, check_recipe, help_field, recipe_field, save_config
from auralm.core.errors import ConfigError
from auralm.core.io import atomic_dir, atomic_write_json


@dataclasses.dataclass
class VocoderTrainConfig(Config):
    """Settings of ``auralm sound train-vocoder``."""

    recipe: str = recipe_field("sound")
    manifest: str = help_field("", "manifest of training clips (split train; valid for evaluation)")
    out: str = help_field("", "run folder: checkpoint/, tb/, config.yaml")
    mel: MelConfig = help_field(default_factory=MelConfig, help="log-mel frontend (must match the tokenizer's)")
    model: HifiGanConfig = help_field(default_factory=HifiGanConfig, help="generator shape")
    steps: int = help_field(3000, "optimizer steps")
    max_minutes: float = help_field(8.0, "stop (and save) after this much training time; 0 = no limit")
    batch_size: int = help_field(8, "segments per step")
    segment: int = help_field(8192, "samples per segment (a multiple of the mel hop)")
    lr: float = help_field(2e-4, "AdamW learning rate of generator and discriminators (betas 0.8, 0.99)")
    disc_start: int = help_field(400, "step at which the discriminators and adversarial losses start")
    lambda_mel: float = help_field(45.0, "weight of the mel L1 loss")
    lambda_fm: float = help_field(2.0, "weight of the feature-matching loss")
    seed: int = help_field(0, "seed of weights and segment choice")
    eval_every: int = help_field(500, "steps between checkpoints, evaluation and TensorBoard media")
    log_every: int = help_field(25, "steps between TensorBoard scalars")
    resume: bool = help_field(True, "continue from out/checkpoint/state.pt when it exists")
    stop_at: int = help_field(0, "stop (and save) once this step is reached, keeping the schedule of `steps`; 0 = off")
    max_eval_clips: int = help_field(24, "validation clips used for the metrics")

    def validate(self) -> None:
        check_recipe(self, 'sound')
        if not self.manifest or not self.out:
            raise ConfigError("VocoderTrainConfig: manifest and out are required")
        if self.model.hop != self.mel.hop:
            raise ConfigError(f"VocoderTrainConfig: the generator upsamples by {self.model.hop}, the mel hop is {self.mel.hop}")
        if self.segment < self.mel.n_fft or self.segment % self.mel.hop:
            raise ConfigError(f"VocoderTrainConfig.segment must be a multiple of {self.mel.hop} and >= n_fft")
        if min(self.steps, self.batch_size, self.eval_every, self.log_every) < 1 or self.lr <= 0 or self.disc_start < 0:
            raise ConfigError("VocoderTrainConfig: steps, batch_size, eval_every, log_every >= 1, lr > 0, disc_start >= 0")
        if self.max_minutes < 0:
            raise ConfigError("VocoderTrainConfig.max_minutes must be >= 0")


def random_segments(wavs: list[np.ndarray], n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random segments ``(n, length)``; shorter clips sit at a random offset in silence."""
    out = torch.zeros(n, length)
    for i, j in enumerate(torch.randint(0, len(wavs), (n,), generator=gen).tolist()):
        w = torch.from_numpy(wavs[j])
        if len(w) >= length:
            s = int(torch.randint(0, len(w) - length + 1, (1,), generator=gen))
            out[i] = w[s : s + length]
        else:
            s = int(torch.randint(0, length - len(w) + 1, (1,), generator=gen))
            out[i, s : s + len(w)] = w
    return out


@torch.no_grad()
def evaluate_vocoders(voc: HifiGanVocoder, wavs: list[np.ndarray], front: MelFrontend) -> dict[str, float]:
    """Validation mel L1 of the neural vocoder and of Griffin-Lim on the same clips."""
    voc.eval()
    gl = GriffinLim(front.cfg)
    errs: dict[str, list[float]] = {"hifigan": [], "griffin_lim": []}
    for w in wavs:
        m = front.mel(w)
        errs["hifigan"].append(mel_l1(front.mel(voc(m)), m))
        errs["griffin_lim"].append(mel_l1(front.mel(gl(m)), m))
    voc.train()
    return {f"mel_l1_{k}": float(np.mean(v)) for k, v in errs.items()} | {"n_clips": len(wavs)}


def train_vocoder(cfg: VocoderTrainConfig) -> Path:
    """Train (or resume) the vocoder described by ``cfg``; return the checkpoint folder."""
    from safetensors.torch import load_file, save_file

    from auralm.core.progress import progress
    from auralm.recipes.sound.data import load_clips
    from auralm.recipes.sound.evaluate import log_media
    from auralm.recipes.sound.train_tokenizer import tb_writer

    out, ckpt = Path(cfg.out), Path(cfg.out) / "checkpoint"
    front = MelFrontend(cfg.mel)
    train = [w for w in load_clips(cfg.manifest, "train", cfg.mel.sample_rate)[0] if len(w) >= cfg.mel.n_fft]
    try:
        valid = load_clips(cfg.manifest, "valid", cfg.mel.sample_rate, cfg.max_eval_clips)[0]
    except ConfigError:
        valid = train[: cfg.max_eval_clips]
    if not train:
        raise ConfigError(f"{cfg.manifest}: no training clips of at least {cfg.mel.n_fft} samples")
    save_config(cfg, out)
    torch.manual_seed(cfg.seed)
    voc = HifiGanVocoder(cfg.model, cfg.mel)
    mpd, msd = MultiPeriodDiscriminator(), MultiScaleDiscriminator()
    opt_g = torch.optim.AdamW(voc.parameters(), cfg.lr, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW([*mpd.parameters(), *msd.parameters()], cfg.lr, betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    first, elapsed = 0, 0.0
    if cfg.resume and (ckpt / "state.pt").is_file():
        state = torch.load(ckpt / "state.pt", weights_only=False)
        voc.generator.load_state_dict(load_file(str(ckpt / "weights.safetensors")))
        mpd.load_state_dict(state["mpd"])
        msd.load_state_dict(state["msd"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"auralm sound train-vocoder: resuming at step {first}", file=sys.stderr)

    def save(metrics: dict, next_step: int) -> None:
        with atomic_dir(ckpt) as tmp:
            save_config(cfg, tmp)
            save_file({k: v.contiguous() for k, v in voc.generator.state_dict().items()}, str(tmp / "weights.safetensors"))
            torch.save({"mpd": mpd.state_dict(), "msd": msd.state_dict(), "opt_g": opt_g.state_dict(),
                        "opt_d": opt_d.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                        "step": next_step, "elapsed": elapsed}, tmp / "state.pt")  # fmt: skip
            atomic_write_json(tmp / "metrics.json", metrics)

    writer = tb_writer(out / "tb")
    voc.train()
    metrics: dict = {}
    start = time.perf_counter() - elapsed
    for step in progress(range(first, cfg.steps), desc="train vocoder", total=cfg.steps - first):
        real = random_segments(train, cfg.batch_size, cfg.segment, gen)  # B, S
        mel = front.mel(real)  # B, M, S/hop
        fake = voc(mel)  # B, S
        logs: dict[str, float] = {}
        gan = step >= cfg.disc_start
        if gan:
            loss_d = discriminator_loss(mpd(real), mpd(fake.detach())) + discriminator_loss(msd(real), msd(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            logs["disc"] = float(loss_d.detach())
        loss_mel = torch.nn.functional.l1_loss(front.mel(fake), mel)
        loss_g = cfg.lambda_mel * loss_mel
        if gan:
            real_p, fake_p, real_s, fake_s = mpd(real), mpd(fake), msd(real), msd(fake)
            adv = generator_adv_loss(fake_p) + generator_adv_loss(fake_s)
            fm = feature_matching_loss(real_p, fake_p) + feature_matching_loss(real_s, fake_s)
            loss_g = loss_g + adv + cfg.lambda_fm * fm
            logs |= {"adv": float(adv.detach()), "feature_matching": float(fm.detach())}
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        logs |= {"mel_l1": float(loss_mel.detach()), "gen_total": float(loss_g.detach())}
        elapsed = time.perf_counter() - start
        done = step + 1 == cfg.steps or step + 1 == cfg.stop_at or bool(cfg.max_minutes and elapsed > cfg.max_minutes * 60)
        if writer is not None and step % cfg.log_every == 0:
            for k, v in logs.items():
                writer.add_scalar(f"vocoder/{k}", v, step)
        if (step + 1) % cfg.eval_every == 0 or done:
            metrics = {"step": step + 1, "train_seconds": round(elapsed, 1), "valid": evaluate_vocoders(voc, valid, front)}
            if writer is not None:
                for k, v in metrics["valid"].items():
                    writer.add_scalar(f"vocoder_valid/{k}", v, step + 1)
                m = front.mel(valid[0])
                with torch.no_grad():
                    voc.eval()
                    wav = voc(m)
                    voc.train()
                log_media(writer, "vocoder", m, front.mel(wav), cfg.mel, step + 1, wav=wav)
            save(metrics, step + 1)
            if done:
                break
    if writer is not None:
        writer.close()
    if metrics:
        v = metrics["valid"]
        print(f"auralm sound train-vocoder: step {metrics['step']}, {metrics['train_seconds']:.0f} s; valid mel L1 "
              f"HiFi-GAN {v['mel_l1_hifigan']:.3f} vs Griffin-Lim {v['mel_l1_griffin_lim']:.3f}; wrote {ckpt}",
              file=sys.stderr)  # fmt: skip
    return ckpt
