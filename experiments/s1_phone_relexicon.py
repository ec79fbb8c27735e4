"""A copy of a phone-head checkpoint whose lexicon also leaves out the sentences of another manifest, so that the
checkpoint can be scored on text from the lexicon's own sources (WordNet, GCIDE) without the test sentences' words
being counted from those very sentences (probe 16, per text source).

The lexicon is rebuilt as ``auralm hear train`` builds it (the training transcripts and ``model.phone_lexicon``'s
sources, leaving out every sentence of a split other than train), then also without every sentence of
``--exclude``; its phone inventory must be the checkpoint's (the head's classes).

  HF_HUB_OFFLINE=1 PYTHONPATH=src python experiments/s1_phone_relexicon.py --checkpoint runs/demo-p/checkpoint \\
      --manifest runs/demo-p/corpus/manifest.jsonl --exclude runs/sources-eval/manifest.jsonl --out runs/demo-p-relex
  auralm hear eval --checkpoint runs/demo-p-relex --manifest runs/sources-eval/manifest.jsonl --split all
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True, help="the corpus the checkpoint was trained on")
    p.add_argument("--exclude", required=True, help="a manifest whose sentences the lexicon leaves out too")
    p.add_argument("--out", required=True)
    a = p.parse_args()

    import yaml

    from auralm.components.phones import LEXICON_FILE, Lexicon
    from auralm.data.manifest import read_manifest
    from auralm.recipes.hear.train import lexicon_texts

    cfg = yaml.safe_load((Path(a.checkpoint) / "config.yaml").read_text())
    model = cfg.get("model", cfg)
    rows = read_manifest(a.manifest)
    held = [r.text or "" for r in rows if r.split != "train"] + [r.text or "" for r in read_manifest(a.exclude)]
    lexicon = Lexicon.build(lexicon_texts(model["phone_lexicon"], [r.text or "" for r in rows if r.split == "train"], held))
    old = Lexicon.load(Path(a.checkpoint) / LEXICON_FILE)
    if lexicon.inventory != old.inventory:
        raise SystemExit(f"the rebuilt lexicon has other phones ({len(lexicon.inventory)} vs {len(old.inventory)})")
    out = Path(a.out)
    shutil.copytree(a.checkpoint, out, dirs_exist_ok=True)
    lexicon.save(out / LEXICON_FILE)
    print(f"{out}: {len(lexicon)} words (the checkpoint's lexicon: {len(old)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
