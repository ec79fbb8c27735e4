"""Training-step speed with cached encoder embeddings vs running the encoder on every step.

Renders ``--clips`` espeak-ng clips (tones when espeak-ng is missing), caches their Whisper tiny.en
states with :func:`auralm.data.embed_cache.embed_manifest`, then times the same training steps of our
prefix :class:`auralm.recipes.hear.model.AudioLM` fed from the cache (``states``) and from the waveforms (``wavs``:
the frozen encoder runs each step). Prints both step times and the speed-up::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_cache.py [--clips 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SENTENCES = ["the cat sat on the mat", "a journey of a thousand miles begins with one step",
             "cached embeddings make training faster", "speech goes in and text comes out"]


def corpus(root: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        text, path = SENTENCES[i % len(SENTENCES)], root / f"c{i}.wav"
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-w", str(path), "-s", str(150 + 10 * i), text], check=True)
        else:
            t = np.arange(16000 * 2) / 16000
            sf.write(str(path), (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), 16000)
        rows.append({"id": f"c{i}", "audio": path.name, "text": text, "split": "train"})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "m.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lm", default="tiny-gpt2")
    args = parser.parse_args()
    from auralm.data.collate import AudioTextDataset, collate
    from auralm.data.embed_cache import EmbeddingCache, embed_manifest
    from auralm.data.manifest import read_manifest
    from auralm.recipes.hear.model import AudioLM, HearConfig

    torch.manual_seed(0)
    model = AudioLM(HearConfig.from_dict({"encoder": "whisper-tiny.en", "lm": args.lm})).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        rows = read_manifest(corpus(Path(tmp), args.clips))
        embed_manifest(rows, model.encoder, Path(tmp) / "cache", batch_size=args.clips)
        cache = EmbeddingCache(Path(tmp) / "cache", model.encoder.name, model.encoder.revision)
        times = {}
        for name, ds in (("cached", AudioTextDataset(rows, cache, model.encoder, "", model.config.prompt)),
                         ("encoder", AudioTextDataset(rows, None, model.encoder, "", model.config.prompt))):
            def step(ds=ds):
                opt.zero_grad()
                model(collate([ds[i] for i in range(len(ds))]))["loss"].backward()
                opt.step()

            step()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name] = (time.perf_counter() - t) / args.steps
            print(f"{name:8s}: {times[name]:.3f} s per step of {len(ds)} clips")
    print(f"embedding-cache speed-up: {times['encoder'] / times['cached']:.2f}x")


if __name__ == "__main__":
    main()
