"""The audio-tokenizer interface and the mel VQ-VAE behind it.

Layout of the codes: **one code per token frame**, a 1-D sequence per clip. The 80 log-mel bins are
the channels of a 1-D conv encoder over time (SpecVQGAN folds frequency into a 2-D grid instead; a
1-D sequence keeps the GPT's sequences short: with hop 128 at 16 kHz and ``downsample`` 4 there are
31.25 tokens a second, about 20 for a spoken digit). ``encode`` returns ``(B, T)`` ints in
``[0, codebook_size)``; ``decode`` turns codes back into a log-mel and a vocoder into audio.

A checkpoint folder (as the sound recipe's tokenizer trainer writes it) holds ``config.yaml`` (its
``mel`` and ``model`` sections), ``weights.safetensors``, ``trainer_state.pt`` (resume) and ``metrics.json``;
:func:`load_codec` reads it. A ``vocoder/`` subfolder, when present, is used for decoding;
otherwise Griffin-Lim.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from auralm.components.codecs.base import AudioTokenizer
from auralm.components.codecs.mel import LOG_SILENCE, MelConfig, MelFrontend
from auralm.components.codecs.quantizer import EMAQuantizer
from auralm.components.codecs.vocoder import GriffinLim, Vocoder, load_vocoder
from auralm.core.config import Config, help_field
from auralm.core.errors import AudioError, ConfigError, ModelNotFoundError


@dataclasses.dataclass
class MelVQConfig(Config):
    """Shape of the mel VQ-VAE."""

    codebook_size: int = help_field(128, "number of codes K (SpecVQGAN used 128)")
    code_dim: int = help_field(64, "dimension of each code vector")
    hidden: int = help_field(128, "channels of the conv encoder/decoder")
    downsample: int = help_field(4, "mel frames per token (a power of two: stride-2 stages)")
    res_blocks: int = help_field(1, "residual blocks per resolution")
    beta: float = help_field(0.25, "commitment loss weight")
    ema_decay: float = help_field(0.99, "EMA decay of the codebook")
    dead_threshold: float = help_field(0.5, "restart codes whose EMA count falls below this")
    mel_mean: float = help_field(-6.0, "log-mel normalisation mean (set from data by the trainer)")
    mel_std: float = help_field(3.0, "log-mel normalisation std (set from data by the trainer)")

    def validate(self) -> None:
        if self.codebook_size < 2 or self.code_dim < 1 or self.hidden < 1 or self.res_blocks < 0:
            raise ConfigError("MelVQConfig: codebook_size >= 2, code_dim >= 1, hidden >= 1, res_blocks >= 0 needed")
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ConfigError(f"MelVQConfig.downsample must be a power of two, got {self.downsample}")
        if not 0 < self.ema_decay < 1 or self.beta < 0 or self.mel_std <= 0:
            raise ConfigError("MelVQConfig: need 0 < ema_decay < 1, beta >= 0, mel_std > 0")


class _Res(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.GELU(), nn.Conv1d(ch, ch, 3, padding=1), nn.GELU(), nn.Conv1d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MelVQVAE(nn.Module):
    """Conv encoder -> EMA quantiser -> conv decoder over normalised log-mels ``(B, M, F)``."""

    def __init__(self, cfg: MelVQConfig, n_mels: int) -> None:
        super().__init__()
        self.cfg, self.n_mels = cfg, n_mels
        h, stages = cfg.hidden, int(math.log2(cfg.downsample))
        enc: list[nn.Module] = [nn.Conv1d(n_mels, h, 3, padding=1)]
        for _ in range(stages):
            enc += [*(_Res(h) for _ in range(cfg.res_blocks)), nn.GELU(), nn.Conv1d(h, h, 4, stride=2, padding=1)]
        enc += [*(_Res(h) for _ in range(cfg.res_blocks)), nn.GELU(), nn.Conv1d(h, cfg.code_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = EMAQuantizer(cfg.codebook_size, cfg.code_dim, cfg.ema_decay, cfg.beta, cfg.dead_threshold)
        dec: list[nn.Module] = [nn.Conv1d(cfg.code_dim, h, 3, padding=1), *(_Res(h) for _ in range(cfg.res_blocks))]
        for _ in range(stages):
            dec += [nn.GELU(), nn.ConvTranspose1d(h, h, 4, stride=2, padding=1), *(_Res(h) for _ in range(cfg.res_blocks))]
        dec += [nn.GELU(), nn.Conv1d(h, n_mels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def normalize(self, logmel: torch.Tensor) -> torch.Tensor:
        return (logmel - self.cfg.mel_mean) / self.cfg.mel_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cfg.mel_std + self.cfg.mel_mean

    def pad_frames(self, logmel: torch.Tensor) -> torch.Tensor:
        """Pad ``(B, M, F)`` with silence up to a multiple of ``downsample`` frames."""
        extra = -logmel.shape[-1] % self.cfg.downsample
        return F.pad(logmel, (0, extra), value=LOG_SILENCE) if extra else logmel

    def encode(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, M, F)`` -> codes ``(B, ceil(F / downsample))``."""
        z = self.encoder(self.normalize(self.pad_frames(logmel)))  # B, D, T
        flat = z.transpose(1, 2).reshape(-1, z.shape[1])
        return self.quantizer.nearest(flat).reshape(z.shape[0], z.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T)`` -> log-mel ``(B, M, T * downsample)``."""
        return self.denormalize(self.decoder(self.quantizer.lookup(codes)))

    def forward(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Log-mel ``(B, M, F)`` -> (reconstruction ``(B, M, F)``, codes ``(B, T)``, stats with losses)."""
        frames = logmel.shape[-1]
        x = self.normalize(self.pad_frames(logmel))  # B, M, T*ds
        z = self.encoder(x)  # B, D, T
        q, codes, stats = self.quantizer(z)
        recon = self.decoder(q)  # B, M, T*ds
        stats["recon"] = F.l1_loss(recon, x)
        stats["total"] = stats["recon"] + stats["loss"]
        return self.denormalize(recon)[..., :frames], codes, stats


