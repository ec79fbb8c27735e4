"""Real-time factor of ``auralm embed`` with a Whisper encoder: real audio length vs padded to 30 s.

Renders ``--clips`` speech clips with espeak-ng (sentences from the fortunes file when present),
embeds them twice with :func:`auralm.data.embed_cache.embed_manifest` (``pad_to_30s`` off and on),
and prints each run's real-time factor (processing seconds per audio second), the speed-up, and how
close the real-length states are to the padded ones (mean cosine over the real frames).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_embed.py --clips 16 --encoder whisper-tiny.en
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FALLBACK = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "Speech embeddings are cached once and reused by every training run.",
    "Whisper pads every clip to thirty seconds unless we ask it not to.",
]


def sentences(n: int, seed: int) -> list[str]:
    """``n`` short texts: fortunes of one to three lines, or the fallback list."""
    path = Path("/usr/share/games/fortunes/fortunes")
    pool = FALLBACK
    if path.is_file():
        entries = [" ".join(e.split()) for e in path.read_text(errors="replace").split("\n%\n")]
        pool = [e for e in entries if 20 <= len(e) <= 300] or FALLBACK
    rng = random.Random(seed)
    return [rng.choice(pool) for _ in range(n)]


def make_corpus(folder: Path, n: int, seed: int) -> Path:
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is not installed (apt-get install espeak-ng)")
    rows = []
    for i, text in enumerate(sentences(n, seed)):
        wav = folder / f"clip{i:03d}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        rows.append({"id": f"clip{i:03d}", "audio": wav.name, "text": text})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--encoder", default="whisper-tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from auralm.components.encoders import build_audio_encoder
    from auralm.data.embed_cache import EmbeddingCache, embed_manifest
    from auralm.data.manifest import read_manifest

    work = Path(tempfile.mkdtemp(prefix="auralm-bench-embed-"))
    try:
        manifest = make_corpus(work, args.clips, args.seed)
        t0 = time.perf_counter()
        encoder = build_audio_encoder(args.encoder, device=args.device)
        print(f"{encoder.name}@{encoder.revision} on {args.device}: loaded in {time.perf_counter() - t0:.1f} s, "
              f"torch threads {torch.get_num_threads()}")
        encoder([torch.zeros(16000)])  # warm-up
        reports, caches = {}, {}
        for pad in (False, True):
            encoder.pad_to_30s = pad
            out = work / ("padded" if pad else "real")
            reports[pad] = embed_manifest(manifest, encoder, out, batch_size=args.batch_size, shard_size=args.batch_size * 8)
            caches[pad] = EmbeddingCache(out, encoder.name, encoder.revision)
            print(f"\npad_to_30s={pad}: {reports[pad].summary()}")
        real, padded = reports[False], reports[True]
        print(f"\naudio: {real.audio_seconds:.1f} s in {real.encoded} clips "
              f"(mean {real.audio_seconds / max(real.encoded, 1):.1f} s)")
        print(f"real-time factor: real length {real.real_time_factor:.4f}, padded to 30 s "
              f"{padded.real_time_factor:.4f} -> {padded.real_time_factor / real.real_time_factor:.1f}x faster")
        cos = []
        for row in read_manifest(manifest):
            a, b = caches[False].get(row).float(), caches[True].get(row).float()
            cos.append(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean().item())
        print(f"mean cosine(real-length states, padded states) over real frames: {sum(cos) / len(cos):.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
