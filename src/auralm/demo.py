"""``auralm demo``: the data pipeline end to end on the embedded default, offline, on a CPU.

Steps (each writes under ``cfg.out``, default ``runs/demo``):

1. ``corpus/``: a synthetic speech corpus (espeak-ng + flite, sentences from Debian's fortunes);
   the split is assigned per sentence, so test sentences are never heard in training.
2. ``prepared.jsonl``: ``auralm prepare`` re-reads the corpus folder (``x.wav`` beside ``x.txt``)
   and checks every file.
3. ``long/``: the test clips joined into one long recording with an SRT of its sentences, cut by
   ``auralm chunk`` at sentence boundaries; each chunk's text must be exactly its sentences.
4. ``embeddings/``: ``auralm embed`` caches Whisper tiny.en encoder states (real length) for the
   corpus, reporting the real-time factor; a second pass must find everything cached.
5. Whisper tiny.en's own decoder transcribes the held-out clips and the long-recording chunks:
   its WER on them is the baseline that the S1 recipe will be compared with.

``metrics.json`` holds every figure; ``config.yaml`` the resolved settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from auralm.config import Config, apply_overrides, help_field, load_preset, save_config
from auralm.errors import AuralmError
from auralm.io import atomic_write_json, atomic_write_text


@dataclasses.dataclass
class DemoConfig(Config):
    """Settings of ``auralm demo`` (preset ``demo``)."""

    out: str = help_field("runs/demo", "output folder")
    seed: int = help_field(0, "seed of the synthetic corpus")
    n_clips: int = help_field(200, "clips in the synthetic corpus")
    test_frac: float = help_field(0.15, "fraction of sentences held out for testing")
    valid_frac: float = help_field(0.1, "fraction of sentences held out for validation")
    encoder: str = help_field("whisper-tiny.en", "audio encoder to cache")
    long_max_seconds: float = help_field(12.0, "longest chunk when cutting the long recording")
    max_eval_clips: int = help_field(60, "held-out clips transcribed by the Whisper baseline (0: all)")
    jobs: int = help_field(2, "parallel synthesis jobs")

    def validate(self) -> None:
        from auralm.errors import ConfigError

        if self.n_clips < 10:
            raise ConfigError(f"n_clips must be at least 10, got {self.n_clips}")
        if not 0 < self.test_frac < 1:
            raise ConfigError(f"test_frac must be in (0, 1), got {self.test_frac}")
        if self.long_max_seconds <= 1:
            raise ConfigError(f"long_max_seconds must exceed 1, got {self.long_max_seconds}")


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _make_long_recording(rows, folder: Path, gap: float = 0.4) -> tuple[Path, Path, str]:
    """Join clips with ``gap`` seconds of silence; write the WAV and an SRT with one cue per clip."""
    from auralm.data.audio import load_audio, write_wav

    rate = 16000
    pieces, cues, t = [], [], 0.0
    silence = np.zeros(int(gap * rate), dtype=np.float32)
    for k, row in enumerate(rows, start=1):
        wav, _ = load_audio(row.audio_path(), rate)
        start, end = t, t + len(wav) / rate
        cues.append(f"{k}\n{_srt_time(start)} --> {_srt_time(end)}\n{row.text}\n")
        pieces += [wav, silence]
        t = end + gap
    wav_path, srt_path = folder / "long.wav", folder / "long.srt"
    write_wav(wav_path, np.concatenate(pieces), rate)
    atomic_write_text(srt_path, "\n".join(cues))
    return wav_path, srt_path, " ".join(row.text for row in rows)


def _srt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def run(cfg: DemoConfig) -> dict:
    from auralm.data.audio import load_audio
    from auralm.data.chunk import ChunkConfig
    from auralm.data.chunk import run as chunk_run
    from auralm.data.embed_cache import embed_manifest
    from auralm.data.manifest import read_manifest
    from auralm.data.prepare import prepare
    from auralm.data.synth import SynthConfig, synth_speech
    from auralm.encoders import build_audio_encoder
    from auralm.evaluation import cer, wer
    from auralm.evaluation.whisper_baseline import WhisperBaseline

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    metrics: dict = {"config": cfg.to_dict()}
    t0 = time.perf_counter()

    _log(f"1/5 synthesising {cfg.n_clips} clips into {out / 'corpus'}")
    manifest = synth_speech(
        SynthConfig(out=str(out / "corpus"), n=cfg.n_clips, seed=cfg.seed, test_frac=cfg.test_frac,
                    valid_frac=cfg.valid_frac, jobs=cfg.jobs)
    )
    rows = read_manifest(manifest)
    splits = {s: sum(r.split == s for r in rows) for s in ("train", "valid", "test")}
    train_text = {r.text for r in rows if r.split == "train"}
    test_rows = [r for r in rows if r.split == "test"]
    leaked = sum(r.text in train_text for r in test_rows)
    metrics["corpus"] = {"clips": len(rows), "splits": splits, "audio_seconds": round(sum(r.duration or 0 for r in rows), 1),
                         "test_sentences_also_in_train": leaked}
    _log(f"   {len(rows)} clips, splits {splits}, {leaked} test sentences also in train")

    _log("2/5 checking the corpus folder with `auralm prepare`")
    report = prepare(out / "corpus" / "wavs", None, out / "prepared.jsonl")
    metrics["prepare"] = {"pairs": len(report.rows), "problems": len(report.problems)}

    _log("3/5 joining the test clips into one long recording and chunking it at sentence boundaries")
    long_dir = out / "long"
    long_dir.mkdir(exist_ok=True)
    wav_path, srt_path, long_text = _make_long_recording(test_rows, long_dir)
    chunk_cfg = ChunkConfig(out=str(long_dir / "chunks.jsonl"), audio=str(wav_path), timings=str(srt_path),
                            id="long", max_seconds=cfg.long_max_seconds)
    chunk_run(chunk_cfg)
    chunks = read_manifest(long_dir / "chunks.jsonl")
    joined = " ".join(c.text or "" for c in chunks)
    metrics["chunk"] = {
        "long_recording_seconds": round(sum(c.duration or 0 for c in chunks), 1),
        "chunks": len(chunks),
        "longest_chunk_seconds": round(max((c.end or 0) - (c.start or 0) for c in chunks), 2),
        "text_exact": joined.split() == long_text.split(),
    }
    if not metrics["chunk"]["text_exact"]:
        raise AuralmError("chunking lost or repeated words of the long recording")

    _log(f"4/5 caching {cfg.encoder} embeddings")
    encoder = build_audio_encoder(cfg.encoder)
    first = embed_manifest(manifest, encoder, out / "embeddings")
    second = embed_manifest(manifest, encoder, out / "embeddings")
    metrics["embed"] = {
        "encoder": cfg.encoder, "revision": encoder.revision, "encoded": first.encoded,
        "audio_seconds": round(first.audio_seconds, 1), "real_time_factor": round(first.real_time_factor, 4),
        "second_run_encoded": second.encoded, "second_run_skipped": second.skipped,
    }
    _log(f"   real-time factor {first.real_time_factor:.4f} ({first.encoded} clips); "
         f"second run encoded {second.encoded}, skipped {second.skipped}")

    eval_rows = test_rows[: cfg.max_eval_clips] if cfg.max_eval_clips else test_rows
    _log(f"5/5 Whisper baseline on {len(eval_rows)} held-out clips and {len(chunks)} long-recording chunks")
    clips = [load_audio(r.audio_path(), 16000)[0] for r in eval_rows]
    whisper = WhisperBaseline("whisper-tiny.en")
    hyps = whisper.transcribe(clips, desc="whisper (clips)")
    chunk_wavs = [load_audio(c.audio_path(), 16000, start=c.start, end=c.end)[0] for c in chunks]
    chunk_hyps = whisper.transcribe(chunk_wavs, desc="whisper (chunks)")
    refs, chunk_refs = [r.text or "" for r in eval_rows], [c.text or "" for c in chunks]
    metrics["whisper_baseline"] = {
        "model": "whisper-tiny.en",
        "clips": {"n": len(eval_rows), "wer": wer(refs, hyps), "cer": cer(refs, hyps)},
        "long_chunks": {"n": len(chunks), "wer": wer(chunk_refs, chunk_hyps), "cer": cer(chunk_refs, chunk_hyps)},
        "clips_by_engine": _wer_by(eval_rows, refs, hyps, lambda r: r.meta.get("engine", "?")),
        "hypotheses": {r.id: h for r, h in zip(eval_rows, hyps)},
    }
    metrics["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(out / "metrics.json", metrics)
    wb = metrics["whisper_baseline"]
    _log(f"done in {metrics['seconds']} s: Whisper tiny.en WER {wb['clips']['wer']:.3f} on {len(eval_rows)} held-out clips, "
         f"{wb['long_chunks']['wer']:.3f} on the long-recording chunks; wrote {out / 'metrics.json'}")
    return metrics


def _wer_by(rows, refs, hyps, key) -> dict:
    from auralm.evaluation import wer

    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(key(row), []).append(i)
    return {g: {"n": len(ix), "wer": wer([refs[i] for i in ix], [hyps[i] for i in ix])} for g, ix in sorted(groups.items())}


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="auralm demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", help="preset name or YAML file (default: demo)")
    parser.add_argument("--out", help="output folder (default: runs/demo)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. n_clips=60")
    args = parser.parse_args(argv)
    cfg = DemoConfig.from_dict(load_preset(args.preset))
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    cfg = apply_overrides(cfg, overrides)
    metrics = run(cfg)
    print(json.dumps({k: metrics[k] for k in ("corpus", "chunk", "seconds")}, indent=2))
    return 0
