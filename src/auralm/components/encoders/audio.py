"""Audio encoders behind one interface: 16 kHz waveforms in, ``(B, T, D)`` states and ``(B,)`` lengths out.

Three families share :class:`AudioEncoder`:

* :class:`WhisperAudioEncoder` runs a transformers ``WhisperEncoder``'s own modules (``conv1``, ``conv2``,
  ``embed_positions``, ``layers``, ``layer_norm``) on log-mel features of the *real* audio length, so a
  3 s clip gives 150 frames instead of 1500 frames of encoded padding. ``pad_to_30s=True`` reproduces the
  stock behaviour (features padded to the model's window, identical to ``WhisperEncoder.forward``);
  the returned lengths are the real ones either way.
* :class:`HFAudioEncoder` wraps a transformers wav2vec2-family model (wav2vec2, HuBERT, WavLM, w2v-BERT)
  with its feature extractor.
* :class:`ConvAudioEncoder` is a small log-mel conv stack for from-scratch tiny runs.

Every encoder is frozen (``requires_grad`` off, eval mode, no autograd graph) unless built with
``trainable=True``; a frozen encoder stays in eval mode when a parent module calls ``.train()``.
Batches of unequal lengths give the same per-item states as encoding each item alone (up to float
rounding), because padding is masked wherever it could leak (after each conv, and in attention).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from auralm.components.encoders.base import FrozenEncoder
from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AudioError, ConfigError

Waveforms = Sequence[np.ndarray | torch.Tensor] | torch.Tensor | np.ndarray


def weights_revision(module: nn.Module) -> str:
    """A revision string for weights that have no published one (random or from-scratch): a content hash.
    0-d buffers (batch norm's ``num_batches_tracked``) are hashed as one element (same bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "w" + h.hexdigest()[:16]


def as_waveforms(wavs: Waveforms, lengths: torch.Tensor | Sequence[int] | None = None) -> list[np.ndarray]:
    """Normalise the accepted inputs to a list of 1-D float32 numpy arrays (one per item).

    Accepts a list of 1-D arrays/tensors, or a padded ``(B, S)`` array/tensor with optional ``lengths``.
    """
    if isinstance(wavs, (torch.Tensor, np.ndarray)) and wavs.ndim == 2:
        full = wavs.shape[1]
        lens = [full] * wavs.shape[0] if lengths is None else [int(n) for n in lengths]
        if len(lens) != wavs.shape[0] or any(n < 0 or n > full for n in lens):
            raise AudioError(f"lengths {lens} do not fit a padded batch of shape {tuple(wavs.shape)}")
        wavs = [wavs[i, :n] for i, n in enumerate(lens)]
    elif isinstance(wavs, (torch.Tensor, np.ndarray)):
        raise AudioError(f"expected a list of 1-D waveforms or a padded (B, S) batch, got shape {tuple(wavs.shape)}")
    elif lengths is not None:
        raise AudioError("lengths go with a padded (B, S) batch, not with a list of waveforms")
    out = []
    for i, wav in enumerate(wavs):
        arr = wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
        if arr.ndim != 1:
            raise AudioError(f"waveform {i} must be 1-D (mono samples at {SAMPLE_RATE} Hz), got shape {arr.shape}")
        if arr.size == 0:
            raise AudioError(f"waveform {i} is empty")
        if not np.all(np.isfinite(arr)):
            raise AudioError(f"waveform {i} contains NaN or infinite samples")
        out.append(arr.astype(np.float32, copy=False))
    if not out:
        raise AudioError("no waveforms to encode")
    return out


def _time_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, size)`` bool mask, True on the first ``lengths[b]`` steps."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _zero_padding(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero ``(B, T, D)`` states beyond each item's length."""
    return states * _time_mask(lengths.to(states.device), states.shape[1])[:, :, None].to(states.dtype)


