"""Probe 16, through the library: pick the phone path's rescoring weights on validation clips, then score the test
clips with them, from a checkpoint with a phone head (``auralm demo``'s). Each clip's lexicon N-best, their exact
phone CTC scores and the frozen LM's log-probs are computed once; the grid only re-weighs them.

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 PYTHONPATH=src python experiments/s1_phone_grid.py \\
      --checkpoint runs/demo-p/checkpoint --manifest runs/demo-p/corpus/manifest.jsonl --n 100 [--beam 32]
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--prior-weight", type=float, default=0.5, help="the unigram prior's weight inside the beam")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch

    from auralm.components.lm import adapters_off, sequence_logprobs
    from auralm.components.phones import as_sentence
    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import edit_distance, normalize_english, wer
    from auralm.recipes.hear.pipeline import load_checkpoint

    torch.set_num_threads(a.threads)
    model = load_checkpoint(a.checkpoint)
    head, lex, tok = model.phones, model.lexicon, model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    rows_all = read_manifest(a.manifest)
    data = {}
    for split in ("valid", "test"):
        rows = [r for r in rows_all if r.split == split][: a.n]
        items = []
        for i in range(0, len(rows), 16):
            wavs = [load_audio(r.audio_path(), 16000)[0] for r in rows[i : i + 16]]
            with torch.no_grad():
                lists, logp, n = head.nbest(*model._states({"wavs": wavs}), lex, beam=a.beam, prior_weight=a.prior_weight)
            for j, hyps in enumerate(lists):
                ac = head.score(logp[j, : int(n[j])].cpu(), [lex.spell(h) or [] for h in hyps])
                items.append({"ref": rows[i + j].text or "", "hyps": hyps, "ac": ac})
        seqs = [tok(as_sentence(h), add_special_tokens=False).input_ids for it in items for h in it["hyps"]]
        with torch.no_grad(), adapters_off(model.lm):
            lms = sequence_logprobs(model.lm, seqs, start)
        k = 0
        for it in items:
            it["lm"], k = lms[k : k + len(it["hyps"])], k + len(it["hyps"])
        data[split] = items
        print(f"{split}: {len(items)} clips, {k} hypotheses", flush=True)

    def pick(items, alpha, beta):
        return [as_sentence(it["hyps"][max(range(len(it["hyps"])), key=lambda h: it["ac"][h] + alpha * it["lm"][h]
                                           + beta * len(it["hyps"][h].split()))]) if it["hyps"] else "" for it in items]

    result = {}
    for split, items in data.items():
        refs = [it["ref"] for it in items]
        result[f"{split} top of the beam"] = round(wer(refs, [as_sentence(it["hyps"][0]) if it["hyps"] else "" for it in items]), 4)
        err = tot = 0
        for it in items:
            ref = normalize_english(it["ref"]).split()
            err += min((edit_distance(ref, normalize_english(h).split()) for h in it["hyps"]), default=len(ref))
            tot += len(ref)
        result[f"{split} oracle of {a.beam}"] = round(err / tot, 4)
    grid = [(al, be) for al in (0.0, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5) for be in (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0)]
    vrefs, trefs = [it["ref"] for it in data["valid"]], [it["ref"] for it in data["test"]]
    scores = {g: wer(vrefs, pick(data["valid"], *g)) for g in grid}
    best = min(scores, key=scores.get)
    result["valid rescored (best alpha, beta)"] = [best, round(scores[best], 4)]
    result["test rescored with them"] = round(wer(trefs, pick(data["test"], *best)), 4)
    result["test over the grid"] = {f"{al}, {be}": round(wer(trefs, pick(data["test"], al, be)), 4) for al, be in grid}
    print(json.dumps(result, indent=1))
    if a.out:
        json.dump({"result": result, "data": data}, open(a.out, "w"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
