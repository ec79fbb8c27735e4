"""Probe 16, second half (docs/s1-alignment.md): rescore the phone head's lexicon N-best (from
``s1_phone_ctc.py``), alone or pooled with the word head's N-best (from ``s1_nbest.py --out``), with the frozen
LM's prior.

Every candidate, whichever head proposed it, is scored the same way: ``log p_CTC(phones) + alpha * log p_LM +
beta * words``, where ``log p_CTC`` is the phone head's exact CTC log-probability of the candidate's phone
spelling (espeak-ng, through the probe's lexicon) and ``log p_LM`` the frozen SmolLM2's log-probability of the
candidate written as a sentence (lower-case words, first letter capitalised, "i" as "I", a full stop). alpha
and beta are picked on the validation clips, then applied to the test clips.

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_phone_rescore.py \\
      --phone runs/s1x/phone --words runs/nbest32.json --checkpoint runs/demo-r/checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phone", default="runs/s1x/phone", help="s1_phone_ctc.py's --out folder")
    p.add_argument("--words", default="runs/nbest32.json", help="s1_nbest.py's --out JSON (same clips)")
    p.add_argument("--checkpoint", default="runs/demo-r/checkpoint", help="its LM, adapters off, is the prior")
    p.add_argument("--phone-n", type=int, default=32, help="candidates taken from the phone head's list")
    p.add_argument("--words-n", type=int, default=32, help="candidates taken from the word head's list")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    from auralm.components.lm import adapters_off, sequence_logprobs
    from auralm.components.phones import as_sentence, phonemize
    from auralm.metrics.text import edit_distance, normalize_english, wer
    from auralm.recipes.hear.pipeline import load_checkpoint

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from s1_char_ctc import to_chars

    torch.set_num_threads(1)
    folder = Path(a.phone)
    lex = json.load(open(folder / "lexicon.json"))
    ems = torch.load(folder / "emissions.pt")
    index = {ph: i + 1 for i, ph in enumerate(ems["phones"])}
    phone_lists = json.load(open(folder / "nbest.json"))["data"]
    word_lists = json.load(open(a.words))["data"]
    model = load_checkpoint(a.checkpoint)
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def spell(text: str) -> list[int]:
        missing = [w for w in text.split() if w not in lex]
        if missing:
            for w, ph in phonemize(sorted(set(missing))).items():
                lex[w] = {"count": 0, "phones": ph}
        return [index[ph] for w in text.split() for ph in lex.get(w, {"phones": []})["phones"] if ph in index]

    data = {}
    for split in ("valid", "test"):
        items = []
        for k, (pl, wl) in enumerate(zip(phone_lists[split], word_lists[split])):
            assert pl["ref"] == wl["ref"], "the two lists are not on the same clips"
            cands, source = [], {}
            for name, hyps in (("phone", pl["hyps"][: a.phone_n]), ("word", [to_chars(h) for h in wl["hyps"][: a.words_n]])):
                for h in hyps:
                    if h not in source:
                        source[h] = name
                        cands.append(h)
                    elif source[h] != name:
                        source[h] = "both"
            em = ems[split][k].float()
            targets = [spell(h) for h in cands]
            ok = [i for i, t in enumerate(targets) if t]
            ac = [-1e9] * len(cands)
            if ok:
                n = len(ok)
                lp = em[:, None, :].expand(-1, n, -1)
                tl = torch.tensor([len(targets[i]) for i in ok])
                loss = F.ctc_loss(lp, torch.cat([torch.tensor(targets[i]) for i in ok]),
                                  torch.full((n,), em.shape[0]), tl, reduction="none", zero_infinity=True)
                for i, v in zip(ok, (-loss).tolist()):
                    ac[i] = v if v != 0.0 or len(targets[i]) == 0 else -1e9
            items.append({"ref": pl["ref"], "hyps": cands, "source": [source[h] for h in cands], "ac": ac})
        seqs = [tok(as_sentence(h), add_special_tokens=False).input_ids for it in items for h in it["hyps"]]
        with torch.no_grad(), adapters_off(model.lm):
            lms = sequence_logprobs(model.lm, seqs, start)
        k = 0
        for it in items:
            it["lm"] = lms[k : k + len(it["hyps"])]
            k += len(it["hyps"])
        data[split] = items
        print(f"{split}: {len(items)} clips, {k} candidates scored", flush=True)

    def pick(items, alpha, beta, pool):
        out = []
        for it in items:
            idx = [i for i, s in enumerate(it["source"]) if pool == "union" or s in (pool, "both")]
            out.append(it["hyps"][max(idx, key=lambda i: it["ac"][i] + alpha * it["lm"][i]
                                      + beta * len(it["hyps"][i].split()))] if idx else "")
        return out

    def oracle(items, pool):
        err = n = 0
        for it in items:
            ref = normalize_english(it["ref"]).split()
            hs = [h for h, s in zip(it["hyps"], it["source"]) if pool == "union" or s in (pool, "both")]
            err += min(edit_distance(ref, normalize_english(h).split()) for h in hs) if hs else len(ref)
            n += len(ref)
        return round(err / n, 4)

    grid = [(al, be) for al in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5) for be in (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)]
    result = {}
    for pool in ("phone", "word", "union"):
        r = {f"{s} oracle": oracle(data[s], pool) for s in ("valid", "test")}
        vrefs = [it["ref"] for it in data["valid"]]
        scores = {g: wer(vrefs, pick(data["valid"], *g, pool)) for g in grid}
        best = min(scores, key=scores.get)
        r["valid best (alpha, beta)"] = [best, round(scores[best], 4)]
        trefs = [it["ref"] for it in data["test"]]
        r["test with them"] = round(wer(trefs, pick(data["test"], *best, pool)), 4)
        r["test around them"] = {f"{al}, {be}": round(wer(trefs, pick(data["test"], al, be, pool)), 4)
                                 for al in (best[0] / 1.5, best[0], best[0] * 1.5) for be in (best[1] - 1, best[1], best[1] + 1)}
        if pool == "union":
            chosen = pick(data["test"], *best, pool)
            share = {}
            for it, h in zip(data["test"], chosen):
                s = it["source"][it["hyps"].index(h)] if h in it["hyps"] else "none"
                share[s] = share.get(s, 0) + 1
            r["test: chosen from"] = share
        result[pool] = r
        print(pool, json.dumps(r), flush=True)
    if a.out:
        json.dump({"args": vars(a), "result": result, "data": data}, open(a.out, "w"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
