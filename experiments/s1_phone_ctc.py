"""Probe 16 (docs/s1-alignment.md): a phone CTC head on the cached Whisper states, decoded through a pronouncing
lexicon, so that a word never heard in training can still be written if its phones are heard.

The word-level head needs to hear a word about ten times (probe 9), and no choice among its N best gets under
0.30 (probe 15). A character head (probe 13) shares its units across words but spends its budget on English
spelling. Phones are what the audio holds: every transcript is spelled in espeak-ng's phone mnemonics word by
word (``espeak-ng -x``, stress marks dropped), a small conv + BiGRU head learns them with CTC, and
flashlight-text's lexicon decoder searches only sequences of lexicon words (a word unigram prior in the
beam). The lexicon is every word of the training transcripts and of the WordNet and GCIDE text (test
sentences removed), each pronounced by espeak-ng.

Train and save the head, its test and validation emissions and the decoded N-best lists:

  HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/s1_phone_ctc.py \\
      --demo runs/demo-r --steps 2000 --out runs/s1x/phone

Decode again from the saved emissions (no training): add ``--decode-only``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default="runs/demo-r")
    p.add_argument("--out", default="runs/s1x/phone")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--rnn-layers", type=int, default=2)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beam", type=int, default=32)
    p.add_argument("--lm-weight", type=float, default=0.5, help="weight of the word unigram log-prob in the beam")
    p.add_argument("--word-score", type=float, default=0.0)
    p.add_argument("--decode-only", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn

    from auralm.components.phones import phonemize
    from auralm.data.embed_cache import EmbeddingCache
    from auralm.data.manifest import read_manifest
    from auralm.metrics.text import edit_distance, wer

    sys_path = Path(__file__).resolve().parent
    import sys

    sys.path.insert(0, str(sys_path))
    from s1_char_ctc import lexicon, to_chars

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows = read_manifest(f"{a.demo}/corpus/manifest.jsonl")

    t0 = time.time()
    lex_path = out / "lexicon.json"
    if lex_path.exists():
        lex = json.load(open(lex_path))
    else:
        counts = lexicon(rows, "fortunes-train,wordnet-examples,wordnet-definitions,gcide-quotes")
        prons = phonemize(sorted(counts))
        lex = {w: {"count": counts[w], "phones": prons[w]} for w in sorted(prons)}
        json.dump(lex, open(lex_path, "w"))
    phones = sorted({ph for v in lex.values() for ph in v["phones"]})
    index = {ph: i + 1 for i, ph in enumerate(phones)}  # 0: blank
    print(f"lexicon {len(lex)} words, {len(phones)} phones ({time.time() - t0:.0f} s)", flush=True)

    def spell(text: str) -> list[int] | None:
        ids = []
        for w in to_chars(text).split():
            if w not in lex:
                return None
            ids += [index[ph] for ph in lex[w]["phones"]]
        return ids

    test_rows = [r for r in rows if r.split == "test"][: a.n]
    valid_rows = [r for r in rows if r.split == "valid"][: a.n]
    test_words = [w for r in test_rows for w in to_chars(r.text or "").split()]
    oov = sum(w not in lex for w in test_words) / len(test_words)
    print(f"test words not in the lexicon: {oov:.3f}", flush=True)

    class Head(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(nn.Conv1d(dim, a.hidden, 5, padding=2), nn.GELU(),
                                      nn.Conv1d(a.hidden, a.hidden, 5, stride=a.stride, padding=2), nn.GELU())
            self.rnn = (nn.GRU(a.hidden, a.hidden // 2, num_layers=a.rnn_layers, batch_first=True, bidirectional=True)
                        if a.rnn_layers else None)
            self.mix = None if a.rnn_layers else nn.Sequential(nn.Conv1d(a.hidden, a.hidden, 5, padding=2), nn.GELU())
            self.out = nn.Linear(a.hidden, len(phones) + 1)

        def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.conv(x.transpose(1, 2)).transpose(1, 2)
            lengths = (lengths - 1) // a.stride + 1
            if self.rnn is None:
                return self.out(self.mix(h.transpose(1, 2)).transpose(1, 2)).log_softmax(-1), lengths
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.rnn(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True)
            return self.out(h).log_softmax(-1), lengths

    def batch(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return nn.utils.rnn.pad_sequence(xs, batch_first=True), torch.tensor([len(x) for x in xs])

    def emissions(model: nn.Module, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        res = []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(xs), 16):
                lp, n = model(*batch(xs[i : i + 16]))
                res += [lp[j, : n[j]].clone() for j in range(len(n))]
        model.train()
        return res

    def phone_error(ems: list[torch.Tensor], rs: list) -> float:
        errs = total = 0
        for e, r in zip(ems, rs):
            ref = spell(r.text or "")
            if ref is None:
                continue
            hyp = [t for t in torch.unique_consecutive(e.argmax(-1)).tolist() if t]
            errs += edit_distance(ref, hyp)
            total += len(ref)
        return errs / total

    em_path = out / "emissions.pt"
    if a.decode_only:
        saved = torch.load(em_path)
        em_test, em_valid = saved["test"], saved["valid"]
    else:
        meta = json.load(open(f"{a.demo}/embeddings/cache.json"))
        cache = EmbeddingCache(f"{a.demo}/embeddings", meta["encoder"], meta["revision"])
        train = []
        for r in rows:
            if r.split == "train":
                x, y = cache.get(r), spell(r.text or "")
                if x is not None and y:
                    train.append((x, torch.tensor(y)))
        test = [cache.get(r) for r in test_rows]
        valid = [cache.get(r) for r in valid_rows]
        print(f"{len(train)} training clips loaded ({time.time() - t0:.0f} s)", flush=True)
        model = Head(meta["dim"])
        print(f"{sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.steps, pct_start=0.1)
        g = torch.Generator().manual_seed(a.seed)
        t1, run = time.time(), 0.0
        for step in range(1, a.steps + 1):
            idx = torch.randint(len(train), (a.batch,), generator=g).tolist()
            lp, n = model(*batch([train[i][0] for i in idx]))
            ys = [train[i][1] for i in idx]
            loss = F.ctc_loss(lp.transpose(0, 1), torch.cat(ys), n, torch.tensor([len(y) for y in ys]),
                              zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
            if step % 100 == 0:
                print(f"step {step} loss {run:.3f} ({time.time() - t1:.0f} s)", flush=True)
            if step % a.eval_every == 0 or step == a.steps:
                print(f"step {step}: test phone error rate {phone_error(emissions(model, test), test_rows):.4f}",
                      flush=True)
        em_test, em_valid = emissions(model, test), emissions(model, valid)
        torch.save(model.state_dict(), out / "head.pt")
        torch.save({"test": em_test, "valid": em_valid, "phones": phones}, em_path)
        print(f"trained in {(time.time() - t1) / 60:.1f} min", flush=True)

    result = {"lexicon_words": len(lex), "phones": len(phones), "test_oov": round(oov, 4),
              "test_phone_error": round(phone_error(em_test, test_rows), 4)}
    nbest = {}
    for name, ems, rs in (("valid", em_valid, valid_rows), ("test", em_test, test_rows)):
        lists = lexicon_decode(ems, lex, index, a.beam, a.lm_weight, a.word_score)
        refs = [r.text or "" for r in rs]
        top = [ls[0][0] if ls else "" for ls in lists]
        oracle = [min((h for h, _ in ls), key=lambda h: wer([ref], [h])) if ls else "" for ls, ref in zip(lists, refs)]
        result[f"{name} lexicon top"] = round(wer(refs, top), 4)
        result[f"{name} oracle of {a.beam}"] = round(wer(refs, oracle), 4)
        nbest[name] = [{"ref": ref, "hyps": [h for h, _ in ls], "ac": [s for _, s in ls]} for ref, ls in zip(refs, lists)]
        print(name, json.dumps(result), "|", top[0], "|", refs[0], flush=True)
    json.dump({"args": vars(a), "result": result, "data": nbest}, open(out / "nbest.json", "w"), indent=1)
    print(json.dumps(result, indent=1))
    return 0


def lexicon_decode(ems, lex: dict, index: dict, beam: int, lm_weight: float, word_score: float):
    """flashlight-text's lexicon decoder over the phone emissions: each clip's ``beam`` best word sequences,
    with their scores (acoustic + lm_weight * unigram log-prob + word_score per word)."""
    from flashlight.lib.text.decoder import (
        LM,
        CriterionType,
        LexiconDecoder,
        LexiconDecoderOptions,
        LMState,
        SmearingMode,
        Trie,
    )

    words = sorted(lex)
    total = sum(v["count"] for v in lex.values())
    logp = [math.log(lex[w]["count"] / total) for w in words]

    class Unigram(LM):
        """A unigram prior whose state is the whole word history, so that no two histories merge."""

        def __init__(self) -> None:
            LM.__init__(self)
            self.keep: list = []

        def start(self, start_with_nothing: bool):
            self.keep = [LMState()]
            return self.keep[0]

        def score(self, state, word: int):
            child = state.child(word)
            self.keep.append(child)
            return child, logp[word] if word < len(logp) else -math.inf

        def finish(self, state):
            return state, 0.0

    blank = 0
    trie = Trie(len(index) + 1, blank)
    for i in sorted(range(len(words)), key=lambda i: -logp[i]):  # a node keeps 6 homophones: the commonest
        w = words[i]
        trie.insert([index[ph] for ph in lex[w]["phones"]], i, logp[i])
    trie.smear(SmearingMode.MAX)
    opts = LexiconDecoderOptions(beam_size=beam, beam_size_token=len(index) + 1, beam_threshold=30.0,
                                 lm_weight=lm_weight, word_score=word_score, unk_score=-math.inf, sil_score=0.0,
                                 log_add=True, criterion_type=CriterionType.CTC)
    lm = Unigram()
    unk = len(words)
    decoder = LexiconDecoder(opts, trie, lm, blank, blank, unk, [], False)
    lists = []
    for e in ems:
        e = e.float().contiguous()
        results = decoder.decode(e.data_ptr(), e.shape[0], e.shape[1])
        seen, ls = set(), []
        for r in results:
            text = " ".join(words[i] for i in r.words if 0 <= i < len(words))
            if text not in seen:
                seen.add(text)
                ls.append((text, float(r.score)))
        lists.append(ls[:beam])
    return lists


if __name__ == "__main__":
    raise SystemExit(main())
