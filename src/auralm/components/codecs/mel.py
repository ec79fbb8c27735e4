"""The log-mel frontend shared by the tokenizer, the vocoders and the evaluation.

Defaults (see docs/sound.md for why): 16 kHz audio (the Whisper judge's rate), ``n_fft`` 512 (a 32 ms
window), hop 128 (125 frames/s), 80 mel bins from 0 to 8 kHz, natural log of the magnitude mel clamped at 1e-5.

Framing follows HiFi-GAN: the waveform is zero-padded by ``(n_fft - hop) / 2`` on both sides and cut
into frames without further centring, so a clip of ``S`` samples has exactly ``S // hop`` frames and a
vocoder that emits ``hop`` samples per frame gives back ``F * hop`` samples. :func:`istft` is our own
overlap-add inverse of :func:`stft` (it divides by the summed squared window), used by Griffin-Lim.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from auralm.core.config import Config, help_field
from auralm.core.errors import AudioError, ConfigError

LOG_FLOOR = 1e-5
LOG_SILENCE = math.log(LOG_FLOOR)  # the value a silent frame takes in every bin


@dataclasses.dataclass
class MelConfig(Config):
    """Shape of the log-mel spectrogram."""

    sample_rate: int = help_field(16000, "audio sample rate (Hz)")
    n_fft: int = help_field(512, "FFT size (also the window length)")
    hop: int = help_field(128, "samples between frames (frame rate = sample_rate / hop)")
    n_mels: int = help_field(80, "mel bins")
    f_min: float = help_field(0.0, "lowest mel filter edge (Hz)")
    f_max: float = help_field(8000.0, "highest mel filter edge (Hz), at most sample_rate / 2")

    def validate(self) -> None:
        if self.sample_rate < 4000:
            raise ConfigError(f"MelConfig.sample_rate must be at least 4000, got {self.sample_rate}")
        if self.n_fft < 16 or self.n_fft & (self.n_fft - 1):
            raise ConfigError(f"MelConfig.n_fft must be a power of two >= 16, got {self.n_fft}")
        if not 0 < self.hop <= self.n_fft or (self.n_fft - self.hop) % 2:
            raise ConfigError(f"MelConfig.hop must be in (0, n_fft] with n_fft - hop even, got {self.hop}")
        if not 1 <= self.n_mels <= self.n_fft // 2:
            raise ConfigError(f"MelConfig.n_mels must be in 1..n_fft/2, got {self.n_mels}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(f"MelConfig: need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")

    @property
    def frame_rate(self) -> float:
        """Mel frames per second."""
        return self.sample_rate / self.hop


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: MelConfig) -> torch.Tensor:
    """``(n_mels, n_fft/2 + 1)`` triangular filters on the HTK mel scale, each normalised to unit area."""
    freqs = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(cfg.f_min)), _hz_to_mel(np.array(cfg.f_max)), cfg.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb *= (2.0 / (hi - lo))  # Slaney-style area normalisation: equal energy per band
    return torch.tensor(fb, dtype=torch.float32)


class MelFrontend:
    """Waveforms -> log-mels and back to linear magnitudes; caches the window and the filterbank."""

    def __init__(self, cfg: MelConfig | None = None) -> None:
        self.cfg = cfg or MelConfig()
        self.window = torch.hann_window(self.cfg.n_fft)
        self.fb = mel_filterbank(self.cfg)  # M, K

    def num_frames(self, num_samples: int) -> int:
        return int(num_samples) // self.cfg.hop

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """``(B, S)`` -> complex ``(B, K, S // hop)`` with HiFi-GAN framing."""
        pad = (self.cfg.n_fft - self.cfg.hop) // 2
        x = torch.nn.functional.pad(wav[:, None, :], (pad, pad)).squeeze(1)  # B, S + n_fft - hop
        return torch.stft(x, self.cfg.n_fft, self.cfg.hop, window=self.window.to(x.device), center=False,
                          return_complex=True)  # fmt: skip

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """Overlap-add inverse of :meth:`stft`: complex ``(B, K, F)`` -> ``(B, F * hop)``."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop
        win = self.window.to(spec.device)
        frames = torch.fft.irfft(spec, n=n_fft, dim=1) * win[None, :, None]  # B, n_fft, F
        n_frames = frames.shape[-1]
        length = n_fft + hop * (n_frames - 1)
        fold = torch.nn.functional.fold
        out = fold(frames, (1, length), (1, n_fft), stride=(1, hop)).reshape(spec.shape[0], length)
        env = fold(win.pow(2)[None, :, None].expand(1, n_fft, n_frames), (1, length), (1, n_fft), stride=(1, hop))
        out = out / env.reshape(1, length).clamp_min(1e-8)
        pad = (n_fft - hop) // 2
        return out[:, pad : pad + n_frames * hop]

    def mel(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-mel of ``(S,)`` or ``(B, S)`` audio: ``(n_mels, F)`` or ``(B, n_mels, F)``, F = S // hop."""
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32) if isinstance(wav, np.ndarray) else wav).float()
        single = x.ndim == 1
        x = x[None] if single else x
        if x.ndim != 2:
            raise AudioError(f"expected mono audio of shape (S,) or (B, S), got {tuple(x.shape)}")
        if x.shape[-1] < self.cfg.hop:
            raise AudioError(f"a clip of {x.shape[-1]} samples is shorter than one mel frame ({self.cfg.hop} samples)")
        mag = self.stft(x).abs()  # B, K, F
        out = torch.log(torch.clamp(self.fb.to(x.device) @ mag, min=LOG_FLOOR))  # B, M, F
        return out[0] if single else out

    def magnitude_from_mel(self, logmel: torch.Tensor, n_iter: int = 60) -> torch.Tensor:
        """Non-negative least-squares magnitudes ``(B, K, F)`` from log-mels ``(B, M, F)``.

        Multiplicative updates (Lee & Seung) for ``min ||fb @ mag - mel||`` with ``mag >= 0``: far closer
        than the clipped pseudo-inverse, whose negative lobes clipping to zero would distort the bands.
        """
        fb = self.fb.to(logmel.device)
        target = torch.exp(logmel)
        numer = fb.T @ target  # B, K, F
        mag = numer.clamp_min(1e-8)
        for _ in range(n_iter):
            mag = mag * numer / (fb.T @ (fb @ mag) + 1e-10)
        return mag


def mel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two log-mels over their common frames (in log units)."""
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).abs().mean())
