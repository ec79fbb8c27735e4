"""What the chat demo's image tokens hold: a linear probe of each grid cell's colour and shape, per encoder layer.

    PYTHONPATH=src python experiments/s3_image_probe.py [--n 900] [--image-size 160] [--out runs/s3-probe]

Draws ``n`` scenes with the chat demo's settings (``auralm synth scenes``, 224 px, varied styles), encodes them
with the offline EfficientNet-Lite0 at ``--image-size`` and reads the feature maps of several depths (the stem's
blocks at stride 8 and 16, the last block at stride 32, and the 1280-wide head the chat model uses). For each of
the 3 x 3 grid cells the tokens whose centres fall in it are averaged, and a multinomial logistic regression
(shared across cells, features standardised) reads the cell's colour (six + empty) and shape (three + empty).
Train on the first 80 % of the scenes, report accuracy on the rest, with the majority class beside it.

A layer that reads colour at ~1.0 holds it; a chat model that answers colour questions at chance from a layer
that holds it has not learned to read it (steps); one that does not hold it cannot (change the layer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from linear_probe import linear_probe

from auralm.components.encoders import build_image_encoder
from auralm.data.scenes import COLUMNS, ROWS, SceneConfig, read_scenes, synth_scenes


def cell_pool(fmap: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 9, C): the mean of the tokens whose centres fall in each 3 x 3 grid cell."""
    _, _, h, w = fmap.shape
    rows = ((torch.arange(h) + 0.5) / h * 3).long().clamp(max=2)
    cols = ((torch.arange(w) + 0.5) / w * 3).long().clamp(max=2)
    cells = []
    for r in range(3):
        for c in range(3):
            sel = fmap[:, :, rows == r][:, :, :, cols == c]
            cells.append(sel.flatten(2).mean(2))
    return torch.stack(cells, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--out", default="runs/s3-probe")
    args = ap.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    folder = out / "scenes"
    if not (folder / "scenes.jsonl").exists():
        synth_scenes(SceneConfig(out=str(folder), n=args.n, seed=0, image_size=224, heldout=[]))
    scenes = read_scenes(folder)
    from PIL import Image

    enc = build_image_encoder("efficientnet-lite0", image_size=args.image_size)
    model = enc.model
    depth: dict = {}

    def keep(name):
        def hook(_m, _i, o):
            depth[name] = o.detach()
        return hook

    # one pass on a blank picture gives each block's output side; keep the last block of each side but the largest
    hooks = [b.register_forward_hook(keep(i)) for i, b in enumerate(model._blocks)]
    with torch.no_grad():
        model.extract_features(enc.pixels([Image.new("RGB", (224, 224), "white")]))
    for h in hooks:
        h.remove()
    last = {o.shape[-1]: i for i, o in sorted(depth.items())}
    strides = [(f"block{last[side]} ({side}x{side}, {depth[last[side]].shape[1]} ch)", last[side])
               for side in sorted(last, reverse=True)[1:]]  # fmt: skip
    hooks = [model._blocks[i].register_forward_hook(keep(label)) for label, i in strides]
    feats: dict[str, list] = {}
    with torch.no_grad():
        for s in range(0, len(scenes), 32):
            batch = [Image.open(folder / sc["image"]).convert("RGB") for sc in scenes[s:s + 32]]
            depth.clear()
            head = model.extract_features(enc.pixels(batch))
            depth[f"head ({head.shape[-1]}x{head.shape[-1]}, {head.shape[1]} ch: the chat model's tokens)"] = head
            for k, v in depth.items():
                feats.setdefault(k, []).append(cell_pool(v.float()))
    colours = sorted({o["colour"] for sc in scenes for o in sc["objects"]})
    shapes = sorted({o["shape"] for sc in scenes for o in sc["objects"]})
    ycol, yshape = torch.zeros(len(scenes), 9, dtype=torch.long), torch.zeros(len(scenes), 9, dtype=torch.long)
    for i, sc in enumerate(scenes):
        for o in sc["objects"]:
            cell = ROWS.index(o["position"]["row"]) * 3 + COLUMNS.index(o["position"]["column"])
            ycol[i, cell] = colours.index(o["colour"]) + 1
            yshape[i, cell] = shapes.index(o["shape"]) + 1
    cut = int(len(scenes) * 0.8)
    results = {}
    for label, parts in feats.items():
        x = torch.cat(parts)  # (S, 9, C)
        row = {}
        for name, y, k in (("colour", ycol, len(colours) + 1), ("shape", yshape, len(shapes) + 1)):
            occupied = y[cut:] > 0
            xt, yt = x[cut:][occupied], y[cut:][occupied]
            row[name] = linear_probe(x[:cut].flatten(0, 1), y[:cut].flatten(), xt, yt, k, l2=1e-3)  # occupied test cells
            row[f"{name}_majority"] = float((yt == yt.mode().values).float().mean())
        results[label] = row
        print(f"{label:55s} colour {row['colour']:.3f} (majority {row['colour_majority']:.3f})  "
              f"shape {row['shape']:.3f} (majority {row['shape_majority']:.3f})", flush=True)
    (out / "probe.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
