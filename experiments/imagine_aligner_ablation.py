"""What the queue, the norm term and the rest of the S4 loss buy, against the seed's loss, on one corpus and budget.

    PYTHONPATH=src python experiments/imagine_aligner_ablation.py --corpus runs/imagine-demo/corpus \
        --out runs/imagine-ablation --steps 600 [--variants full,no_queue,no_norm,seed] \
        [--bundle runs/imagine-demo/checkpoint --n-judge 60]

Trains one aligner per variant (the imagine-demo preset's aligner; same data order, seed, steps and batch; only
``loss`` differs), then scores each on
the first 100 held-out test clips: R@1/5/10 audio -> text and text -> audio, the shuffled-audio control, token
cosine, norm ratio. With ``--bundle`` (a demo's checkpoint: its UNet, judge and sampling settings), each
aligner also drives the generator: judged accuracy of pictures from the text, from the spoken caption and from
another clip's audio on ``--n-judge`` held-out scenes (as ``auralm imagine eval --aligner``). Writes
``OUT/ablation.json`` and ``OUT/ablation.md``. Uses the library's public parts only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from auralm.components.contrastive import AlignLossConfig
from auralm.core.config import load_preset
from auralm.core.io import atomic_write_text
from auralm.recipes.imagine.data import Corpus
from auralm.recipes.imagine.demo import DemoConfig
from auralm.recipes.imagine.evaluate import eval_rows, evaluate_aligner
from auralm.recipes.imagine.pipeline import load_aligner
from auralm.recipes.imagine.train import train_aligner

FULL = AlignLossConfig()
VARIANTS = {
    "full": FULL,
    "no_queue": FULL.replace(queue_size=0),
    "no_norm": FULL.replace(norm_weight=0.0),
    "no_queue_no_norm": FULL.replace(queue_size=0, norm_weight=0.0),
    "seed": AlignLossConfig.seed(),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--variants", default="full,no_queue,no_norm,seed")
    p.add_argument("--n", type=int, default=100, help="held-out clips scored")
    p.add_argument("--preset", default="imagine-demo", help="demo preset whose aligner settings are used")
    p.add_argument("--bundle", help="an imagine bundle whose generator and judge score each aligner's pictures")
    p.add_argument("--n-judge", type=int, default=60, help="held-out scenes drawn and judged per aligner (--bundle)")
    a = p.parse_args()
    corpus = Corpus(a.corpus)
    rows = eval_rows(corpus, a.n)
    results = {}
    for name in a.variants.split(","):
        base = DemoConfig.from_dict(load_preset(a.preset)).aligner  # the shipped aligner: model, lr, schedule
        cfg = base.replace(corpus=a.corpus, out=str(Path(a.out) / name), logger="none", eval_every=a.steps,
                           optim=base.optim.replace(max_steps=a.steps, batch_size=a.batch,
                                                    warmup_steps=min(base.optim.warmup_steps, a.steps // 10)),
                           loss=VARIANTS[name])  # fmt: skip
        ckpt = train_aligner(cfg)
        aligner, acfg = load_aligner(ckpt)
        from auralm.components.encoders import build_text_encoder
        from auralm.hub import revision

        text = build_text_encoder(acfg.model.text_encoder, max_length=acfg.text_max_length)
        feats = corpus.features(rows, (acfg.model.audio_encoder, revision(acfg.model.audio_encoder)))
        results[name] = evaluate_aligner(aligner, text, rows, feats, corpus)
        results[name]["train_minutes"] = json.loads((ckpt / "metrics.json").read_text())["elapsed_s"] / 60
        if a.bundle:
            from auralm.recipes.imagine.evaluate import evaluate
            from auralm.recipes.imagine.pipeline import ImaginePipeline

            pipe = ImaginePipeline.from_checkpoint(a.bundle).with_aligner(ckpt)
            judged = evaluate(pipe, corpus, n_retrieval=2, n_judge=a.n_judge)
            results[name] |= {f"judged_{k}": judged[f"judged_{k}"]["mean"] for k in ("text", "audio", "other_audio")}
        atomic_write_text(Path(a.out) / "ablation.json", json.dumps(results, indent=2) + "\n")
    lines = [f"Aligner loss ablation: {a.steps} steps x {a.batch} clips, {len(rows)} held-out captions.", "",
             "| loss | a->t R@1 | a->t R@5 | t->a R@1 | t->a R@5 | shuffled R@1 | cosine | norm ratio | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {r['a2t_r@1']:.3f} | {r['a2t_r@5']:.3f} | {r['t2a_r@1']:.3f} | {r['t2a_r@5']:.3f} | "
                     f"{r['a2t_r@1_shuffled']:.3f} | {r['cosine']:.3f} | {r['norm_ratio']:.3f} | {r['train_minutes']:.1f} |")
    if a.bundle:
        lines += ["", f"Judged accuracy (mean of colour, shape, count) of pictures drawn by {a.bundle}'s generator, "
                      f"{a.n_judge} held-out scenes:", "",
                  "| loss | from the text | from the spoken caption | spoken / text | from another clip's audio |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, r in results.items():
            ratio = r["judged_audio"] / r["judged_text"] if r["judged_text"] else 0.0
            lines.append(f"| {name} | {r['judged_text']:.3f} | {r['judged_audio']:.3f} | {ratio:.2f} | "
                         f"{r['judged_other_audio']:.3f} |")
    atomic_write_text(Path(a.out) / "ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
