"""Audio encoders by name: :func:`build_audio_encoder` looks names up in :data:`ENCODERS`.

* ``whisper-*`` (also ``openai/whisper-*``): Whisper weights through :func:`auralm.hub.load_whisper`
  (converted offline from a CTranslate2 package), run at the real audio length;
* ``wav2vec2-*``, ``hubert-*``, ``wavlm-*``, ``w2v-bert-2.0``, or any Hugging Face id of those
  families (``facebook/wav2vec2-large-xlsr-53``): transformers ``AutoModel`` + ``AutoFeatureExtractor``
  from the local Hugging Face cache only (never downloaded here);
* ``conv-tiny``: a small conv encoder with fresh weights, for from-scratch tiny runs.

A transformers config object (``WhisperConfig``, ``Wav2Vec2Config``, ``Wav2Vec2BertConfig`` ...) or a
:class:`ConvEncoderConfig` builds a randomly initialised encoder of that shape (tests, tiny runs);
its ``revision`` is a hash of the weights. Encoders come back frozen unless ``trainable=True``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from auralm.components.encoders.audio import (
    SAMPLE_RATE,
    AudioEncoder,
    ConvAudioEncoder,
    HFAudioEncoder,
    WhisperAudioEncoder,
    as_waveforms,
    weights_revision,
)
from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError, ModelNotFoundError

__all__ = [
    "ENCODERS",
    "SAMPLE_RATE",
    "AudioEncoder",
    "ConvAudioEncoder",
    "ConvEncoderConfig",
    "HFAudioEncoder",
    "WhisperAudioEncoder",
    "as_waveforms",
    "build_audio_encoder",
    "encoder_names",
    "weights_revision",
]

_WHISPER = ["tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en", "large-v2", "large-v3"]
# name -> (family, what the family loader is given)
ENCODERS: dict[str, tuple[str, str]] = {
    **{f"whisper-{size}": ("whisper", f"whisper-{size}") for size in _WHISPER},
    "wav2vec2-base": ("hf", "facebook/wav2vec2-base"),
    "wav2vec2-base-960h": ("hf", "facebook/wav2vec2-base-960h"),
    "wav2vec2-large-xlsr-53": ("hf", "facebook/wav2vec2-large-xlsr-53"),
    "hubert-base": ("hf", "facebook/hubert-base-ls960"),
    "wavlm-base-plus": ("hf", "microsoft/wavlm-base-plus"),
    "w2v-bert-2.0": ("hf", "facebook/w2v-bert-2.0"),
    "conv-tiny": ("conv", ""),
}
_HF_FAMILIES = ("wav2vec2", "w2v-bert", "hubert", "wavlm")


@dataclasses.dataclass
class ConvEncoderConfig(Config):
    """Shape of the from-scratch conv encoder (``conv-tiny`` is the default)."""

    n_mels: int = help_field(80, "log-mel bins of the input features")
    dim: int = help_field(256, "output width D")
    downsample: int = help_field(2, "stride-2 conv layers after the first (frame rate 100 / 2**downsample Hz)")
    seed: int = help_field(0, "seed of the initial weights")

    def validate(self) -> None:
        for name in ("n_mels", "dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ConvEncoderConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.downsample <= 6:
            raise ConfigError(f"ConvEncoderConfig.downsample must be in 0..6, got {self.downsample}")


def encoder_names() -> list[str]:
    """The names :func:`build_audio_encoder` knows (Hugging Face ids of the wav2vec2 families work too)."""
    return sorted(ENCODERS)


def resolve_name(name: str) -> tuple[str, str, str]:
    """``name`` -> (canonical name, family, loader argument); unknown names raise listing the valid ones."""
    if name in ENCODERS:
        return (name, *ENCODERS[name])
    if name.startswith("openai/") and ENCODERS.get(name[len("openai/") :], ("",))[0] == "whisper":
        short = name[len("openai/") :]
        return (short, *ENCODERS[short])
    if name.count("/") == 1 and any(f in name.split("/")[1].lower() for f in _HF_FAMILIES):
        return name, "hf", name
    raise ModelNotFoundError(
        f"unknown audio encoder {name!r}; known: {', '.join(encoder_names())} "
        f"(also openai/whisper-* and Hugging Face ids of the {'/'.join(_HF_FAMILIES)} families)"
    )


def build_audio_encoder(
    name_or_cfg: Any,
    *,
    trainable: bool = False,
    pad_to_30s: bool = False,
    device: str | None = None,
    dtype: Any = None,
    feature_extractor: Any = None,
    seed: int = 0,
) -> AudioEncoder:
    """Build an encoder from a name (see :data:`ENCODERS`) or a config object (random weights).

    ``pad_to_30s`` applies to Whisper only. ``feature_extractor`` overrides the one built for a config.
    ``seed`` fixes the random weights of config-built encoders.
    """
    if isinstance(name_or_cfg, str):
        name, family, arg = resolve_name(name_or_cfg)
        if family == "whisper":
            enc: AudioEncoder = _load_whisper(name, pad_to_30s)
        elif family == "hf":
            enc = _load_hf(name, arg)
        else:
            enc = ConvAudioEncoder(name=name, seed=seed)
    elif isinstance(name_or_cfg, ConvEncoderConfig):
        c = name_or_cfg
        enc = ConvAudioEncoder(c.n_mels, c.dim, c.downsample, name=f"conv-{c.dim}x{c.downsample}", seed=c.seed)
    else:
        enc = _from_hf_config(name_or_cfg, pad_to_30s, feature_extractor, seed)
    if pad_to_30s and not isinstance(enc, WhisperAudioEncoder):
        raise ConfigError(f"pad_to_30s applies to Whisper encoders only, not {enc.name}")
    if device is not None or dtype is not None:
        enc = enc.to(device=device, dtype=dtype)
    return enc.set_trainable(trainable)


def _load_whisper(name: str, pad_to_30s: bool) -> WhisperAudioEncoder:
    try:
        from auralm.hub import load_whisper, revision
    except ImportError as exc:
        raise ModelNotFoundError(f"{name}: loading Whisper weights needs auralm.hub ({exc})") from None
    model, processor = load_whisper(name)
    fe = getattr(processor, "feature_extractor", processor)
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.model.encoder
    return WhisperAudioEncoder(encoder, fe, name, revision(name), pad_to_30s=pad_to_30s)


def _load_hf(name: str, repo_id: str) -> HFAudioEncoder:
    from huggingface_hub import snapshot_download
    from transformers import AutoFeatureExtractor, AutoModel

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except Exception:
        raise ModelNotFoundError(
            f"{name}: {repo_id} is not in the local Hugging Face cache; fetch it where there is internet "
            f"(`huggingface-cli download {repo_id}`) and copy the cache here"
        ) from None
    model = AutoModel.from_pretrained(path)
    fe = AutoFeatureExtractor.from_pretrained(path)
    return HFAudioEncoder(model, fe, name, Path(path).name)


def _from_hf_config(cfg: Any, pad_to_30s: bool, feature_extractor: Any, seed: int) -> AudioEncoder:
    import torch
    from transformers import PretrainedConfig

    if not isinstance(cfg, PretrainedConfig):
        raise ConfigError(
            f"build_audio_encoder takes a name, a ConvEncoderConfig or a transformers config, got {type(cfg).__name__}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.model_type == "whisper":
            from transformers import WhisperFeatureExtractor
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            if (2 * cfg.max_source_positions * 160) % SAMPLE_RATE:
                raise ConfigError(f"WhisperConfig.max_source_positions must be a multiple of 50, got {cfg.max_source_positions}")
            chunk = 2 * cfg.max_source_positions * 160 // SAMPLE_RATE
            fe = feature_extractor or WhisperFeatureExtractor(feature_size=cfg.num_mel_bins, chunk_length=chunk)
            model = WhisperEncoder(cfg).eval()
            return WhisperAudioEncoder(model, fe, "whisper-random", weights_revision(model), pad_to_30s=pad_to_30s)
        from transformers import AutoModel, SeamlessM4TFeatureExtractor, Wav2Vec2FeatureExtractor

        model = AutoModel.from_config(cfg).eval()
    if feature_extractor is None:
        if cfg.model_type == "wav2vec2-bert":
            feature_extractor = SeamlessM4TFeatureExtractor()
        else:
            layer_norm = getattr(cfg, "feat_extract_norm", "group") == "layer"
            feature_extractor = Wav2Vec2FeatureExtractor(return_attention_mask=layer_norm, do_normalize=True)
    return HFAudioEncoder(model, feature_extractor, f"{cfg.model_type}-random", weights_revision(model))
