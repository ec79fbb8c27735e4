"""``auralm embed``: cache audio-encoder outputs for a manifest in sharded safetensors files.

Layout of a cache folder ``DIR`` (one encoder, one revision per folder)::

    DIR/cache.json                 identity: encoder, revision, pad_to_30s, dtype (+ dim, frame_rate)
    DIR/config.yaml                the resolved EmbedConfig of the latest run
    DIR/shards/00000.safetensors   one (T, D) tensor per key; the header metadata holds each key's row
    DIR/index.json                 shard -> keys, rewritten atomically after every shard

A folder built with another encoder, revision, padding mode or storage dtype is **refused** with an
error (use another ``--out``): keys of different encoders never mix. The key of a row is
``sha256(f"{encoder}@{revision}:{audio_hash}:{start}:{end}")`` where ``audio_hash`` is the sha256 of
the audio file and ``start``/``end`` are the row's span in seconds (``%.6f``, empty for a whole file),
so chunks of one file are cached separately and renamed or moved files are still found.

Shards are written atomically and the index is derived from them (shards it does not list are read
from their headers), so a killed run loses at most the shard in progress. A rerun encodes only the
missing keys; because the work list is sorted the same way each time (by length, then key) and a
shard always holds whole batches, a resumed run with the same ``batch_size`` batches exactly as an
uninterrupted one and stores bitwise identical tensors. One run writes a folder at a time (``DIR/.lock``).

Several processes (``torchrun --nproc_per_node N -m auralm embed ...``, or ``rank``/``world``/``barrier`` in
Python) share one run: process 0 takes the lock and writes the identity, every process reads the same work
list (between two barriers, before anyone writes), process ``r`` encodes the batches ``r, r + N, ...`` of it
(the same batches a single process would form, so the tensors are bitwise those of a one-process cache) into
its own shard numbers (``base + r + k N``), and merges its shards into ``index.json`` under a file lock
(``DIR/.index.lock``); process 0 releases ``DIR/.lock`` after the last barrier.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auralm.core.config import Config, apply_overrides, help_field, save_config
from auralm.core.errors import AudioError, AuralmError, ConfigError
from auralm.core.io import atomic_write_json
from auralm.core.progress import progress
from auralm.data.audio import audio_info, file_hash, load_audio
from auralm.data.cache_store import (  # noqa: F401  (EmbeddingCache and cache_key are re-exported: defined here before)
    EmbeddingCache,
    WriterLock,
    cache_key,
    check_identity,
    read_meta,
    write_shard,
)
from auralm.data.manifest import Row, read_manifest

DTYPES = ("float32", "float16", "bfloat16")
FORMAT = 1


@dataclasses.dataclass
class EmbedConfig(Config):
    """Settings of ``auralm embed``."""

    encoder: str = help_field("whisper-tiny.en", "audio encoder name (see auralm.components.encoders.ENCODERS)")
    batch_size: int = help_field(8, "clips per encoder forward")
    shard_size: int = help_field(256, "clips per shard file (rounded up to whole batches)")
    pad_to_30s: bool = help_field(False, "Whisper only: encode 30 s of padding like stock Whisper (slower)")
    dtype: str = help_field("float32", f"storage dtype of the cached states: {', '.join(DTYPES)}")
    device: str = help_field("auto", "torch device for the encoder: auto, cpu, cuda, cuda:1 ...")

    def validate(self) -> None:
        if self.batch_size <= 0 or self.shard_size <= 0:
            raise ConfigError(f"batch_size and shard_size must be positive, got {self.batch_size}, {self.shard_size}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclasses.dataclass
class EmbedReport:
    """What one :func:`embed_manifest` run did, and how fast."""

    out_dir: str
    rows: int = 0
    unique: int = 0
    encoded: int = 0
    skipped: int = 0
    no_audio: int = 0
    shards_written: int = 0
    audio_seconds: float = 0.0
    processing_seconds: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Processing seconds per second of audio (lower is faster; 0 when nothing was encoded)."""
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def audio_seconds_per_second(self) -> float:
        return self.audio_seconds / self.processing_seconds if self.processing_seconds else 0.0

    def summary(self) -> str:
        text = (
            f"encoded {self.encoded} clip(s), skipped {self.skipped} already cached"
            + (f", {self.no_audio} row(s) without audio" if self.no_audio else "")
            + f" ({self.rows} rows, {self.unique} unique keys) -> {self.out_dir}"
        )
        if self.encoded:
            text += (
                f"\n{self.audio_seconds:.1f} s of audio in {self.processing_seconds:.1f} s: real-time factor "
                f"{self.real_time_factor:.4f}, {self.audio_seconds_per_second:.1f} audio s/s"
            )
        return text


