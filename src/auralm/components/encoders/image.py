"""Image encoders behind one interface: images in, ``(B, N, D)`` patch states and ``(B,)`` lengths out.

Two families share :class:`ImageEncoder`:

* :class:`EfficientNetLiteEncoder`: the final feature map of an EfficientNet-Lite (after the 1x1 head
  conv, 1280 channels) read as a grid of tokens, row by row: ``(B, 1280, 7, 7) -> (B, 49, 1280)`` at
  224 px. The offline default ``efficientnet-lite0`` has ImageNet weights (see :mod:`auralm.hub.efficientnet`).
* :class:`HFVisionEncoder`: a transformers CLIP or SigLIP vision tower; the states of one hidden layer
  (``layer=-2``, the penultimate, by default, as LLaVA), with CLIP's CLS token dropped
  (``(B, 1 + N, D) -> (B, N, D)``; SigLIP has none).

Inputs are PIL images, paths to image files or ``(H, W, 3|4)`` uint8 arrays, alone or in a list;
transparency is laid over white, and :func:`load_images` names any item that cannot be read. Each encoder resizes and normalises as its
weights expect (:class:`Preprocess`). Every image gives the same number of tokens, so the lengths are
all ``num_tokens``; they are returned to keep the interface of the audio encoders.

Encoders are frozen (no grads, eval mode, no autograd graph) unless built with ``trainable=True``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auralm.components.encoders.base import FrozenEncoder
from auralm.core.errors import ImageError

ImageInput = Any  # PIL.Image.Image | str | Path | np.ndarray
Images = ImageInput | Sequence[ImageInput]

# TF EfficientNet-Lite scales pixels as (x - 127) / 128; in 0..1 units:
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def _describe(item: Any, index: int) -> str:
    if isinstance(item, (str, Path)):
        return f"image {index} ({str(item)!r})"
    return f"image {index} ({type(item).__name__})"


def _to_rgb(image):
    """RGB; transparent pixels (RGBA, LA, palette transparency) are laid over white, as a viewer shows them."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(item: ImageInput, index: int = 0):
    """One item as an RGB ``PIL.Image``; raises :class:`ImageError` naming the item when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    what = _describe(item, index)
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise ImageError(f"{what}: no such file")
        if path.stat().st_size == 0:
            raise ImageError(f"{what}: the file is empty (0 bytes)")
        try:
            with Image.open(path) as im:
                im.load()
                image = _to_rgb(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{what}: not a readable image file ({exc})") from None
    elif isinstance(item, Image.Image):
        if item.width == 0 or item.height == 0:
            raise ImageError(f"{what}: zero-size image ({item.width}x{item.height})")
        image = _to_rgb(item)
    elif isinstance(item, np.ndarray):
        if item.ndim != 3 or item.shape[2] not in (3, 4) or item.dtype != np.uint8:
            raise ImageError(f"{what}: an array must be (H, W, 3) or (H, W, 4) uint8, got {item.shape} {item.dtype}")
        if item.shape[0] == 0 or item.shape[1] == 0:
            raise ImageError(f"{what}: zero-size image ({item.shape[1]}x{item.shape[0]})")
        image = _to_rgb(Image.fromarray(np.ascontiguousarray(item), "RGB" if item.shape[2] == 3 else "RGBA"))
    else:
        raise ImageError(f"{what}: expected a PIL image, a path or an (H, W, 3) uint8 array")
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{what}: zero-size image ({image.width}x{image.height})")
    return image


def load_images(images: Images) -> list:
    """A single item or a sequence of items -> a non-empty list of RGB ``PIL.Image`` (see :func:`load_image`)."""
    from PIL import Image

    if isinstance(images, (str, Path, Image.Image, np.ndarray)):
        images = [images]
    items = list(images)
    if not items:
        raise ImageError("no images to encode")
    return [load_image(item, i) for i, item in enumerate(items)]


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Resize, crop and normalise as an encoder's weights expect.

    ``resize="square"`` squashes the whole image to ``size x size`` (EfficientNet, SigLIP);
    ``resize="shortest_edge"`` scales the short side to ``size`` and centre-crops ``size x size`` (CLIP).
    ``resample`` is a PIL filter number (3 = bicubic). Mean and std are in 0..1 units.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "square"
    resample: int = 3

    def image(self, image):
        """One RGB PIL image -> a resized ``size x size`` PIL image."""
        s = self.size
        if self.resize == "square":
            return image.resize((s, s), resample=self.resample) if image.size != (s, s) else image
        w, h = image.size
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(s * long_ / short)  # as transformers' get_resize_output_image_size
        new = (s, new_long) if w <= h else (new_long, s)
        if image.size != new:
            image = image.resize(new, resample=self.resample)
        w, h = image.size
        top, left = (h - s) // 2, (w - s) // 2
        return image.crop((left, top, left + s, top + s))

    def __call__(self, images: list) -> torch.Tensor:
        """RGB PIL images -> ``(B, 3, size, size)`` float32 pixels."""
        arrays = np.stack([np.asarray(self.image(im), dtype=np.float32) for im in images]) / 255.0  # B, H, W, 3
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return torch.from_numpy((arrays - mean) / std).permute(0, 3, 1, 2).contiguous()  # B, 3, H, W


class ImageEncoder(FrozenEncoder):
    """Base class. Attributes: ``name``, ``revision``, ``dim`` (D), ``image_size`` (input side in pixels),
    ``grid`` (rows, columns of tokens), ``num_tokens`` (N), ``preprocess``, ``trainable``."""

    def __init__(self, name: str, revision: str, dim: int, grid: tuple[int, int], preprocess: Preprocess):
        super().__init__()
        self.name = name
        self.revision = revision
        self.dim = int(dim)
        self.grid = (int(grid[0]), int(grid[1]))
        self.preprocess = preprocess
        self.trainable = False

    @property
    def image_size(self) -> int:
        return self.preprocess.size

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def pixels(self, images: Images) -> torch.Tensor:
        """Images -> the ``(B, 3, S, S)`` pixel batch this encoder takes (on CPU, float32)."""
        return self.preprocess(load_images(images))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Subclasses: ``(B, 3, S, S)`` normalised pixels -> ``(B, N, D)`` states."""
        raise NotImplementedError

    def forward(self, images: Images | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode images (or an already preprocessed ``(B, 3, S, S)`` tensor).

        Returns ``states (B, N, D)`` and ``lengths (B,)`` (long, on CPU, all equal to ``num_tokens``).
        """
        if isinstance(images, torch.Tensor):
            pixels = images
            want = (3, self.image_size, self.image_size)
            if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
                raise ImageError(f"{self.name}: a pixel tensor must be (B, {', '.join(map(str, want))}), "
                                 f"got {tuple(pixels.shape)}")  # fmt: skip
        else:
            pixels = self.pixels(images)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            states = self.encode_pixels(pixels.to(self.device, self.dtype))
        return states, torch.full((states.shape[0],), states.shape[1], dtype=torch.long)


class EfficientNetLiteEncoder(ImageEncoder):
    """An ``efficientnet_lite_pytorch.EfficientNet``'s feature map as tokens, row-major.

    ``stride=32`` (default): the final 1280-wide map, ``(B, 3, S, S) -> (B, (S/32)**2, 1280)``.
    ``stride=16`` or ``8``: the output of the last block at that stride (Lite0: 112 or 40 channels), finer and
    closer to the pixels: a per-cell linear probe reads the colour of drawn shapes at 0.95 there against 0.70
    from the final map (``experiments/s3_image_probe.py``). The blocks after it are dropped. A stride other than
    32 is part of the encoder's ``name`` (``efficientnet-lite0@s16``), so feature caches keep them apart.
    """

    STRIDES = (8, 16, 32)

    def __init__(self, model: nn.Module, name: str, revision: str, image_size: int,
                 mean: tuple = LITE_MEAN, std: tuple = LITE_STD, stride: int = 32):  # fmt: skip
        if stride not in self.STRIDES:
            raise ImageError(f"{name}: stride must be one of {', '.join(map(str, self.STRIDES))}, got {stride}")
        side = image_size
        for _ in range(stride.bit_length() - 1):  # stride-2 stages with TF "same" padding: ceil each time
            side = -(-side // 2)
        self.stride = int(stride)
        if stride == 32:
            dim = model._bn1.num_features
        else:
            reached, last = 2, 0  # the stem halves the input
            for i, blk in enumerate(model._blocks):
                s = blk._block_args.stride
                reached *= int(s[0] if isinstance(s, (list, tuple)) else s)
                if reached > stride:
                    break
                last = i
            dim = model._blocks[last]._block_args.output_filters
            model._blocks = model._blocks[: last + 1]
            model._conv_head = model._bn1 = nn.Identity()  # not run; no unused parameters
            name = f"{name}@s{stride}"
        super().__init__(name, revision, dim, (side, side), Preprocess(image_size, tuple(mean), tuple(std)))
        model._fc = nn.Identity()  # the classifier is not used; no unused parameters under DDP
        self.model = model
        self.set_trainable(False)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.stride == 32:
            fmap = self.model.extract_features(pixels)  # B, C, H, W
        else:
            m = self.model
            fmap = m._swish(m._bn0(m._conv_stem(pixels)))
            for blk in m._blocks:  # inference only: no drop-connect
                fmap = blk(fmap)
        return fmap.flatten(2).transpose(1, 2)  # B, H*W, C


class PatchColour(ImageEncoder):
    """Another image encoder's tokens, each with its patch's colour appended: the mean and the standard
    deviation of the normalised R, G, B pixels over the token's cell of the grid (``D + 6`` wide).

    ImageNet features keep hue loosely (a probe of EfficientNet-Lite0's final map reads the colour of drawn
    shapes at 0.70; experiments/s3_image_probe.py); the pixels keep it exactly. The name gains ``+rgb``, so
    feature caches keep the two apart; the revision is the wrapped encoder's."""

    def __init__(self, inner: ImageEncoder):
        super().__init__(f"{inner.name}+rgb", inner.revision, inner.dim + 6, inner.grid, inner.preprocess)
        self.inner = inner

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional as F

        states = self.inner.encode_pixels(pixels)  # B, N, D
        mean = F.adaptive_avg_pool2d(pixels, self.grid)  # B, 3, R, C
        std = (F.adaptive_avg_pool2d(pixels * pixels, self.grid) - mean * mean).clamp(min=0).sqrt()
        colour = torch.cat([mean, std], 1).flatten(2).transpose(1, 2)  # B, N, 6
        return torch.cat([states, colour.to(states.dtype)], -1)


class HFVisionEncoder(ImageEncoder):
    """A transformers ``CLIPVisionModel`` or ``SiglipVisionModel``: ``hidden_states[layer]``, CLS dropped.

    ``layer`` indexes ``hidden_states`` (0 = the patch embeddings, -1 = the last layer before the final
    norm; -2, the default, is LLaVA's choice; kept as a negative index). Another layer than -2 is part of the
    encoder's ``name`` (``clip-vit-b32@layer-1``), so feature caches keep them apart. CLIP's first token (CLS) is
    dropped: ``(B, 1 + N, D) -> (B, N, D)``.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, name: str, revision: str, layer: int = -2):
        cfg = model.config
        n_states = int(cfg.num_hidden_layers) + 1
        if not -n_states <= layer < n_states:
            raise ImageError(f"{name}: layer {layer} is out of range; the model has {n_states} hidden states "
                             f"(0 = the embeddings .. {n_states - 1}, or -1 .. -{n_states})")  # fmt: skip
        side = int(cfg.image_size) // int(cfg.patch_size)
        if preprocess.size != int(cfg.image_size):
            raise ImageError(f"{name}: preprocessing gives {preprocess.size} px but the model takes {cfg.image_size} px")
        self.layer = int(layer) - n_states if layer >= 0 else int(layer)  # one index per hidden state
        if self.layer != -2:  # another layer's states are other features: the name (and so the cache) says which
            name = f"{name}@layer{self.layer}"
        super().__init__(name, revision, cfg.hidden_size, (side, side), preprocess)
        self.model = model
        self.drop_cls = cfg.model_type.startswith("clip")
        self.set_trainable(False)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        states = out.hidden_states[self.layer]  # B, (1 +) N, D
        return states[:, 1:] if self.drop_cls else states  # B, N, D
