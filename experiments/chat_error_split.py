"""Where a chat model's typed errors come from: the picture's description, or the LM's reading of it.

For a model with the image CTC path (``image_feed=ctc_soft``), the LM reads only the words the image CTC head
says. This splits the typed held-out questions by whether that description equals the scene's canonical
caption, and reports accuracy on each side per question type; for ``sound`` / ``cross`` questions it splits by
whether the number-word clip's CTC transcript is right. If the model errs mostly where the description is
right, the LM (stage 2) is the limit; if mostly where it is wrong, the picture (stage 1) is.

    PYTHONPATH=src python experiments/chat_error_split.py --checkpoint runs/chat-demo2/checkpoint \
        --dataset runs/chat-demo2/data --per-type 30
"""

from __future__ import annotations

import argparse
import collections
import json
import re

import torch

from auralm.recipes.chat.data import (
    Features,
    media_paths,
    normalise,
    qa_record,
    read_examples,
    scene_descriptions,
    to_batch,
)
from auralm.recipes.chat.evaluate import pick
from auralm.recipes.chat.pipeline import load_checkpoint


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]+", " ", text.lower()).split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--split", default="test")
    ap.add_argument("--show", type=int, default=6, help="errors to print per type")
    args = ap.parse_args()

    model, cfg = load_checkpoint(args.checkpoint)
    model.eval()
    items = pick(read_examples(args.dataset), args.split, args.per_type)
    feats = Features(args.dataset, model)
    feats.ensure(*media_paths(items))
    truth = scene_descriptions(args.dataset, cfg.data.describe_count)  # what this checkpoint's image head was taught
    from auralm.components.generation import GenerationConfig

    gen = GenerationConfig(strategy="greedy", max_new_tokens=6)
    rows = []
    with torch.no_grad():
        for i in range(0, len(items), 16):
            chunk = items[i : i + 16]
            replies = model.generate(to_batch([qa_record(e) for e in chunk], feats), gen)
            said = model.describe([{"states": feats.image(e["image"])} for e in chunk])
            heard = [None] * len(chunk)
            have = [j for j, e in enumerate(chunk) if e.get("sound")]
            if have and model.ctc is not None:
                t = model.transcribe([{"states": feats.audio(chunk[j]["sound"])} for j in have])
                for j, s in zip(have, t):
                    heard[j] = s
            for e, r, d, h in zip(chunk, replies, said, heard):
                rows.append({"type": e["type"], "question": e["question"], "answer": e["answer"], "reply": normalise(r),
                             "description": d, "truth": truth.get(e["image"], ""), "heard": h,
                             "number": e.get("number")})  # fmt: skip
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rows:
        exact = _words(r["description"]) == _words(r["truth"])
        side = "description right" if exact else "description wrong"
        table[r["type"]][(side, r["reply"] == r["answer"])] += 1
    out = {}
    for t, c in table.items():
        out[t] = {side: {"n": c[(side, True)] + c[(side, False)], "correct": c[(side, True)]}
                  for side in ("description right", "description wrong")}  # fmt: skip
    print(json.dumps(out, indent=1))
    shown: collections.Counter = collections.Counter()
    for r in rows:
        if r["reply"] != r["answer"] and shown[r["type"]] < args.show:
            shown[r["type"]] += 1
            print(f"[{r['type']}] Q: {r['question']} | want {r['answer']} got {r['reply']}\n   said:  {r['description']}\n"
                  f"   truth: {r['truth']}" + (f"\n   heard: {r['heard']} (clip says {r['number']})" if r["heard"] is not None else ""))  # fmt: skip


if __name__ == "__main__":
    main()
