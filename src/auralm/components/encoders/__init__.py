"""Audio and image encoders by name: :func:`build_audio_encoder` looks names up in :data:`ENCODERS`,
:func:`build_image_encoder` in :data:`IMAGE_ENCODERS` (see the end of this module and ``image.py``).

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

import contextlib
import dataclasses
from collections.abc import Iterator
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
from auralm.components.encoders.image import (
    CLIP_MEAN,
    CLIP_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    EfficientNetLiteEncoder,
    HFVisionEncoder,
    ImageEncoder,
    ImageError,
    Preprocess,
    load_images,
)
from auralm.core.config import Config, help_field
from auralm.core.errors import ConfigError, ModelNotFoundError

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "ENCODERS",
    "IMAGE_ENCODERS",
    "EfficientNetLiteConfig",
    "EfficientNetLiteEncoder",
    "HFVisionEncoder",
    "ImageEncoder",
    "ImageError",
    "Preprocess",
    "build_image_encoder",
    "image_encoder_names",
    "load_images",
    "resolve_image_name",
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


# -- image encoders ---------------------------------------------------------------------------------

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
# name -> (family, what the family loader is given)
IMAGE_ENCODERS: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": ("efficientnet", "efficientnet-lite0"),  # offline: auralm.hub (PyPI package)
    "clip-vit-base-patch32": ("hf-vision", "openai/clip-vit-base-patch32"),
    "clip-vit-base-patch16": ("hf-vision", "openai/clip-vit-base-patch16"),
    "clip-vit-large-patch14": ("hf-vision", "openai/clip-vit-large-patch14"),
    "clip-vit-large-patch14-336": ("hf-vision", "openai/clip-vit-large-patch14-336"),
    "siglip-base-patch16-224": ("hf-vision", "google/siglip-base-patch16-224"),
    "siglip-so400m-patch14-384": ("hf-vision", "google/siglip-so400m-patch14-384"),
}
_VISION_FAMILIES = ("clip", "siglip")
_LITE_VARIANTS = tuple(f"efficientnet-lite{i}" for i in range(5))


@dataclasses.dataclass
class EfficientNetLiteConfig(Config):
    """Shape of a randomly initialised EfficientNet-Lite (tests, from-scratch runs)."""

    variant: str = help_field("efficientnet-lite0", f"one of {', '.join(_LITE_VARIANTS)}")
    image_size: int = help_field(224, "input side in pixels (tokens: ceil(image_size / 32) squared)")
    width: float = help_field(1.0, "width multiplier of the inner blocks (stem and head stay 32 and 1280)")
    depth: float = help_field(1.0, "depth multiplier (repeats of each block stage)")
    seed: int = help_field(0, "seed of the initial weights")

    def validate(self) -> None:
        if self.variant not in _LITE_VARIANTS:
            raise ConfigError(f"EfficientNetLiteConfig.variant: {self.variant!r} is none of {', '.join(_LITE_VARIANTS)}")
        if self.image_size < 32:
            raise ConfigError(f"EfficientNetLiteConfig.image_size must be at least 32, got {self.image_size}")
        if not 0 < self.width <= 4 or not 0 < self.depth <= 4:
            raise ConfigError(f"EfficientNetLiteConfig: width and depth must be in (0, 4], got {self.width}, {self.depth}")


def image_encoder_names() -> list[str]:
    """The names :func:`build_image_encoder` knows (Hugging Face ids of CLIP/SigLIP models work too)."""
    return sorted(IMAGE_ENCODERS)


def resolve_image_name(name: str) -> tuple[str, str, str]:
    """``name`` -> (canonical name, family, loader argument); unknown names raise listing the valid ones.

    Families: ``efficientnet`` (hub name), ``hf-vision`` (HF id), ``folder`` (a local model folder).
    """
    if name in IMAGE_ENCODERS:
        return (name, *IMAGE_ENCODERS[name])
    for short, (family, arg) in IMAGE_ENCODERS.items():
        if family == "hf-vision" and name.lower() == arg.lower():
            return short, family, arg
    if (Path(name).expanduser() / "config.json").is_file():
        return name, "folder", str(Path(name).expanduser().resolve())
    if name.count("/") == 1 and any(f in name.split("/")[1].lower() for f in _VISION_FAMILIES):
        return name, "hf-vision", name
    raise ModelNotFoundError(
        f"unknown image encoder {name!r}; known: {', '.join(image_encoder_names())} "
        f"(also Hugging Face ids of CLIP/SigLIP models, or a folder with a config.json)"
    )


def build_image_encoder(
    name_or_cfg: Any = DEFAULT_IMAGE_ENCODER,
    *,
    layer: int = -2,
    image_size: int | None = None,
    stride: int = 32,
    patch_colour: bool = False,
    trainable: bool = False,
    device: str | None = None,
    dtype: Any = None,
    seed: int = 0,
) -> ImageEncoder:
    """Build an image encoder from a name (see :data:`IMAGE_ENCODERS`) or a config object (random weights).

    ``layer`` picks the hidden layer of CLIP/SigLIP towers (-2: LLaVA's penultimate layer).
    ``image_size`` runs EfficientNet at another input side (64 px -> 2 x 2 tokens); CLIP/SigLIP take
    their own size only. ``stride`` picks EfficientNet's feature map: 32 (the final 1280-wide map), 16 or 8 (the
    last block at that stride: more tokens, closer to the pixels). ``patch_colour`` appends each token's patch
    colour (mean and std of R, G, B: :class:`PatchColour`; the name gains ``+rgb``). ``seed`` fixes the random weights of config-built encoders. A config is an
    :class:`EfficientNetLiteConfig`, or a transformers ``CLIPVisionConfig``/``CLIPConfig``/
    ``SiglipVisionConfig``/``SiglipConfig``.
    """
    if isinstance(name_or_cfg, str):
        name, family, arg = resolve_image_name(name_or_cfg)
        if family == "efficientnet":
            enc: ImageEncoder = _load_efficientnet(name, arg, image_size, stride)
        elif family == "folder" and _folder_model_type(Path(arg)) == "efficientnet-lite":
            enc = _load_efficientnet(name, arg, image_size, stride)
        else:
            _no_image_size(name, image_size)
            _no_stride(name, stride)
            path = Path(arg) if family == "folder" else _hf_snapshot(name, arg)
            enc = _load_hf_vision(name, path, layer)
    elif isinstance(name_or_cfg, EfficientNetLiteConfig):
        c = name_or_cfg if image_size is None else name_or_cfg.replace(image_size=image_size)
        with torch_seed(c.seed):
            model = _efficientnet_module(c.variant, c.image_size, width=c.width, depth=c.depth)
        enc = EfficientNetLiteEncoder(model.eval(), f"{c.variant}-random", "", c.image_size, stride=stride)
        enc.revision = weights_revision(enc)
    else:
        _no_stride(type(name_or_cfg).__name__, stride)
        enc = _vision_from_config(name_or_cfg, layer, image_size, seed)
    if patch_colour:
        from auralm.components.encoders.image import PatchColour

        enc = PatchColour(enc)
    if device is not None or dtype is not None:
        enc = enc.to(device=device, dtype=dtype)
    return enc.set_trainable(trainable)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Random weights from ``seed`` inside the block; the global torch RNG is left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _no_image_size(name: str, image_size: int | None) -> None:
    if image_size is not None:
        raise ConfigError(f"{name}: image_size applies to EfficientNet encoders only (CLIP/SigLIP take their own size)")


def _folder_model_type(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{folder}: cannot read config.json ({exc})") from None


def _efficientnet_module(variant: str, image_size: int, width: float | None = None, depth: float | None = None):
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelNotFoundError(
            "EfficientNet-Lite needs the code package efficientnet-lite-pytorch "
            "(pip install --no-deps efficientnet-lite-pytorch; make setup installs it)"
        ) from None
    override: dict[str, Any] = {"image_size": image_size}
    if width is not None:
        override["width_coefficient"] = width
    if depth is not None:
        override["depth_coefficient"] = depth
    return EfficientNet.from_name(variant, **override)


def _no_stride(name: str, stride: int) -> None:
    if stride != 32:
        raise ConfigError(f"{name}: stride applies to EfficientNet encoders only (CLIP/SigLIP pick a layer instead)")


def _load_efficientnet(name: str, where: str, image_size: int | None, stride: int = 32) -> EfficientNetLiteEncoder:
    """Pretrained EfficientNet-Lite from a hub name or a converted folder (config.json + model.safetensors)."""
    import json

    from safetensors.torch import load_file

    from auralm.hub import resolve

    res = resolve(where)  # converts the offline package once
    folder = Path(res.location)
    cfg = json.loads((folder / "config.json").read_text())
    size = int(image_size or cfg["image_size"])
    if size < 32:
        raise ConfigError(f"{name}: image_size must be at least 32, got {size}")
    model = _efficientnet_module(cfg["variant"], size)
    state = load_file(str(folder / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return EfficientNetLiteEncoder(model.eval(), name, res.revision, size, tuple(cfg["image_mean"]), tuple(cfg["image_std"]),
                                   stride=stride)


def _hf_snapshot(name: str, repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        raise ModelNotFoundError(
            f"{name}: {repo_id} is not in the local Hugging Face cache; fetch it where there is internet "
            f"(`huggingface-cli download {repo_id}`) and copy the cache here"
        ) from None


def _vision_family(model_type: str, where: str) -> str:
    for family in ("siglip", "clip"):
        if model_type.startswith(family):
            return family
    raise ModelNotFoundError(f"{where}: model_type {model_type!r} is not a CLIP or SigLIP vision model")


def _vision_model_class(family: str):
    from transformers import CLIPVisionModel, SiglipVisionModel

    return CLIPVisionModel if family == "clip" else SiglipVisionModel


def _default_preprocess(family: str, size: int) -> Preprocess:
    if family == "clip":
        return Preprocess(size, CLIP_MEAN, CLIP_STD, resize="shortest_edge", resample=3)
    return Preprocess(size, SIGLIP_MEAN, SIGLIP_STD, resize="square", resample=3)


def _preprocess_from_folder(folder: Path, family: str, size: int) -> Preprocess:
    """The folder's ``preprocessor_config.json`` as a :class:`Preprocess` (family defaults when absent)."""
    import json

    base = _default_preprocess(family, size)
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return base
    p = json.loads(path.read_text())
    shape = p.get("size") or {}
    resize = "shortest_edge" if isinstance(shape, dict) and "shortest_edge" in shape else "square"
    return Preprocess(
        size,
        tuple(p.get("image_mean", base.mean)),
        tuple(p.get("image_std", base.std)),
        resize=resize,
        resample=int(p.get("resample", base.resample)),
    )


