"""What the LM reads for a cross-modal question, and what it answers: are the two numbers there, and compared?

For the first ``--limit`` held-out ``cross`` questions ("is the number you hear the same as the number of
shapes?"), prints the end of the picture's description as the image CTC head says it (with
``data.describe_count`` it ends "...: two shapes."), the number-word clip's CTC transcript, the expected
answer and the reply; then the replies counted by whether the two numbers the LM reads are the same.
A model that compares says "yes" on the same side and "no" on the other.

    PYTHONPATH=src python experiments/chat_cross_inputs.py --checkpoint runs/chat-x/count/stage2/checkpoints/step-000140 \
        --dataset runs/chat-demo3/data --limit 60
"""

from __future__ import annotations

import argparse
import collections

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--show", type=int, default=8)
    args = p.parse_args()
    from auralm.components.generation import GenerationConfig
    from auralm.recipes.chat.data import Features, media_paths, normalise, qa_record, read_examples, to_batch
    from auralm.recipes.chat.pipeline import ChatPipeline

    model = ChatPipeline.from_checkpoint(args.checkpoint).model.eval()
    ex = [e for e in read_examples(args.dataset) if e["kind"] == "qa" and e["split"] == "test" and e["type"] == "cross"]
    ex = ex[: args.limit]
    feats = Features(args.dataset, model)
    feats.ensure(*media_paths(ex))
    with torch.no_grad():
        desc = model.describe([{"kind": "image", "states": feats.image(e["image"])} for e in ex])
        heard = model.transcribe([{"kind": "audio", "states": feats.audio(e["sound"])} for e in ex])
        replies = model.generate(to_batch([qa_record(e) for e in ex], feats), GenerationConfig(strategy="greedy", max_new_tokens=6))
    table: collections.Counter = collections.Counter()
    for k, (e, d, h, r) in enumerate(zip(ex, desc, heard, replies)):
        counted = d.rsplit(":", 1)[-1].split()[0] if ":" in d else "?"
        table[("same" if counted == normalise(h) else "different", normalise(r))] += 1
        if k < args.show:
            print(f"...{d[-28:]!r} | heard {h!r} | expected {e['answer']} | reply {r!r} | {e['question']}")
    for side in ("same", "different"):
        print(f"numbers read {side}: " + ", ".join(f"{a!r} {n}" for (s, a), n in sorted(table.items()) if s == side))


if __name__ == "__main__":
    main()
