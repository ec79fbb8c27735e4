"""Training-step time with length-grouped batches (``optim.group_by_length``) vs random batches.

Takes a finished ``auralm demo`` folder (its corpus manifest, embedding cache and stage-1 checkpoint),
rebuilds its stage-1 model (projector + CTC head over the training-token shortlist, LM not run) and
times the same number of optimizer steps on the batches the trainer's index stream gives with and
without grouping. Prints the padding fraction of each order, the seconds per step and the speed-up::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_grouping.py --run runs/demo [--steps 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    from auralm.data.collate import AudioTextDataset, collate
    from auralm.data.embed_cache import EmbeddingCache
    from auralm.data.manifest import read_manifest
    from auralm.recipes.hear.pipeline import load_checkpoint
    from auralm.training.loop import index_stream

    run = Path(args.run)
    model = load_checkpoint(run / "stage1").train()
    model.lm.eval()
    rows = [r for r in read_manifest(run / "corpus" / "manifest.jsonl") if r.split == "train"]
    cache = EmbeddingCache(run / "embeddings", model.encoder.name, model.encoder.revision)
    data = AudioTextDataset(rows, cache, model.encoder, "", model.config.prompt)
    lengths = data.lengths()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    n_ex = args.steps * args.batch
    results = {}
    for name, lens in (("random", None), ("grouped", lengths)):
        order = index_stream(len(data), 0, 0, n_ex, lens, args.batch)
        batches = [order[i : i + args.batch] for i in range(0, n_ex, args.batch)]
        audio = sum(lengths[j] for j in order)
        padded = sum(args.batch * max(lengths[j] for j in b) for b in batches)
        items = [[data[j] for j in b] for b in batches]  # read the cache first: time the steps only
        t = time.perf_counter()
        for b in items:
            opt.zero_grad()
            model(collate(b))["loss"].backward()
            opt.step()
        results[name] = (time.perf_counter() - t) / args.steps
        print(f"{name:8s}: padding {1 - audio / padded:.1%} of the batch frames, {results[name]:.3f} s per step "
              f"({args.steps} steps of {args.batch} clips)")
    print(f"group_by_length speed-up: {results['random'] / results['grouped']:.2f}x")


if __name__ == "__main__":
    main()