def _load_hf_vision(name: str, folder: Path, layer: int) -> HFVisionEncoder:
    family = _vision_family(_folder_model_type(folder), str(folder))
    model = _vision_model_class(family).from_pretrained(str(folder)).eval()
    size = int(model.config.image_size)
    revision = folder.name if folder.parent.name == "snapshots" else f"local:{folder.name}"
    return HFVisionEncoder(model, _preprocess_from_folder(folder, family, size), name, revision, layer)


def _vision_from_config(cfg: Any, layer: int, image_size: int | None, seed: int) -> HFVisionEncoder:
    from transformers import PretrainedConfig

    if not isinstance(cfg, PretrainedConfig):
        raise ConfigError(
            "build_image_encoder takes a name, an EfficientNetLiteConfig or a CLIP/SigLIP transformers config, "
            f"got {type(cfg).__name__}"
        )
    family = _vision_family(cfg.model_type, type(cfg).__name__)
    cfg = getattr(cfg, "vision_config", cfg)  # CLIPConfig / SiglipConfig -> their vision part
    _no_image_size(f"{cfg.model_type}-random", image_size)
    with torch_seed(seed):
        model = _vision_model_class(family)(cfg).eval()
    enc = HFVisionEncoder(model, _default_preprocess(family, int(cfg.image_size)), f"{family}-random", "", layer)
    enc.revision = weights_revision(enc.model)
    return enc


# -- text encoders (text.py) ------------------------------------------------------------------------
from auralm.components.encoders.text import (  # noqa: E402
    DEFAULT_TEXT_ENCODER,
    TEXT_ENCODERS,
    TextEncoder,
    build_text_encoder,
    text_encoder_names,
    word_tokenizer,
)

__all__ += ["DEFAULT_TEXT_ENCODER", "TEXT_ENCODERS", "TextEncoder", "build_text_encoder", "text_encoder_names",
            "word_tokenizer"]
