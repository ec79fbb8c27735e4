"""The store behind ``auralm embed``: a folder of sharded safetensors files keyed by clip, read by
:class:`EmbeddingCache` and written by :mod:`auralm.data.embed_cache` (its docstring has the layout and the keys).

Writes are atomic (a shard, then ``index.json`` merged under ``DIR/.index.lock``); one writer run at a time holds
``DIR/.lock`` (:class:`WriterLock`); :func:`check_identity` refuses a folder of another encoder or mode.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from auralm.core.errors import AudioError, AuralmError
from auralm.core.io import atomic_path, atomic_write_json
from auralm.data.audio import file_hash
from auralm.data.manifest import Row

__all__ = [
    "EmbeddingCache",
    "WriterLock",
    "cache_key",
    "check_identity",
    "read_json",
    "read_meta",
    "write_shard",
]


def cache_key(encoder: str, revision: str, audio_hash: str, start: float | None, end: float | None) -> str:
    """The cache key of one clip (see the module docstring)."""
    span = ":".join("" if x is None else f"{float(x):.6f}" for x in (start, end))
    return hashlib.sha256(f"{encoder}@{revision}:{audio_hash}:{span}".encode()).hexdigest()


class EmbeddingCache:
    """Read access to a cache folder built by :func:`embed_manifest` for ``encoder_name@revision``."""

    def __init__(self, root: str | Path, encoder_name: str, revision: str):
        self.root = Path(root)
        meta = read_meta(self.root)
        if meta is None:
            raise AuralmError(
                f"{self.root} is not an embedding cache (no cache.json); build one with `auralm embed`"
            )
        if (meta.get("encoder"), meta.get("revision")) != (encoder_name, revision):
            raise AuralmError(
                f"{self.root} holds embeddings of {meta.get('encoder')}@{meta.get('revision')}, "
                f"not {encoder_name}@{revision}"
            )
        self.meta = meta
        self.encoder_name, self.revision = encoder_name, revision
        self._where: dict[str, str] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._handles: dict[str, Any] = {}
        self._hashes: dict[Path, str] = {}
        self.refresh()

    def refresh(self) -> None:
        """Rescan the shards (the index first, then the headers of shards it does not list)."""
        from safetensors import safe_open

        listed = read_json(self.root / "index.json") or {}
        self._where.clear()
        for shard in sorted((self.root / "shards").glob("*.safetensors")):
            keys = listed.get(shard.name)
            if keys is None:
                with safe_open(str(shard), framework="pt") as fh:
                    keys = list(json.loads((fh.metadata() or {}).get("auralm_rows", "{}")))
            self._where.update(dict.fromkeys(keys, shard.name))

    def shards(self) -> dict[str, list[str]]:
        """Shard file name -> keys in it."""
        out: dict[str, list[str]] = {}
        for key, shard in self._where.items():
            out.setdefault(shard, []).append(key)
        return out

    def key(self, audio_hash: str, start: float | None = None, end: float | None = None) -> str:
        return cache_key(self.encoder_name, self.revision, audio_hash, start, end)

    def file_key(self, path: str | Path) -> str:
        """The key of a whole image or audio file (hashed once per path)."""
        path = Path(path).resolve()
        if path not in self._hashes:
            self._hashes[path] = file_hash(path)
        return self.key(self._hashes[path])

    def row_key(self, row: Row) -> str:
        path = row.audio_path().resolve()
        if path not in self._hashes:
            if not path.is_file():
                raise AudioError(f"row {row.id!r}: audio file {path} does not exist")
            self._hashes[path] = file_hash(path)
        return self.key(self._hashes[path], row.start, row.end)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[str]:
        return list(self._where)

    def lookup(self, key: str) -> Any:
        """The cached ``(T, D)`` tensor of ``key``, or None."""
        shard = self._where.get(key)
        if shard is None:
            return None
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(self.root / "shards" / shard), framework="pt")
        return self._handles[shard].get_tensor(key)

    def info(self, key: str) -> dict[str, Any] | None:
        """The row facts stored with ``key`` (id, audio, start, end, samples, frames), or None."""
        if key not in self._where:
            return None
        if key not in self._rows:
            self.lookup(key)
            self._rows.update(json.loads(self._handles[self._where[key]].metadata()["auralm_rows"]))
        return self._rows[key]

    def get(self, row: Row) -> Any:
        """The cached states of a manifest row (hashes its audio file), or None."""
        return self.lookup(self.row_key(row))


def write_shard(root: Path, name: str, tensors: dict, rows: dict, index: dict[str, list[str]]) -> None:
    """Write one shard atomically, then merge it into the index (under a file lock: processes share it)."""
    import fcntl

    from safetensors.torch import save_file

    with atomic_path(root / "shards" / name) as tmp:
        save_file(tensors, str(tmp), metadata={"auralm_rows": json.dumps(rows)})
    index[name] = list(tensors)
    with open(root / ".index.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
        merged = read_json(root / "index.json") or {}
        merged.update(index)
        atomic_write_json(root / "index.json", merged)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_meta(root: Path) -> dict[str, Any] | None:
    return read_json(root / "cache.json") if (root / "cache.json").is_file() else None


def check_identity(root: Path, identity: dict[str, Any]) -> None:
    """Refuse a folder built with another encoder, revision, padding mode or storage dtype."""
    meta = read_meta(root)
    if meta is None:
        if (root / "shards").exists():
            raise AuralmError(
                f"{root} has shards but no cache.json; it is not a cache this version can extend"
            )
        return
    theirs = {k: meta.get(k) for k in identity}
    if theirs != identity:
        diff = ", ".join(
            f"{k}={theirs[k]!r} (this run: {identity[k]!r})" for k in identity if theirs[k] != identity[k]
        )
        raise AuralmError(
            f"{root} was built with {meta.get('encoder')}@{meta.get('revision')}: {diff}; "
            "caches are kept one encoder per folder, so pass another --out"
        )


class WriterLock:
    """``DIR/.lock`` holding the writer's pid; a lock left by a dead process is taken over."""

    def __init__(self, root: Path):
        self.path = root / ".lock"

    def __enter__(self) -> WriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = read_json(self.path)
                if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
                    raise AuralmError(
                        f"another `auralm embed` (pid {pid}) is writing {self.path.parent}"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return self
        raise AuralmError(f"cannot take the lock {self.path}")

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
