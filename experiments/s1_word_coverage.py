"""How often each held-out word was heard in training: the share of test words heard never, 1-2, 3-9 and
10+ times in the training transcripts (probe 9 of docs/s1-alignment.md: a word-level CTC head needs about
ten hearings of a word). Text only, seconds.

  PYTHONPATH=src python experiments/s1_word_coverage.py runs/demo/corpus/manifest.jsonl runs/demo10k/corpus/manifest.jsonl

With two or more manifests it also scores each manifest's training words against the first one's test
clips (the same held-out sentences for every corpus: the split is a hash of the sentence, so a test
sentence of one corpus is never a training sentence of another with the same fractions).
"""

from __future__ import annotations

import re
import sys
from collections import Counter

from auralm.data.manifest import read_manifest

BINS = (("never", 0, 0), ("1-2", 1, 2), ("3-9", 3, 9), ("10+", 10, 10**9))


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def coverage(train: Counter, test_texts: list[str]) -> dict[str, float]:
    test = [w for t in test_texts for w in words(t)]
    return {name: sum(lo <= train[w] <= hi for w in test) / len(test) for name, lo, hi in BINS}


def main(paths: list[str]) -> None:
    corpora = {p: read_manifest(p) for p in paths}
    first_test = [r.text or "" for r in corpora[paths[0]] if r.split == "test"]
    for p, rows in corpora.items():
        train = Counter(w for r in rows if r.split == "train" for w in words(r.text or ""))
        n_sent = len({r.text for r in rows if r.split == "train"})
        own = coverage(train, [r.text or "" for r in rows if r.split == "test"])
        ref = coverage(train, first_test)
        print(f"{p}: {n_sent} distinct training sentences, {sum(train.values())} training words, {len(train)} word types")
        print("   own test words heard   " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in own.items()))
        print(f"   {paths[0]} test words  " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in ref.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
