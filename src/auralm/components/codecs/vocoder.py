"""Vocoders behind one interface: log-mel ``(B, n_mels, F)`` in, waveform ``(B, F * hop)`` out.

* :class:`GriffinLim` needs no training: least-squares magnitudes from the mel filterbank's
  pseudo-inverse, then fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99) for ``n_iter`` rounds.
* :class:`HifiGanVocoder` wraps a small HiFi-GAN generator (Kong et al. 2020, arXiv 2010.05646):
  transposed-conv upsampling stages, each followed by a multi-receptive-field fusion (MRF) of
  dilated residual blocks. It is trained by the sound recipe's vocoder trainer against the
  multi-period (:class:`MultiPeriodDiscriminator`) and multi-scale (:class:`MultiScaleDiscriminator`)
  discriminators defined here, with mel L1 and feature-matching losses.

:func:`load_vocoder` reads a checkpoint folder (``config.yaml`` + ``weights.safetensors``); the name
``"griffin-lim"`` gives the baseline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from auralm.components.codecs.mel import MelConfig, MelFrontend
from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError, ModelNotFoundError


class Vocoder:
    """Interface: ``sample_rate``, ``hop``, ``mel_config`` and ``__call__(logmel (B, M, F)) -> (B, F*hop)``."""

    mel_config: MelConfig

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def hop(self) -> int:
        return self.mel_config.hop

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class GriffinLim(Vocoder):
    """Phase recovery by fast Griffin-Lim from the pseudo-inverse magnitudes of a log-mel."""

    name = "griffin-lim"

    def __init__(self, mel_config: MelConfig | None = None, n_iter: int = 48, momentum: float = 0.99, seed: int = 0):
        self.mel_config = mel_config or MelConfig()
        self.front = MelFrontend(self.mel_config)
        self.n_iter, self.momentum, self.seed = int(n_iter), float(momentum), int(seed)

    @torch.no_grad()
    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        single = logmel.ndim == 2
        logmel = logmel[None] if single else logmel
        mag = self.front.magnitude_from_mel(logmel.float())  # B, K, F
        gen = torch.Generator().manual_seed(self.seed)
        phase = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=gen))
        prev = torch.zeros_like(phase)
        for _ in range(self.n_iter):
            spec = self.front.stft(self.front.istft(mag * phase))
            accel = spec + self.momentum / (1 + self.momentum) * (spec - prev)  # the "fast" GL step
            prev = spec
            phase = accel / accel.abs().clamp_min(1e-8)
        wav = self.front.istft(mag * phase)
        return wav[0] if single else wav


# ---------------------------------------------------------------------------------------------------
# HiFi-GAN generator


@dataclasses.dataclass
class HifiGanConfig(Config):
    """Shape of the generator (small by default so it trains on a CPU)."""

    upsample_rates: list[int] = help_field([8, 4, 4], "upsampling factor of each stage; their product is the hop")
    initial_channels: int = help_field(128, "channels after the input conv; halved at each stage")
    resblock_kernels: list[int] = help_field([3, 7], "kernel sizes of the MRF's parallel residual blocks")
    resblock_dilations: list[int] = help_field([1, 3], "dilations inside each residual block")

    def validate(self) -> None:
        if not self.upsample_rates or any(r < 2 for r in self.upsample_rates):
            raise ConfigError(f"HifiGanConfig.upsample_rates must be >= 2, got {self.upsample_rates}")
        if self.initial_channels < 2 ** len(self.upsample_rates):
            raise ConfigError("HifiGanConfig.initial_channels is too small to halve at every stage")
        if not self.resblock_kernels or any(k < 1 or k % 2 == 0 for k in self.resblock_kernels):
            raise ConfigError(f"HifiGanConfig.resblock_kernels must be odd, got {self.resblock_kernels}")
        if not self.resblock_dilations or any(d < 1 for d in self.resblock_dilations):
            raise ConfigError(f"HifiGanConfig.resblock_dilations must be >= 1, got {self.resblock_dilations}")

    @property
    def hop(self) -> int:
        out = 1
        for r in self.upsample_rates:
            out *= r
        return out


class ResBlock(nn.Module):
    """Dilated residual block: for each dilation, x += conv(lrelu(conv_dilated(lrelu(x))))."""

    def __init__(self, ch: int, kernel: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(ch, ch, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HifiGanGenerator(nn.Module):
    """Log-mel ``(B, M, F)`` -> waveform ``(B, F * prod(upsample_rates))``."""

    def __init__(self, cfg: HifiGanConfig, n_mels: int) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.initial_channels
        self.conv_pre = nn.Conv1d(n_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        for r in cfg.upsample_rates:
            # kernel 2r, padding ceil(r/2), output_padding r % 2: exactly r times the length
            k = 2 * r
            self.ups.append(nn.ConvTranspose1d(ch, ch // 2, k, stride=r, padding=r // 2 + r % 2, output_padding=r % 2))
            ch //= 2
            self.mrfs.append(nn.ModuleList(ResBlock(ch, k_, cfg.resblock_dilations) for k_ in cfg.resblock_kernels))
        self.conv_post = nn.Conv1d(ch, 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)  # B, C, F
        for up, mrf in zip(self.ups, self.mrfs):
            x = up(F.leaky_relu(x, 0.1))  # B, C/2, F * r
            x = sum(block(x) for block in mrf) / len(mrf)
        return torch.tanh(self.conv_post(F.leaky_relu(x, 0.1))).squeeze(1)  # B, S


class HifiGanVocoder(Vocoder, nn.Module):
    """A trained :class:`HifiGanGenerator` behind the :class:`Vocoder` interface."""

    name = "hifigan"

    def __init__(self, cfg: HifiGanConfig, mel_config: MelConfig) -> None:
        nn.Module.__init__(self)
        if cfg.hop != mel_config.hop:
            raise ConfigError(f"the generator upsamples by {cfg.hop} but the mel hop is {mel_config.hop}")
        self.cfg, self.mel_config = cfg, mel_config
        self.generator = HifiGanGenerator(cfg, mel_config.n_mels)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.generator(logmel)

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor:
        single = logmel.ndim == 2
        x = logmel[None] if single else logmel
        if torch.is_grad_enabled() and self.training:
            out = nn.Module.__call__(self, x)
        else:
            with torch.no_grad():
                out = nn.Module.__call__(self, x.float())
        return out[0] if single else out


# ---------------------------------------------------------------------------------------------------
# discriminators (training only)


class PeriodDiscriminator(nn.Module):
    """Looks at every ``period``-th sample: reshape ``(B, S)`` to ``(B, 1, S/p, p)`` and run 2-D convs."""

    def __init__(self, period: int, channels: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        super().__init__()
        self.period = period
        chans = (1, *channels)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, (5, 1), stride=(3, 1) if i < len(channels) - 1 else 1, padding=(2, 0))
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))
        )
        self.post = nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, s = wav.shape
        if s % self.period:
            wav = F.pad(wav, (0, self.period - s % self.period), mode="reflect")
        x = wav.reshape(b, 1, -1, self.period)  # B, 1, S/p, p
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    """Grouped strided 1-D convs over the waveform at one scale."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        super().__init__()
        chans = (1, *channels)
        self.convs = nn.ModuleList()
        for i, (a, b) in enumerate(zip(chans[:-1], chans[1:])):
            groups = 1 if i == 0 else 4
            self.convs.append(nn.Conv1d(a, b, 15 if i == 0 else 21, stride=1 if i == 0 else 4, padding=7 if i == 0 else 10,
                                        groups=groups))  # fmt: skip
        self.post = nn.Conv1d(chans[-1], 1, 3, padding=1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = wav[:, None, :]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: tuple[int, ...] = (2, 3, 5, 7, 11)) -> None:
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p) for p in periods)

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(wav) for d in self.discs]