class AudioEncoder(FrozenEncoder):
    """Base class. Attributes: ``name``, ``revision``, ``sample_rate``, ``dim``, ``frame_rate``,
    ``max_samples`` (longest accepted input, or None), ``trainable``."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, name: str, revision: str, dim: int, frame_rate: float, max_samples: int | None = None):
        super().__init__()
        self.name = name
        self.revision = revision
        self.dim = int(dim)
        self.frame_rate = float(frame_rate)
        self.max_samples = max_samples
        self.trainable = False

    def output_lengths(self, num_samples: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Frames of output for inputs of ``num_samples`` samples (long tensor)."""
        raise NotImplementedError

    def encode(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Subclasses: encode a checked list of 1-D float32 waveforms."""
        raise NotImplementedError

    def forward(
        self, wavs: Waveforms, lengths: torch.Tensor | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode 16 kHz mono audio. Returns ``states (B, T, D)`` and ``lengths (B,)`` (long, on CPU)."""
        items = as_waveforms(wavs, lengths)
        if self.max_samples is not None:
            too_long = [i for i, w in enumerate(items) if len(w) > self.max_samples]
            if too_long:
                raise AudioError(
                    f"{self.name} accepts at most {self.max_samples / self.sample_rate:g} s of audio; "
                    f"item(s) {too_long} are longer (cut long audio with `auralm chunk`)"
                )
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            states, out_lengths = self.encode(items)
        return states, out_lengths.long().cpu()


class _LogMel:
    """Whisper-style log-mel features per item, padded into a batch: ``(B, n_mels, F)`` plus frame counts."""

    def __init__(self, feature_extractor: Any):
        self.fe = feature_extractor
        self.hop = int(feature_extractor.hop_length)
        self.n_fft = int(feature_extractor.n_fft)

    def frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.clamp(num_samples.long() // self.hop, min=1)

    def __call__(self, wavs: list[np.ndarray], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.frames(torch.tensor([len(w) for w in wavs]))
        if pad_to is not None:  # the stock path: every item padded to the model's window in one call
            out = self.fe(wavs, sampling_rate=SAMPLE_RATE, padding="max_length", return_tensors="pt")
            return out["input_features"], lengths
        feats = []
        for wav, n in zip(wavs, lengths.tolist()):
            if len(wav) < self.n_fft:  # STFT reflect-padding needs a few hundred samples
                wav = np.pad(wav, (0, self.n_fft - len(wav)))
            f = self.fe(wav, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="pt")["input_features"]
            feats.append(f[0, :, :n])
        batch = torch.zeros(len(feats), feats[0].shape[0], int(lengths.max()))
        for i, f in enumerate(feats):
            batch[i, :, : f.shape[1]] = f
        return batch, lengths


class WhisperAudioEncoder(AudioEncoder):
    """A transformers ``WhisperEncoder`` run at the real audio length (or padded, ``pad_to_30s=True``)."""

    def __init__(
        self, encoder: nn.Module, feature_extractor: Any, name: str, revision: str, pad_to_30s: bool = False
    ):
        cfg = encoder.config
        hop = int(feature_extractor.hop_length)
        window_frames = 2 * int(cfg.max_source_positions)
        if int(feature_extractor.nb_max_frames) != window_frames:
            raise ConfigError(
                f"{name}: feature extractor pads to {feature_extractor.nb_max_frames} mel frames but the encoder "
                f"has {cfg.max_source_positions} positions (needs {window_frames} frames)"
            )
        if int(feature_extractor.feature_size) != int(cfg.num_mel_bins):
            raise ConfigError(f"{name}: feature extractor has {feature_extractor.feature_size} mel bins, encoder {cfg.num_mel_bins}")
        super().__init__(name, revision, cfg.d_model, SAMPLE_RATE / hop / 2, max_samples=window_frames * hop)
        self.encoder = encoder
        self.mel = _LogMel(feature_extractor)
        self.window_frames = window_frames
        self.pad_to_30s = pad_to_30s
        self.set_trainable(False)

    def set_trainable(self, trainable: bool) -> WhisperAudioEncoder:
        """As the base class, but the sinusoidal position table stays frozen (as in stock Whisper)."""
        super().set_trainable(trainable)
        self.encoder.embed_positions.requires_grad_(False)
        return self

    def output_lengths(self, num_samples: torch.Tensor | Sequence[int]) -> torch.Tensor:
        mel = self.mel.frames(torch.as_tensor(num_samples))
        return (mel + 1) // 2  # conv2: kernel 3, stride 2, padding 1 -> ceil(mel / 2)

    def encode(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, mel_lengths = self.mel(wavs, pad_to=self.window_frames if self.pad_to_30s else None)
        lengths = (mel_lengths + 1) // 2
        states = self.encode_features(feats, None if self.pad_to_30s else mel_lengths)
        if not self.pad_to_30s:
            states = _zero_padding(states, lengths)
        return states, lengths

    def encode_features(self, feats: torch.Tensor, mel_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder on ``(B, n_mels, F)`` log-mels. ``mel_lengths`` masks per-item padding (None: no mask)."""
        enc = self.encoder
        x = feats.to(self.device, self.dtype)
        ragged = mel_lengths is not None and bool((mel_lengths != x.shape[-1]).any())
        x = nn.functional.gelu(enc.conv1(x))
        if ragged:  # zero conv1 outputs past each item's end, as the conv's zero padding would be alone
            x = x * _time_mask(mel_lengths.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)
        x = nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        steps = x.shape[1]
        if steps > enc.embed_positions.num_embeddings:
            raise AudioError(f"{self.name}: {steps} frames exceed the encoder's {enc.embed_positions.num_embeddings} positions")
        x = x + enc.embed_positions.weight[:steps]
        x = nn.functional.dropout(x, p=enc.dropout, training=self.training)
        mask = None
        if ragged:
            keep = _time_mask(((mel_lengths + 1) // 2).to(x.device), steps)
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(~keep, torch.finfo(x.dtype).min)
            mask = mask[:, None, None, :]
        for layer in enc.layers:
            if self.training and enc.layerdrop > 0 and torch.rand([]) < enc.layerdrop:
                continue
            x = layer(x, mask)
        return enc.layer_norm(x)


class HFAudioEncoder(AudioEncoder):
    """A transformers wav2vec2-family model (wav2vec2, HuBERT, WavLM, w2v-BERT) and its feature extractor.

    Models whose extractor returns no attention mask (group-norm wav2vec2-base) are run one item at a
    time, since their normalisation would otherwise see the batch padding. Clips shorter than the
    model's receptive field (``min_samples``) are zero-padded up to it (one output frame).
    """

    def __init__(self, model: nn.Module, feature_extractor: Any, name: str, revision: str):
        cfg = model.config
        dim = cfg.output_hidden_size if getattr(cfg, "add_adapter", False) else cfg.hidden_size
        super().__init__(name, revision, dim, 0.0)
        self.model = model
        self.fe = feature_extractor
        self.set_trainable(False)
        self.raw_input = feature_extractor.model_input_names[0] == "input_values"
        self.per_item = not getattr(feature_extractor, "return_attention_mask", False)
        self.min_samples = 0
        self.min_samples = int(torch.nonzero(self.output_lengths(torch.arange(1, SAMPLE_RATE)) > 0)[0, 0]) + 1
        a, b = self.output_lengths([SAMPLE_RATE * 100, SAMPLE_RATE * 200]).tolist()
        self.frame_rate = (b - a) / 100  # frames per second, free of the edge effect of the convs

    def output_lengths(self, num_samples: torch.Tensor | Sequence[int]) -> torch.Tensor:
        n = torch.clamp(torch.as_tensor(num_samples).long(), min=self.min_samples)
        if not self.raw_input:  # kaldi fbank frames (25 ms window, 10 ms hop), then stacked by the stride
            n = torch.clamp((n - 400) // 160 + 1, min=0) // int(getattr(self.fe, "stride", 1))
        return self.model._get_feat_extract_output_lengths(n).long()

    def _run(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        wavs = [np.pad(w, (0, self.min_samples - len(w))) if len(w) < self.min_samples else w for w in wavs]
        inputs = self.fe(
            wavs, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=not self.per_item, return_tensors="pt"
        )
        x = inputs[self.fe.model_input_names[0]].to(self.device, self.dtype)
        mask = inputs.get("attention_mask")
        out = self.model(x, attention_mask=None if mask is None else mask.to(self.device)).last_hidden_state
        if mask is not None:
            lengths = self.model._get_feat_extract_output_lengths(mask.sum(-1)).long().cpu()
        else:
            lengths = torch.full((len(wavs),), out.shape[1], dtype=torch.long)
        return out, lengths

    def encode(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.per_item:
            states, lengths = self._run(wavs)
            return _zero_padding(states[:, : int(lengths.max())], lengths), lengths
        outs = [self._run([w]) for w in wavs]
        lengths = torch.cat([n for _, n in outs])
        states = outs[0][0].new_zeros(len(outs), int(lengths.max()), self.dim)
        for i, (s, n) in enumerate(outs):
            states[i, : int(n[0])] = s[0, : int(n[0])]
        return states, lengths


class ConvAudioEncoder(AudioEncoder):
    """Log-mel -> conv (stride 1) -> ``downsample`` convs (stride 2) -> LayerNorm. For from-scratch tiny runs."""

    def __init__(self, n_mels: int = 80, dim: int = 256, downsample: int = 2, name: str = "conv-tiny", seed: int = 0):
        from transformers import WhisperFeatureExtractor

        super().__init__(name, "", dim, SAMPLE_RATE / 160 / 2**downsample)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.convs = nn.ModuleList(
                [nn.Conv1d(n_mels, dim, 3, padding=1)] + [nn.Conv1d(dim, dim, 3, stride=2, padding=1) for _ in range(downsample)]
            )
            self.norm = nn.LayerNorm(dim)
        self.mel = _LogMel(WhisperFeatureExtractor(feature_size=n_mels))
        self.revision = weights_revision(self)
        self.set_trainable(False)

    def output_lengths(self, num_samples: torch.Tensor | Sequence[int]) -> torch.Tensor:
        n = self.mel.frames(torch.as_tensor(num_samples))
        for _ in self.convs[1:]:
            n = (n + 1) // 2
        return n

    def encode(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, n = self.mel(wavs)
        x = feats.to(self.device, self.dtype)
        for i, conv in enumerate(self.convs):
            if i:
                n = (n + 1) // 2
            x = nn.functional.gelu(conv(x))
            x = x * _time_mask(n.to(x.device), x.shape[-1])[:, None, :].to(x.dtype)
        return self.norm(x.permute(0, 2, 1)) * _time_mask(n.to(x.device), x.shape[-1])[:, :, None], n