@dataclasses.dataclass
class _Clip:
    key: str
    row: Row
    path: Path
    samples: int


def embed_manifest(
    manifest: str | Path | Sequence[Row],
    encoder: Any,
    out_dir: str | Path,
    batch_size: int = 8,
    shard_size: int = 256,
    dtype: str = "float32",
    on_batch: Callable[[int], None] | None = None,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] | None = None,
) -> EmbedReport:
    """Encode every audio row of ``manifest`` not yet in ``out_dir`` with ``encoder`` (an AudioEncoder).

    Every row is checked (file present and decodable, span inside the file, not too long for the
    encoder) before anything is written. ``on_batch(i)`` is called after each batch (tests use it to
    interrupt a run). With ``world`` > 1 this is process ``rank`` of a run that shares the work (see the
    module docstring); ``barrier()`` must block until every process has called it. Returns an
    :class:`EmbedReport` of this process's part.
    """
    import torch

    cfg = EmbedConfig(
        encoder=encoder.name, batch_size=batch_size, shard_size=shard_size, dtype=dtype,
        pad_to_30s=bool(getattr(encoder, "pad_to_30s", False)),
        device=str(encoder.device),
    )
    root = Path(out_dir)
    identity = {"encoder": encoder.name, "revision": encoder.revision, "pad_to_30s": cfg.pad_to_30s, "dtype": dtype}
    check_identity(root, identity)
    rows = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    report = EmbedReport(out_dir=str(root), rows=len(rows))
    clips = _plan(rows, encoder.name, encoder.revision, encoder.sample_rate, encoder.max_samples, report)
    meta = {"format": FORMAT, **identity, "dim": encoder.dim, "frame_rate": encoder.frame_rate,
            "sample_rate": encoder.sample_rate}
    if not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is not one of the {world} process(es)")
    barrier = barrier or (lambda: None)
    with WriterLock(root) if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            if read_meta(root) is None:
                atomic_write_json(root / "cache.json", meta)
            save_config(cfg, root)
        barrier()  # process 0 holds the lock and the identity is on disk
        cache = EmbeddingCache(root, encoder.name, encoder.revision)
        todo = sorted({c.key: c for c in clips if c.key not in cache}.values(), key=lambda c: (c.samples, c.key))
        report.unique = len({c.key for c in clips})
        report.skipped = report.unique - len(todo)
        index = cache.shards()
        number = max((int(name.split(".")[0]) for name in index), default=-1) + 1 + rank
        barrier()  # every process has read the same state before any writes
        pending: dict[str, Any] = {}
        pending_rows: dict[str, dict[str, Any]] = {}
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)][rank::world]
        storage = getattr(torch, dtype)
        start_time = time.perf_counter()
        desc = f"embed {encoder.name}" + (f" [{rank + 1}/{world}]" if world > 1 else "")
        for b, batch in enumerate(progress(batches, desc=desc, total=len(batches), unit="batch")):
            wavs = [load_audio(c.path, encoder.sample_rate, c.row.start, c.row.end)[0] for c in batch]
            states, lengths = encoder(wavs)
            for c, wav, state, n in zip(batch, wavs, states, lengths.tolist()):
                pending[c.key] = state[:n].to("cpu", storage).clone().contiguous()
                pending_rows[c.key] = {"id": c.row.id, "audio": c.row.audio, "start": c.row.start, "end": c.row.end,
                                       "samples": len(wav), "frames": n}
                report.audio_seconds += len(wav) / encoder.sample_rate
            report.encoded += len(batch)
            if len(pending) >= shard_size or b == len(batches) - 1:
                write_shard(root, f"{number:05d}.safetensors", pending, pending_rows, index)
                number += world
                report.shards_written += 1
                pending, pending_rows = {}, {}
            report.processing_seconds = time.perf_counter() - start_time
            if on_batch is not None:
                on_batch(b)
        barrier()  # every process has written its shards before process 0 releases the lock
    return report


