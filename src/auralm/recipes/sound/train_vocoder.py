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
reports the validation mel error of both.

The two updates are :meth:`VocoderTask.train_step`, a step function the training engine
(:func:`auralm.training.loop.fit`) calls; the engine owns both optimizers, the schedule, the processes, the
caps and the checkpoints (``out/checkpoints/step-N``: config.yaml, weights.safetensors of the generator,
trainer_state.pt with the discriminators, both optimizers, step and RNG states, metrics.json; ``out/latest``);
``out/tb`` has TensorBoard scalars, mel images and audio.
"""

from __future__ import annotations

import dataclasses
import sys
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
from auralm.core.config import check_recipe, help_field, recipe_field
from auralm.core.errors import ConfigError
from auralm.training.config import OptimConfig, RunConfig
from auralm.training.loop import Task


@dataclasses.dataclass
class VocoderOptimConfig(OptimConfig):
    """The engine's optimizer settings with HiFi-GAN's defaults: AdamW (0.8, 0.99), a constant learning rate."""

    lr: float = help_field(2e-4, "learning rate of the generator and the discriminators (AdamW)")
    weight_decay: float = help_field(0.01, "AdamW weight decay")
    betas: list = help_field([0.8, 0.99], "AdamW betas")
    grad_clip: float = help_field(0.0, "unused: the GAN step does not clip")
    schedule: str = help_field("constant", "cosine, linear or constant (after warmup_steps)")
    batch_size: int = help_field(8, "GLOBAL segments per step")
    max_steps: int = help_field(3000, "optimizer steps of the whole run")


@dataclasses.dataclass
class VocoderTrainConfig(RunConfig):
    """Settings of ``auralm sound train-vocoder``: the run (:class:`auralm.training.config.RunConfig`) and the vocoder."""

    recipe: str = recipe_field("sound")
    out: str = help_field("", "run folder: config.yaml, train_log.jsonl, tb/, checkpoints/step-N/, latest")
    optim: VocoderOptimConfig = help_field(default_factory=VocoderOptimConfig, help="optimizer + run length")
    log_every: int = help_field(25, "log the means of the last log_every steps")
    eval_every: int = help_field(500, "validate (mel L1 of both vocoders, a mel image and audio) every K steps and at the end")
    save_every: int = help_field(500, "write a checkpoint every K steps (and always at the end)")
    manifest: str = help_field("", "manifest of training clips (split train; valid for evaluation)")
    mel: MelConfig = help_field(default_factory=MelConfig, help="log-mel frontend (must match the tokenizer's)")
    model: HifiGanConfig = help_field(default_factory=HifiGanConfig, help="generator shape")
    segment: int = help_field(8192, "samples per segment (a multiple of the mel hop)")
    disc_start: int = help_field(400, "step at which the discriminators and adversarial losses start")
    lambda_mel: float = help_field(45.0, "weight of the mel L1 loss")
    lambda_fm: float = help_field(2.0, "weight of the feature-matching loss")
    max_eval_clips: int = help_field(24, "validation clips used for the metrics")

    RESUMABLE = RunConfig.RESUMABLE | {"max_eval_clips"}

    def validate(self) -> None:
        check_recipe(self, 'sound')
        super().validate()
        if not self.manifest or not self.out:
            raise ConfigError("VocoderTrainConfig: manifest and out are required")
        if self.model.hop != self.mel.hop:
            raise ConfigError(f"VocoderTrainConfig: the generator upsamples by {self.model.hop}, the mel hop is {self.mel.hop}")
        if self.segment < self.mel.n_fft or self.segment % self.mel.hop:
            raise ConfigError(f"VocoderTrainConfig.segment must be a multiple of {self.mel.hop} and >= n_fft")
        if self.disc_start < 0:
            raise ConfigError("VocoderTrainConfig.disc_start must be >= 0")
        if self.optim.grad_accum != 1:
            raise ConfigError("VocoderTrainConfig: the GAN step takes no gradient accumulation (optim.grad_accum=1)")


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


class VocoderTask(Task):
    """Generator + multi-period and multi-scale discriminators; the GAN's two updates are its own step function
    (the engine owns both optimizers, their schedule, the processes and the checkpoints)."""

    def __init__(self, cfg: VocoderTrainConfig, train: list[np.ndarray], valid: list[np.ndarray]):
        self.cfg, self.train, self.valid = cfg, train, valid
        self.front = MelFrontend(cfg.mel)
        torch.manual_seed(cfg.optim.seed)
        self.voc = HifiGanVocoder(cfg.model, cfg.mel)
        self.mpd, self.msd = MultiPeriodDiscriminator(), MultiScaleDiscriminator()
        self.model = torch.nn.ModuleDict({"vocoder": self.voc, "mpd": self.mpd, "msd": self.msd})
        self.generators = {"segments": torch.Generator().manual_seed(cfg.optim.seed)}

    def parameter_groups(self) -> dict:
        return {"generator": [{"params": list(self.voc.parameters())}],
                "discriminators": [{"params": [*self.mpd.parameters(), *self.msd.parameters()]}]}

    def train_step(self, step: int, ctx) -> dict[str, float]:  # noqa: ANN001
        """(From ``disc_start`` on) the discriminators' least-squares update, then the generator's
        ``lambda_mel * mel L1`` (+ adversarial + ``lambda_fm *`` feature matching)."""
        cfg, opt_g, opt_d = self.cfg, ctx.optimizers["generator"], ctx.optimizers["discriminators"]
        batch = random_segments(self.train, cfg.optim.batch_size, cfg.segment, self.generators["segments"])
        real = ctx.shard(batch).to(ctx.device)  # this process's segments (B/N, S)
        mel = self.front.mel(real)  # B, M, S/hop
        fake = self.voc(mel)  # B, S
        logs: dict[str, float] = {}
        gan = step >= cfg.disc_start
        if gan:
            loss_d = discriminator_loss(self.mpd(real), self.mpd(fake.detach())) + \
                discriminator_loss(self.msd(real), self.msd(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            ctx.sync_grads([*self.mpd.parameters(), *self.msd.parameters()])
            opt_d.step()
            logs["disc"] = float(loss_d.detach())
        loss_mel = torch.nn.functional.l1_loss(self.front.mel(fake), mel)
        loss_g = cfg.lambda_mel * loss_mel
        if gan:
            real_p, fake_p, real_s, fake_s = self.mpd(real), self.mpd(fake), self.msd(real), self.msd(fake)
            adv = generator_adv_loss(fake_p) + generator_adv_loss(fake_s)
            fm = feature_matching_loss(real_p, fake_p) + feature_matching_loss(real_s, fake_s)
            loss_g = loss_g + adv + cfg.lambda_fm * fm
            logs |= {"adv": float(adv.detach()), "feature_matching": float(fm.detach())}
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        ctx.sync_grads(list(self.voc.parameters()))
        opt_g.step()
        return logs | {"mel_l1": float(loss_mel.detach()), "gen_total": float(loss_g.detach())}

    def validate(self, step: int, logger) -> dict[str, float]:  # noqa: ANN001
        from auralm.recipes.sound.evaluate import log_media

        scores = evaluate_vocoders(self.voc, self.valid, self.front)
        if logger.tb is not None:
            m = self.front.mel(self.valid[0])
            with torch.no_grad():
                self.voc.eval()
                wav = self.voc(m)
                self.voc.train()
            log_media(logger.tb, "vocoder", m, self.front.mel(wav), self.cfg.mel, step, wav=wav)
        return {f"valid/{k}": float(v) for k, v in scores.items()}

    def save_weights(self, folder: Path, step: int) -> None:
        """The generator (``weights.safetensors``; with the engine's config.yaml: what ``load_vocoder`` reads)."""
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.voc.generator.state_dict().items()}, str(folder / "weights.safetensors"))

    def load_weights(self, folder: Path) -> None:
        from safetensors.torch import load_file

        self.voc.generator.load_state_dict(load_file(str(folder / "weights.safetensors")))

    def state_dict(self) -> dict:
        return {"mpd": self.mpd.state_dict(), "msd": self.msd.state_dict()}  # the discriminators (trainer_state.pt)

    def load_state_dict(self, state: dict) -> None:
        self.mpd.load_state_dict(state["mpd"])
        self.msd.load_state_dict(state["msd"])


