"""S1 probe: stage 1 (CTC warm-up) or stage 2 (``--stage 2 --init-from CKPT``: the LM reads the
CTC-compressed frames, LoRA) of the demo recipe with other settings, scored on held-out clips: stage 1
by the projector's own greedy CTC decoding, stage 2 by the LM's greedy transcripts.

Reuses a finished ``auralm demo`` folder (its ``corpus/manifest.jsonl`` and ``embeddings/``), trains the
stage exactly as the demo does (its stage preset, ``hear-demo-stage1`` or ``-stage2``) plus the overrides
given, and prints the CTC WER on the first ``--n`` test clips (the demo scores 100), with the training
minutes. Writes ``OUT/probe.json``.

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python experiments/s1_stage1.py --demo runs/demo --out runs/s1x/stack3 \\
      --steps 2000 --minutes 8 model.connector.stack=3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="runs/demo")
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=0.0, help="time guard (default: the stage preset's)")
    p.add_argument("--steps", type=int, default=0, help="optimizer steps (default: the stage preset's)")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--manifest", default="", help="train on this manifest instead of the demo's (its valid and test "
                                                  "splits must be the demo's; scoring always reads the demo's test clips)")
    p.add_argument("--stage", type=int, default=1, choices=(1, 2))
    p.add_argument("--init-from", default="", help="stage 2: the stage-1 checkpoint")
    p.add_argument("--copy-bias", default="0", help="stage 2: comma-separated copy_bias values to score the LM with")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()

    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import wer
    from auralm.recipes.hear.config import config_from_preset
    from auralm.recipes.hear.demo import DemoConfig
    from auralm.recipes.hear.pipeline import load_checkpoint
    from auralm.recipes.hear.train import train

    demo, out = Path(a.demo), Path(a.out)
    d = DemoConfig()  # the `demo` preset (a test checks they agree): its stage presets
    manifest = demo / "corpus" / "manifest.jsonl"  # what the demo trains on (prepared.jsonl is only a check)
    overrides = [f"out={out}", f"data.manifest={a.manifest or manifest}", f"data.cache_dir={demo / 'embeddings'}",
                 *([f"optim.max_steps={a.steps}"] if a.steps else []), *([f"optim.max_minutes={a.minutes}"] if a.minutes else []),
                 *([f"init_from={a.init_from}"] if a.init_from else []), *a.overrides]
    t = time.perf_counter()
    ckpt = train(config_from_preset(d.stage1_preset if a.stage == 1 else d.stage2_preset, overrides))
    minutes = (time.perf_counter() - t) / 60
    model = load_checkpoint(ckpt)
    rows = [r for r in read_manifest(manifest) if r.split == "test"][: a.n]
    hyps = []
    wavs = [load_audio(r.audio_path(), 16000)[0] for r in rows]
    for i in range(0, len(rows), 16):
        hyps += model.ctc_greedy_decode({"wavs": wavs[i : i + 16]})
    refs = [r.text or "" for r in rows]
    res = {"overrides": a.overrides, "stage": a.stage, "checkpoint": str(ckpt), "train_minutes": round(minutes, 2),
           "ctc_vocab_size": len(model.ctc_vocab), "ctc_wer": wer(refs, hyps), "n": len(rows),
           "hypotheses": dict(zip([r.id for r in rows], hyps))}
    if a.stage == 2:
        from auralm.components.generation import GenerationConfig
        from auralm.recipes.hear.evaluate import TRANSCRIPT_TOKENS_PER_AUDIO
        from auralm.recipes.hear.pipeline import transcribe

        for k, bias in enumerate(float(b) for b in a.copy_bias.split(",")):
            gen = GenerationConfig(max_new_per_audio=TRANSCRIPT_TOKENS_PER_AUDIO, copy_bias=bias)  # as `auralm hear eval`
            lm_hyps = transcribe(model, wavs, None, gen, batch_size=8, desc=f"eval copy_bias {bias:g}")
            tag = "" if k == 0 else f"_copy_bias_{bias:g}"
            res.update({f"lm_wer{tag}": wer(refs, lm_hyps), f"lm_hypotheses{tag}": dict(zip([r.id for r in rows], lm_hyps))})
    (out / "probe.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if "hypotheses" not in k}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
