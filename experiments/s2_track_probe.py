"""What the caption demo's pooled track vectors hold: a linear probe per track attribute.

    PYTHONPATH=src python experiments/s2_track_probe.py --corpus runs/caption-demo/music [--pooling meanstd]

Pools each track's cached whisper-tiny.en states as the caption recipe does (``Featurizer.track_vectors``:
the corpus's own embedding cache, encoded first if missing), fits a multinomial logistic regression (L-BFGS,
L2 1e-2, features standardised on the training tracks) on the ``train`` tracks for each attribute the track
captions name (and a few more), and prints the accuracy on the ``test`` tracks. A probe that reads an
attribute at 1.0 says the vector holds it, and a caption model that names it less well has not learned to
read it; a probe near chance says the pooled vector does not hold it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch
from linear_probe import linear_probe

from auralm.recipes.caption.data import Featurizer

ATTRIBUTES = ("instrument", "tempo_word", "mode", "drums", "loudness", "register")


def probe(x: torch.Tensor, y: list[str], xt: torch.Tensor, yt: list[str]) -> float:
    classes = sorted(set(y))
    index = {c: i for i, c in enumerate(classes)}
    return linear_probe(x, torch.tensor([index[v] for v in y]), xt, torch.tensor([index.get(v, -1) for v in yt]),
                        len(classes), l2=1e-2)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="an `auralm synth music` corpus (runs/caption-demo/music)")
    ap.add_argument("--pooling", default="meanstd", choices=["mean", "meanstd"])
    ap.add_argument("--encoder", default="whisper-tiny.en")
    args = ap.parse_args()
    torch.manual_seed(0)
    corpus = Path(args.corpus)
    cfg = SimpleNamespace(audio_encoder=args.encoder, audio_pooling=args.pooling, tag_encoder="vocab", metadata_dim=10)
    feat = Featurizer(cfg)
    vectors = feat.track_vectors(corpus, corpus / "cache" / feat.audio.name.replace("/", "_"))
    tracks = [json.loads(line) for line in (corpus / "tracks.jsonl").read_text().splitlines() if line.strip()]
    split = {s: [t for t in tracks if t["split"] == s] for s in ("train", "test")}
    x, xt = (torch.stack([vectors[t["id"]] for t in split[s]]) for s in ("train", "test"))
    print(f"{len(split['train'])} training tracks, {len(split['test'])} test tracks, {args.pooling} pooling")
    for attr in ATTRIBUTES:
        y, yt = ([str(t["params"][attr]) for t in split[s]] for s in ("train", "test"))
        chance = max(yt.count(v) for v in set(yt)) / len(yt)
        print(f"{attr:11s} {len(set(y))} classes: probe {probe(x, y, xt, yt):.3f} (majority class {chance:.3f})")


if __name__ == "__main__":
    main()