def embed_images(
    paths: Sequence[str | Path],
    encoder: Any,
    out_dir: str | Path,
    batch_size: int = 16,
    shard_size: int = 512,
    dtype: str = "float32",
) -> EmbedReport:
    """Encode every image file of ``paths`` not yet in ``out_dir`` with ``encoder`` (an ImageEncoder).

    The same cache as audio: shards, index, identity check and lock; an image's key is
    ``cache_key(encoder, revision, file_hash(image), None, None)`` (:meth:`EmbeddingCache.file_key`), its
    states ``(N, D)``. Every file is hashed before any work (a missing one raises naming it); a killed run
    loses at most the shard in progress.
    """
    import torch

    root = Path(out_dir)
    identity = {"encoder": encoder.name, "revision": encoder.revision, "pad_to_30s": False, "dtype": dtype}
    check_identity(root, identity)
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise AuralmError(f"{len(missing)} image file(s) do not exist, nothing was encoded: {', '.join(missing[:5])}")
    keyed = {cache_key(encoder.name, encoder.revision, file_hash(Path(p).resolve()), None, None): Path(p) for p in paths}
    report = EmbedReport(out_dir=str(root), rows=len(paths), unique=len(keyed))
    meta = {"format": FORMAT, **identity, "dim": encoder.dim, "tokens": encoder.num_tokens, "kind": "image"}
    with WriterLock(root):
        if read_meta(root) is None:
            atomic_write_json(root / "cache.json", meta)
        cache = EmbeddingCache(root, encoder.name, encoder.revision)
        todo = sorted(k for k in keyed if k not in cache)
        report.skipped = report.unique - len(todo)
        index = cache.shards()
        number = max((int(name.split(".")[0]) for name in index), default=-1) + 1
        pending: dict[str, Any] = {}
        rows: dict[str, dict[str, Any]] = {}
        storage = getattr(torch, dtype)
        start_time = time.perf_counter()
        batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
        for b, batch in enumerate(progress(batches, desc=f"embed {encoder.name}", total=len(batches), unit="batch")):
            with torch.no_grad():
                states, _ = encoder([keyed[k] for k in batch])
            for k, state in zip(batch, states):
                pending[k] = state.to("cpu", storage).clone().contiguous()
                rows[k] = {"image": str(keyed[k]), "frames": int(state.shape[0])}
            report.encoded += len(batch)
            if len(pending) >= shard_size or b == len(batches) - 1:
                write_shard(root, f"{number:05d}.safetensors", pending, rows, index)
                number += 1
                report.shards_written += 1
                pending, rows = {}, {}
            report.processing_seconds = time.perf_counter() - start_time
    return report