class MelVQTokenizer(AudioTokenizer):
    """:class:`MelVQVAE` + a :class:`~auralm.components.codecs.vocoder.Vocoder` behind :class:`AudioTokenizer`."""

    def __init__(self, model: MelVQVAE, mel_config: MelConfig, vocoder: Vocoder | None = None) -> None:
        self.model = model.eval()
        self.mel_config = mel_config
        self.front = MelFrontend(mel_config)
        self.vocoder = vocoder or GriffinLim(mel_config)
        self.sample_rate = mel_config.sample_rate
        self.downsample = model.cfg.downsample
        self.samples_per_token = mel_config.hop * self.downsample
        self.frame_rate = self.sample_rate / self.samples_per_token
        self.codebook_size = model.cfg.codebook_size

    def mel(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(S,)`` or ``(B, S)`` -> ``(B, M, F)``, with a clear error for clips under one token frame."""
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32)) if not isinstance(wav, torch.Tensor) else wav.float()
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2:
            raise AudioError(f"expected mono audio (S,) or (B, S), got shape {tuple(x.shape)}")
        if x.shape[-1] < self.samples_per_token:
            raise AudioError(
                f"a clip of {x.shape[-1]} samples ({x.shape[-1] / self.sample_rate:.3f} s) is shorter than one token "
                f"frame ({self.samples_per_token} samples = {self.samples_per_token / self.sample_rate:.3f} s)"
            )
        return self.front.mel(x)

    @torch.no_grad()
    def encode(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Audio ``(S,)`` or ``(B, S)`` at :attr:`sample_rate` -> codes ``(B, T)`` (long),
        ``T = ceil((S // hop) / downsample)``. For clips of different lengths use :meth:`encode_many`."""
        return self.model.encode(self.mel(wav))

    def encode_many(self, wavs: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """One 1-D code tensor per clip (clips may differ in length)."""
        return [self.encode(w)[0] for w in wavs]

    @torch.no_grad()
    def decode_mel(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Codes ``(T,)`` or ``(B, T)`` -> log-mel ``(B, M, T * downsample)``."""
        c = torch.as_tensor(codes, dtype=torch.long)
        c = c[None] if c.ndim == 1 else c
        if c.ndim != 2 or c.shape[1] == 0:
            raise AudioError(f"expected codes of shape (T,) or (B, T) with T >= 1, got {tuple(c.shape)}")
        if int(c.min()) < 0 or int(c.max()) >= self.codebook_size:
            raise AudioError(f"codes must lie in [0, {self.codebook_size}), got [{int(c.min())}, {int(c.max())}]")
        return self.model.decode(c)

    def decode(self, codes: torch.Tensor | Sequence[int]) -> np.ndarray:
        """Codes ``(T,)`` or ``(B, T)`` -> float32 audio ``(B, T * samples_per_token)``."""
        with torch.no_grad():
            wav = self.vocoder(self.decode_mel(codes))
        return wav.clamp(-1, 1).cpu().numpy().astype(np.float32)


def save_tokenizer_weights(model: MelVQVAE, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "weights.safetensors"))


def load_codec(folder: str | Path, vocoder: Vocoder | str | Path | None = None) -> MelVQTokenizer:
    """A tokenizer checkpoint folder -> :class:`MelVQTokenizer`. ``vocoder``: a Vocoder, ``"griffin-lim"``, a
    vocoder folder, or None (the folder's ``vocoder/`` when present, else Griffin-Lim)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.yaml").is_file() or not (folder / "weights.safetensors").is_file():
        raise ModelNotFoundError(f"{folder} is not a tokenizer checkpoint (needs config.yaml and weights.safetensors)")
    data = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    if not isinstance(data, dict) or "model" not in data or "mel" not in data:
        raise ConfigError(f"{folder}/config.yaml has no 'mel' and 'model' sections: not a tokenizer checkpoint")
    mel_cfg, cfg = MelConfig.from_dict(data["mel"]), MelVQConfig.from_dict(data["model"])
    model = MelVQVAE(cfg, mel_cfg.n_mels)
    model.load_state_dict(load_file(str(folder / "weights.safetensors")))
    if vocoder is None:
        vocoder = folder / "vocoder" if (folder / "vocoder" / "config.yaml").is_file() else "griffin-lim"
    if not isinstance(vocoder, Vocoder):
        vocoder = load_vocoder(vocoder, mel_cfg)
    return MelVQTokenizer(model, mel_cfg, vocoder)
