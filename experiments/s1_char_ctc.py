"""Probe 13 (docs/s1-alignment.md): a character-level CTC head on the cached Whisper states, against the
word-level head's need to hear each word about ten times (probe 9). Trains a small conv + BiGRU head on the
training clips of a demo corpus and scores its greedy CTC transcript (WER after the English normaliser) on the
first N test clips, the same clips `auralm hear eval --limit N` scores, then again after a lexicon spelling
correction (needs `pip install rapidfuzz`, not a dependency of auralm).

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_char_ctc.py \\
      --demo runs/demo --steps 2000 --out runs/s1x/char.json
"""

from __future__ import annotations

import argparse
import json
import re
import time

CHARS = " abcdefghijklmnopqrstuvwxyz'"


def to_chars(text: str) -> str:
    text = re.sub(r"[^a-z' ]+", " ", text.lower().replace("-", " "))
    return " ".join(text.split())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="runs/demo")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--rnn-layers", type=int, default=2)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="a JSON of the figures and the hypotheses (and OUT.pt: the head)")
    p.add_argument("--lexicon", default="fortunes-train,wordnet-examples,wordnet-definitions,gcide-quotes",
                   help="text for the spelling correction: the training transcripts (fortunes-train) and named text "
                        "sources (auralm.data.text_sources); never the test sentences")
    p.add_argument("--penalty", type=float, default=3.0, help="correction: log-count cost of one edit")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn

    from auralm.data.embed_cache import EmbeddingCache
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import cer, wer

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    rows = read_manifest(f"{a.demo}/corpus/manifest.jsonl")
    meta = json.load(open(f"{a.demo}/embeddings/cache.json"))
    cache = EmbeddingCache(f"{a.demo}/embeddings", meta["encoder"], meta["revision"])
    t0 = time.time()
    train = [(cache.get(r), to_chars(r.text or "")) for r in rows if r.split == "train"]
    train = [(x, y) for x, y in train if x is not None and y]
    test_rows = [r for r in rows if r.split == "test"][: a.n]
    test = [cache.get(r) for r in test_rows]
    print(f"{len(train)} training clips, {len(test)} test clips loaded in {time.time() - t0:.0f} s", flush=True)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = meta["dim"]
            self.conv = nn.Sequential(
                nn.Conv1d(d, a.hidden, 5, padding=2), nn.GELU(), nn.Conv1d(a.hidden, a.hidden, 5, stride=2, padding=2), nn.GELU()
            )
            self.rnn = nn.GRU(a.hidden, a.hidden // 2, num_layers=a.rnn_layers, batch_first=True, bidirectional=True)
            self.out = nn.Linear(a.hidden, len(CHARS) + 1)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.conv(x.transpose(1, 2)).transpose(1, 2)
            lengths = (lengths + 1) // 2
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True)
            return self.out(h).log_softmax(-1), lengths

    def batch(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in xs])
        return nn.utils.rnn.pad_sequence(xs, batch_first=True), lengths

    def decode(model: nn.Module, xs: list[torch.Tensor]) -> list[str]:
        out = []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xs), 16):
                x, n = batch(xs[i : i + 16])
                lp, n = model(x, n)
                for seq, m in zip(lp.argmax(-1), n):
                    ids = torch.unique_consecutive(seq[:m]).tolist()
                    out.append(" ".join("".join(CHARS[t - 1] for t in ids if t > 0).split()))
        model.train()
        return out

    model = Head()
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(a.seed)
    refs = [r.text or "" for r in test_rows]
    log, t0, run = [], time.time(), 0.0
    for step in range(1, a.steps + 1):
        idx = torch.randint(len(train), (a.batch,), generator=g).tolist()
        x, n = batch([train[i][0] for i in idx])
        ys = [torch.tensor([CHARS.index(c) + 1 for c in train[i][1]]) for i in idx]
        lp, n = model(x, n)
        loss = F.ctc_loss(lp.transpose(0, 1), torch.cat(ys), n, torch.tensor([len(y) for y in ys]), zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 100 == 0:
            print(f"step {step} loss {run:.3f} ({time.time() - t0:.0f} s)", flush=True)
        if step % a.eval_every == 0 or step == a.steps:
            hyps = decode(model, test)
            entry = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "wer": round(wer(refs, hyps), 4),
                     "cer": round(cer(refs, hyps), 4)}
            log.append(entry)
            print(json.dumps(entry), "|", hyps[0], "|", refs[0], flush=True)
    hyps = decode(model, test)
    fixed = correct(hyps, lexicon(rows, a.lexicon), a.penalty)
    final = {"wer": round(wer(refs, hyps), 4), "cer": round(cer(refs, hyps), 4), "wer_corrected": round(wer(refs, fixed), 4),
             "cer_corrected": round(cer(refs, fixed), 4)}
    print(json.dumps(final), flush=True)
    if a.out:
        torch.save(model.state_dict(), a.out.removesuffix(".json") + ".pt")
        json.dump({"args": vars(a), "log": log, "final": final,
                   "hypotheses": [{"ref": r, "hyp": h, "fixed": f} for r, h, f in zip(refs, hyps, fixed)]},
                  open(a.out, "w"), indent=1)
    return 0


def lexicon(rows: list, names: str) -> dict[str, int]:
    """Word -> count over the training transcripts and the named text sources (test sentences removed)."""
    from collections import Counter

    from auralm.data.text_sources import load_source, sentence_key

    test = {sentence_key(r.text or "") for r in rows if r.split != "train"}
    counts: Counter = Counter()
    for name in names.split(","):
        texts = [r.text or "" for r in rows if r.split == "train"] if name == "fortunes-train" else load_source(name)
        for t in texts:
            if sentence_key(t) not in test:
                counts.update(to_chars(t).split())
    return dict(counts)


def correct(hyps: list[str], counts: dict[str, int], penalty: float) -> list[str]:
    """Each word not in the lexicon replaced by the lexicon word within two edits that maximises
    log(count) - penalty * edits (kept when there is none)."""
    import math

    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    words = list(counts)
    out = []
    for h in hyps:
        fixed = []
        for w in h.split():
            if w not in counts:
                near = process.extract(w, words, scorer=Levenshtein.distance, score_cutoff=2, limit=50)
                if near:
                    w = max(near, key=lambda m: math.log(counts[m[0]]) - penalty * m[1])[0]
            fixed.append(w)
        out.append(" ".join(fixed))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