def train_vocoder(cfg: VocoderTrainConfig) -> Path:
    """Train (or resume, per ``cfg.resume``) the vocoder described by ``cfg``; return the checkpoint folder."""
    import json
    import os

    from auralm.recipes.sound.data import load_clips
    from auralm.training.loop import fit

    train = [w for w in load_clips(cfg.manifest, "train", cfg.mel.sample_rate)[0] if len(w) >= cfg.mel.n_fft]
    try:
        valid = load_clips(cfg.manifest, "valid", cfg.mel.sample_rate, cfg.max_eval_clips)[0]
    except ConfigError:
        valid = train[: cfg.max_eval_clips]
    if not train:
        raise ConfigError(f"{cfg.manifest}: no training clips of at least {cfg.mel.n_fft} samples")
    ckpt = fit(VocoderTask(cfg, train, valid), cfg, name="train vocoder", device="cpu")
    m = json.loads((ckpt / "metrics.json").read_text())
    v = m.get("valid", {})
    if v and int(os.environ.get("RANK", "0")) == 0:
        print(f"auralm sound train-vocoder: step {m['step']} ({m['stopped_by']}), {m['elapsed_s']:.0f} s; valid mel L1 "
              f"HiFi-GAN {v['mel_l1_hifigan']:.3f} vs Griffin-Lim {v['mel_l1_griffin_lim']:.3f}; wrote {ckpt}",
              file=sys.stderr)  # fmt: skip
    return ckpt
