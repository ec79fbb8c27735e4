"""How exact the image CTC head's descriptions are on test pictures with and without a held-out colour-shape
combination, and which colour words it swaps on each side.

    PYTHONPATH=src python experiments/chat_describe_heldout.py --checkpoint runs/chat-demo8/checkpoint \
        --dataset runs/chat-demo8/data

The image CTC head (``image_feed=ctc_soft``) says a picture's canonical caption; the LM reads only those words. If
its errors gather in pictures holding a held-out combination (a yellow circle said "orange circle"), the model does
not compose colour and shape there, and those questions belong in their own row (``heldout_combinations``).
"""

from __future__ import annotations

import argparse
import collections
import difflib

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")


def words(text: str) -> list[str]:
    return text.replace(",", " ,").replace(".", " .").replace(":", " :").split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    import auralm
    from auralm.data.scenes import read_scenes
    from auralm.recipes.chat.data import Features, read_examples, scene_descriptions

    model = auralm.load(args.checkpoint).model.eval()
    truth = scene_descriptions(args.dataset, count=model.config.image_feed == "ctc_soft")
    held = {f"scenes/{s['image']}": bool(s["heldout"]) for s in read_scenes(f"{args.dataset}/scenes")}
    images = sorted({e["image"] for e in read_examples(args.dataset)
                     if e["kind"] == "qa" and e["split"] == args.split and "image" in e})  # fmt: skip
    feats = Features(args.dataset, model)
    feats.ensure(images, [])
    said = []
    for i in range(0, len(images), 32):
        said += model.describe([{"kind": "image", "states": feats.image(p)} for p in images[i : i + 32]])
    total, exact, swaps = collections.Counter(), collections.Counter(), collections.Counter()
    for path, text in zip(images, said):
        side = held[path]
        total[side] += 1
        exact[side] += text.strip() == truth[path].strip()
        a, b = words(truth[path]), words(text)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
            if tag == "replace" and i2 - i1 == 1 and j2 - j1 == 1 and a[i1] in COLOURS:
                swaps[(side, a[i1], b[j1])] += 1
    for side in (False, True):
        print(f"pictures {'with' if side else 'without'} a held-out combination: {total[side]}, "
              f"exact descriptions {exact[side] / max(total[side], 1):.3f}")  # fmt: skip
        print("  colour swaps (true -> said): " + ", ".join(f"{t}->{s} {n}" for (h, t, s), n in swaps.most_common() if h == side))


if __name__ == "__main__":
    main()
