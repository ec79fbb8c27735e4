"""The projector's own greedy CTC WER of several checkpoints on the first N test clips of several manifests:
the same held-out clips for projectors trained on different corpora (the split is a hash of the sentence,
so with the same fractions a test sentence of one corpus is never a training sentence of another).

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_cross_ctc.py \\
      --checkpoints runs/demo/stage1/checkpoints/step-002000,runs/demo10k/stage1/checkpoints/step-004000 \\
      --manifests runs/demo/corpus/manifest.jsonl,runs/demo10k/corpus/manifest.jsonl --n 100
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="comma-separated checkpoint folders")
    p.add_argument("--manifests", required=True, help="comma-separated manifests (their test split is scored)")
    p.add_argument("--n", type=int, default=100)
    a = p.parse_args()

    import torch

    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import wer
    from auralm.recipes.hear.pipeline import load_checkpoint

    torch.set_num_threads(1)
    tests = {}
    for m in a.manifests.split(","):
        rows = [r for r in read_manifest(m) if r.split == "test"][: a.n]
        tests[m] = (rows, [load_audio(r.audio_path(), 16000)[0] for r in rows])
    result = {}
    for ckpt in a.checkpoints.split(","):
        model = load_checkpoint(ckpt)
        for m, (rows, wavs) in tests.items():
            hyps = []
            for i in range(0, len(rows), 16):
                hyps += model.ctc_greedy_decode({"wavs": wavs[i : i + 16]})
            result[f"{ckpt} on {m}"] = round(wer([r.text or "" for r in rows], hyps), 4)
            print(f"{ckpt} on {m}: CTC WER {result[f'{ckpt} on {m}']}", flush=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
