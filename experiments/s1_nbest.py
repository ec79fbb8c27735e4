"""How much a language model can fix in the projector's CTC transcript: N-best lists from a CTC prefix beam
search over the projector's token classes, their oracle WER, and the best hypothesis when each is rescored by
the frozen LM (``acoustic + alpha * LM log-prob + beta * tokens``, alpha and beta picked on validation clips,
then applied to the test clips).

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_nbest.py \\
      --checkpoint runs/demo/stage1/checkpoints/step-002000 --manifest runs/demo/corpus/manifest.jsonl --n 100
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict


def logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def prefix_beam(logp, beam: int, per_frame: int, blank: int) -> list[tuple[tuple[int, ...], float]]:
    """CTC prefix beam search over ``logp (T, K+1)`` (a numpy array): the ``beam`` best label sequences and
    their log-probabilities (blank and non-blank endings summed)."""
    import numpy as np

    beams = {(): (0.0, -math.inf)}  # prefix -> (log p ending in blank, log p ending in a label)
    for t in range(logp.shape[0]):
        row = logp[t]
        cands = np.argpartition(-row[:blank], per_frame)[:per_frame]
        nxt = defaultdict(lambda: (-math.inf, -math.inf))
        for prefix, (pb, pnb) in beams.items():
            total = logsumexp(pb, pnb)
            b, nb = nxt[prefix]
            nxt[prefix] = (logsumexp(b, total + row[blank]), nb)
            if prefix:  # the last label repeated without a blank between: the same prefix
                b, nb = nxt[prefix]
                nxt[prefix] = (b, logsumexp(nb, pnb + row[prefix[-1]]))
            for c in cands:
                c = int(c)
                new = prefix + (c,)
                b, nb = nxt[new]
                if prefix and prefix[-1] == c:  # a repeat needs a blank between
                    nxt[new] = (b, logsumexp(nb, pb + row[c]))
                else:
                    nxt[new] = (b, logsumexp(nb, total + row[c]))
        beams = dict(sorted(nxt.items(), key=lambda kv: -logsumexp(*kv[1]))[:beam])
    return [(p, logsumexp(*s)) for p, s in sorted(beams.items(), key=lambda kv: -logsumexp(*kv[1]))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a stage-1 checkpoint (its LM has no adapters)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--n", type=int, default=100, help="clips of each split (valid picks alpha, beta; test scores)")
    p.add_argument("--beam", type=int, default=16)
    p.add_argument("--per-frame", type=int, default=8)
    p.add_argument("--scorer", choices=["lm", "model"], default="lm",
                   help="lm: the LM's log-prob of each hypothesis's CTC tokens alone (use a stage-1 checkpoint: no "
                        "adapters); model: the checkpoint's own log-prob of the hypothesis as the answer to its audio")
    p.add_argument("--out", default=None, help="write the N-best lists and scores here (JSON)")
    a = p.parse_args()

    import torch

    from auralm.data.audio import load_audio
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import edit_distance, normalize_english, wer
    from auralm.recipes.hear.pipeline import load_checkpoint

    torch.set_num_threads(1)
    model = load_checkpoint(a.checkpoint)
    ctc, tok = model._ctc(), model.tokenizer
    vocab, blank = ctc.vocab.tolist(), len(ctc.vocab)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    @torch.no_grad()
    def lm_logprob(seqs: list[list[int]]) -> list[float]:
        out = []
        for i in range(0, len(seqs), 16):
            chunk = [[start] + s for s in seqs[i : i + 16]]
            L = max(map(len, chunk))
            ids = torch.tensor([s + [start] * (L - len(s)) for s in chunk])
            mask = torch.tensor([[1] * len(s) + [0] * (L - len(s)) for s in chunk])
            lp = model.lm(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)  # B, L, V
            got = lp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
            out += got.sum(1).tolist()
        return out

    @torch.no_grad()
    def answer_logprob(wav, hyps: list[str]) -> list[float]:
        texts = [h if h else "." for h in hyps]
        x = model.build_inputs({"wavs": [wav] * len(texts), "texts": texts}, answers=True, left_pad=False)
        logits = model.lm(inputs_embeds=x["embeds"], attention_mask=x["mask"]).logits.float()
        labels = x["labels"][:, 1:]
        lp = logits[:, :-1].log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
        return (lp * (labels != -100)).sum(1).tolist()

    data = {}
    for split in ("valid", "test"):
        rows = [r for r in read_manifest(a.manifest) if r.split == split][: a.n]
        items = []
        for i in range(0, len(rows), 16):
            wavs = [load_audio(r.audio_path(), 16000)[0] for r in rows[i : i + 16]]
            with torch.no_grad():
                audio, lengths = model._audio({"wavs": wavs})
                logp = ctc.log_probs(audio).numpy()
            for j, r in enumerate(rows[i : i + 16]):
                nbest = prefix_beam(logp[j, : int(lengths[j])], a.beam, a.per_frame, blank)
                ids = [[vocab[c] for c in pre] for pre, _ in nbest]
                items.append({"ref": r.text or "", "ids": ids, "ac": [float(s) for _, s in nbest],
                              "hyps": [tok.decode(x, skip_special_tokens=True).strip() for x in ids]})
            print(f"{split}: {len(items)} of {len(rows)} clips", flush=True)
        if a.scorer == "lm":
            lms = lm_logprob([x for it in items for x in it["ids"]])
            k = 0
            for it in items:
                it["lm"] = lms[k : k + len(it["ids"])]
                k += len(it["ids"])
        else:
            for i, it in enumerate(items):
                it["lm"] = answer_logprob(load_audio(rows[i].audio_path(), 16000)[0], it["hyps"])
        data[split] = items

    def pick(items, alpha, beta):
        return [it["hyps"][max(range(len(it["hyps"])), key=lambda h: it["ac"][h] + alpha * it["lm"][h]
                                   + beta * len(it["ids"][h]))] for it in items]

    result = {}
    for split, items in data.items():
        refs = [it["ref"] for it in items]
        result[f"{split} greedy-beam (top of the beam)"] = round(wer(refs, [it["hyps"][0] for it in items]), 4)
        oracle_err = oracle_n = 0
        for it in items:
            ref = normalize_english(it["ref"]).split()
            oracle_err += min(edit_distance(ref, normalize_english(h).split()) for h in it["hyps"])
            oracle_n += len(ref)
        result[f"{split} oracle of {a.beam}"] = round(oracle_err / oracle_n, 4)
    grid = [(al, be) for al in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0) for be in (-1.0, 0.0, 0.5, 1.0, 2.0, 3.0)]
    vrefs = [it["ref"] for it in data["valid"]]
    scores = {g: wer(vrefs, pick(data["valid"], *g)) for g in grid}
    best = min(scores, key=scores.get)
    result["valid rescored (best alpha, beta)"] = [best, round(scores[best], 4)]
    trefs = [it["ref"] for it in data["test"]]
    result["test rescored with them"] = round(wer(trefs, pick(data["test"], *best)), 4)
    result["test WER around them (alpha, beta)"] = {
        f"{al}, {be}": round(wer(trefs, pick(data["test"], al, be)), 4)
        for al in (0.2, 0.3, 0.5) for be in (1.0, 2.0, 3.0)}
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"result": result, "data": data}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