def _plan(
    rows: list[Row], name: str, revision: str, rate: int, limit: int | None, report: EmbedReport | None
) -> list[_Clip]:
    """Check every row and key it; raise one error naming every bad row before any work.

    With ``name=""`` only the checks run (no hashing): the CLI does that before loading weights.
    """
    clips, bad, hashes = [], [], {}
    for row in rows:
        if row.audio is None:
            if report is not None:
                report.no_audio += 1
            continue
        path = row.audio_path().resolve()
        try:
            info = audio_info(path)
        except AuralmError as exc:
            bad.append(f"row {row.id!r}: {exc}")
            continue
        start, end = row.start or 0.0, info.duration if row.end is None else row.end
        if end > info.duration + 0.01:
            bad.append(f"row {row.id!r}: span ends at {end:g} s but {path.name} lasts {info.duration:.3f} s")
            continue
        samples = round((end - start) * rate)
        if limit is not None and samples > limit:
            bad.append(f"row {row.id!r}: {samples / rate:.1f} s is longer than the "
                       f"{limit / rate:g} s {name} accepts (cut it with `auralm chunk`)")
            continue
        if name and path not in hashes:
            hashes[path] = file_hash(path)
        key = cache_key(name, revision, hashes[path], row.start, row.end) if name else ""
        clips.append(_Clip(key, row, path, samples))
    if bad:
        shown = bad[:50] + ([f"... and {len(bad) - 50} more"] if len(bad) > 50 else [])
        raise AudioError(f"{len(bad)} bad row(s), nothing was encoded:\n  " + "\n  ".join(shown))
    return clips


def cli(argv: list[str]) -> int:
    """``auralm embed --manifest M --encoder NAME --out DIR [key=value ...]``."""
    parser = argparse.ArgumentParser(prog="auralm embed", description="Cache audio-encoder outputs for a manifest.")
    parser.add_argument("--manifest", required=True, help="JSONL manifest whose audio rows are encoded")
    parser.add_argument("--out", required=True, help="cache folder (one encoder and revision per folder)")
    parser.add_argument("--encoder", help="encoder name (default whisper-tiny.en)")
    parser.add_argument("--batch-size", type=int, help="clips per forward (default 8)")
    parser.add_argument("--shard-size", type=int, help="clips per shard file (default 256)")
    parser.add_argument("--pad-to-30s", action="store_true", default=None, help="Whisper: encode 30 s windows")
    parser.add_argument("--dtype", choices=DTYPES, help="storage dtype (default float32)")
    parser.add_argument("--device", help="auto, cpu, cuda ... (default auto)")
    parser.add_argument("overrides", nargs="*", help="config overrides such as batch_size=16")
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k in EmbedConfig.field_names() and v is not None}
    cfg = apply_overrides(EmbedConfig.from_dict(given), args.overrides)
    import torch

    from auralm.components.encoders import build_audio_encoder

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = cfg.device
    if device == "auto":
        device = ("cuda" if world == 1 else f"cuda:{os.environ.get('LOCAL_RANK', '0')}") if torch.cuda.is_available() else "cpu"
    _check_early(Path(args.out), cfg)
    _plan(read_manifest(args.manifest), "", "", 16000, None, None)  # bad rows fail before weights load
    barrier = None
    if world > 1:  # `torchrun --nproc_per_node N -m auralm embed ...`: share the manifest, one cache
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        barrier = dist.barrier
    try:
        encoder = build_audio_encoder(cfg.encoder, pad_to_30s=cfg.pad_to_30s, device=device)
        report = embed_manifest(args.manifest, encoder, args.out, cfg.batch_size, cfg.shard_size, cfg.dtype,
                                rank=rank, world=world, barrier=barrier)
    finally:
        if world > 1:
            dist.destroy_process_group()
    print((f"[process {rank + 1} of {world}] " if world > 1 else "") + report.summary())
    return 0


def _check_early(root: Path, cfg: EmbedConfig) -> None:
    """Refuse a folder of another encoder or mode before loading any weights (revision is checked later)."""
    from auralm.components.encoders import resolve_name

    meta = read_meta(root)
    name = resolve_name(cfg.encoder)[0]
    if meta is not None:
        theirs = (meta.get("encoder"), meta.get("pad_to_30s"), meta.get("dtype"))
        if theirs != (name, cfg.pad_to_30s, cfg.dtype):
            check_identity(root, {"encoder": name, "revision": meta.get("revision"),
                                   "pad_to_30s": cfg.pad_to_30s, "dtype": cfg.dtype})
