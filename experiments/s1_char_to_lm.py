"""Probe 13 (docs/s1-alignment.md), second half: the demo's stage-2 LM (LoRA trained to read the word-level CTC
head's hard tokens) reading the character CTC head's transcripts instead, with no further training. Each
test clip's transcript (``hyp`` or spelling-corrected ``fixed``, from ``experiments/s1_char_ctc.py --out``) is
tokenised and fed at the audio positions exactly as ``feed=ctc_soft, soft_top_k=1`` feeds its token ids; the
checkpoint's own decoding settings (copy bias, token cap) apply. The control feeds each clip another clip's
transcript.

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_char_to_lm.py \\
      --checkpoint runs/demo/checkpoint --hyps runs/s1x/char.json --field fixed
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/demo/checkpoint")
    p.add_argument("--hyps", default="runs/s1x/char.json")
    p.add_argument("--field", default="fixed", choices=["hyp", "fixed"])
    p.add_argument("--examples", type=int, default=8)
    a = p.parse_args()

    import torch

    from auralm.components.generation import GenerationConfig
    from auralm.components.lm import text_ids
    from auralm.metrics.text import cer, wer
    from auralm.recipes.hear.pipeline import load_checkpoint, load_generation_config

    torch.set_num_threads(1)
    rows = json.load(open(a.hyps))["hypotheses"]
    refs, fed = [r["ref"] for r in rows], [r[a.field] for r in rows]
    model = load_checkpoint(a.checkpoint)
    gen = load_generation_config(a.checkpoint) or GenerationConfig()
    emb = model.lm.get_input_embeddings()
    result = {"checkpoint": a.checkpoint, "field": a.field, "generation": gen.to_dict() if hasattr(gen, "to_dict") else str(gen),
              "input_wer": round(wer(refs, fed), 4)}

    def run(texts: list[str]) -> list[str]:
        out = []
        for i in range(0, len(texts), 16):
            chunk = texts[i : i + 16]
            ids = [text_ids(model.tokenizer, t) or [model.pad_token_id] for t in chunk]

            def compress(audio, lengths, top_k, ids=ids):  # the transcript's tokens stand for the CTC runs
                n = max(map(len, ids))
                padded = torch.zeros(len(ids), n, emb.weight.shape[1])
                for b, row in enumerate(ids):
                    padded[b, : len(row)] = emb(torch.tensor(row))
                return padded, torch.tensor([len(r) for r in ids]), ids

            model.ctc.compress = compress
            batch = {"states": torch.zeros(len(chunk), 8, model.encoder.dim), "lengths": torch.full((len(chunk),), 8)}
            out += model.generate(batch, gen)
        return out

    hyps = run(fed)
    result.update(wer=round(wer(refs, hyps), 4), cer=round(cer(refs, hyps), 4))
    shuffled = run(fed[1:] + fed[:1])
    result.update(wer_shuffled=round(wer(refs, shuffled), 4))
    result["examples"] = [{"ref": r, "fed": f, "lm": h} for r, f, h in list(zip(refs, fed, hyps))[: a.examples]]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