class MultiScaleDiscriminator(nn.Module):
    """The same discriminator shape on the waveform at 1x, 2x and 4x average-pooled scales."""

    def __init__(self, scales: int = 3) -> None:
        super().__init__()
        self.discs = nn.ModuleList(ScaleDiscriminator() for _ in range(scales))

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        out = []
        for i, d in enumerate(self.discs):
            if i:
                wav = F.avg_pool1d(wav[:, None], 4, 2, padding=2).squeeze(1)
            out.append(d(wav))
        return out


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Least-squares GAN: real scores toward 1, fake toward 0."""
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for (r, _), (f, _) in zip(real, fake))


def generator_adv_loss(fake: list) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f, _ in fake)


def feature_matching_loss(real: list, fake: list) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real and generated audio."""
    return sum(F.l1_loss(ff, rf.detach()) for (_, rfs), (_, ffs) in zip(real, fake) for rf, ff in zip(rfs, ffs))


def load_vocoder(path_or_name: str | Path, mel_config: MelConfig | None = None) -> Vocoder:
    """``"griffin-lim"`` (with ``mel_config``) or a vocoder checkpoint folder: ``config.yaml`` (its ``mel`` and
    ``model`` sections, as the sound recipe's vocoder trainer writes them) and ``weights.safetensors``."""
    if str(path_or_name) == "griffin-lim":
        return GriffinLim(mel_config)
    import yaml
    from safetensors.torch import load_file

    folder = Path(path_or_name)
    if not (folder / "config.yaml").is_file() or not (folder / "weights.safetensors").is_file():
        raise ModelNotFoundError(f"{folder} is not a vocoder checkpoint (needs config.yaml and weights.safetensors)")
    data = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    if not isinstance(data, dict) or "model" not in data or "mel" not in data:
        raise ConfigError(f"{folder}/config.yaml has no 'mel' and 'model' sections: not a vocoder checkpoint")
    cfg_mel, cfg_model = MelConfig.from_dict(data["mel"]), HifiGanConfig.from_dict(data["model"])
    if mel_config is not None and mel_config != cfg_mel:
        raise ConfigError(f"vocoder {folder} was trained on mels {cfg_mel} but {mel_config} was asked for")
    voc = HifiGanVocoder(cfg_model, cfg_mel)
    voc.generator.load_state_dict(load_file(str(folder / "weights.safetensors")))
    return voc.eval()
