"""One JSONL manifest schema for every recipe.

A manifest is a text file with one JSON object per line. Each row describes one example:

=============  ========  ================================================================
key            type      meaning
=============  ========  ================================================================
id             str       unique within the manifest (required)
audio          str       path relative to the manifest's folder, or absolute
text           str       transcript / caption / answer
start, end     float     seconds into ``audio`` (a chunk of a longer recording)
duration       float     seconds of audio this row covers
sample_rate    int       the file's sample rate (> 0)
split          str       ``train``, ``valid`` or ``test``
source         str       the recording this row comes from (splits are assigned by source)
prompt         str       the instruction given with the audio
image          str       path to an image (relative like ``audio``)
label          str       a class label
tags           list      free-form tags
meta           dict      anything else (e.g. ``{"text_split": "approximate"}``)
=============  ========  ================================================================

Reading validates every line and reports all bad lines by number in one error.
Writing is atomic. Paths stay as written in the file; :meth:`Row.audio_path` resolves them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from auralm.core.errors import ManifestError
from auralm.core.io import atomic_path

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Row:
    id: str
    audio: str | None = None
    text: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float | None = None
    sample_rate: int | None = None
    split: str | None = None
    source: str | None = None
    prompt: str | None = None
    image: str | None = None
    label: str | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    # the folder of the manifest this row came from; not written back
    root: Path | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # JSON null for the list/dict fields means "none", like leaving the key out
        if self.tags is None:
            self.tags = []
        if self.meta is None:
            self.meta = {}
        problems = validate_row(self)
        if problems:
            raise ManifestError("; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path | None = None) -> Row:
        if not isinstance(data, dict):
            raise ManifestError(f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ManifestError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(FIELDS)}")
        if "id" not in data:
            raise ManifestError("missing required key 'id'")
        return cls(**data, root=root)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is None or (name in ("tags", "meta") and not value):
                continue
            out[name] = value
        return out

    def audio_path(self) -> Path:
        """The audio file as a path: absolute as written, or relative to the manifest's folder."""
        if not self.audio:
            raise ManifestError(f"row {self.id!r} has no audio")
        path = Path(self.audio)
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return path

    def image_path(self) -> Path:
        if not self.image:
            raise ManifestError(f"row {self.id!r} has no image")
        path = Path(self.image)
        return path if path.is_absolute() or self.root is None else self.root / path


FIELDS = [f.name for f in dataclasses.fields(Row) if f.name != "root"]
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "audio": (str,),
    "text": (str,),
    "start": (int, float),
    "end": (int, float),
    "duration": (int, float),
    "sample_rate": (int,),
    "split": (str,),
    "source": (str,),
    "prompt": (str,),
    "image": (str,),
    "label": (str,),
    "tags": (list,),
    "meta": (dict,),
}


def validate_row(row: Row) -> list[str]:
    """Every problem with one row, as short phrases (empty when the row is valid)."""
    problems = []
    for name, types in _TYPES.items():
        value = getattr(row, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            problems.append(f"{name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
    if problems:
        return problems
    if not row.id:
        problems.append("'id' is empty")
    if row.audio is None and row.image is None and row.text is None:
        problems.append("a row needs at least one of 'audio', 'image' or 'text'")
    if row.audio is not None and not row.audio.strip():
        problems.append("'audio' is empty")
    if row.sample_rate is not None and row.sample_rate <= 0:
        problems.append(f"'sample_rate' must be positive, got {row.sample_rate}")
    for name in ("start", "end", "duration"):
        value = getattr(row, name)
        if value is not None and not math.isfinite(value):
            problems.append(f"{name!r} must be a finite number, got {value}")
        elif value is not None and value < 0:
            problems.append(f"{name!r} must be >= 0, got {value}")
    if row.start is not None and row.end is not None and row.end <= row.start:
        problems.append(f"'end' ({row.end}) must be after 'start' ({row.start})")
    if (row.start is None) != (row.end is None):
        problems.append("'start' and 'end' go together")
    if row.split is not None and row.split not in SPLITS:
        problems.append(f"'split' must be one of {', '.join(SPLITS)}, got {row.split!r}")
    if any(not isinstance(t, str) for t in row.tags):
        problems.append("'tags' must be a list of strings")
    return problems


def read_manifest(path: str | Path, *, allow_empty: bool = False) -> list[Row]:
    """Read and validate every line; raise one :class:`ManifestError` listing all bad lines by number."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    rows: list[Row] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    root = path.resolve().parent
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {number}: not valid JSON ({exc.msg})")
                continue
            try:
                row = Row.from_dict(data, root=root)
            except ManifestError as exc:
                errors.append(f"line {number}: {exc}")
                continue
            if row.id in seen:
                errors.append(f"line {number}: duplicate id {row.id!r} (first on line {seen[row.id]})")
                continue
            seen[row.id] = number
            rows.append(row)
    if errors:
        shown = errors[:50] + ([f"... and {len(errors) - 50} more"] if len(errors) > 50 else [])
        raise ManifestError(f"{path}: {len(errors)} bad line(s):\n  " + "\n  ".join(shown))
    if not rows and not allow_empty:
        raise ManifestError(f"manifest {path} has no rows")
    return rows


def write_manifest(path: str | Path, rows: Iterable[Row | dict[str, Any]]) -> int:
    """Write rows as JSONL atomically; returns the number of rows written. Ids must be unique."""
    path = Path(path)
    count = 0
    seen: set[str] = set()
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            if isinstance(row, dict):
                row = Row.from_dict(row)
            if row.id in seen:
                raise ManifestError(f"duplicate id {row.id!r} while writing {path}")
            seen.add(row.id)
            fh.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    return count


def relative_audio(audio: str | Path, manifest_dir: str | Path) -> str:
    """Store ``audio`` relative to the manifest's folder when it lies under it, else absolute."""
    audio, manifest_dir = Path(audio).resolve(), Path(manifest_dir).resolve()
    try:
        return audio.relative_to(manifest_dir).as_posix()
    except ValueError:
        return str(audio)


def hash_unit(*parts: object) -> float:
    """A uniform number in [0, 1) from a sha256 of ``parts`` joined by ``:``: stable across Python versions and runs."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_source(source: str, valid: float = 0.05, test: float = 0.05, seed: int = 0) -> str:
    """Deterministic split from a hash of the source, so chunks of one recording share a split."""
    if not 0 <= valid < 1 or not 0 <= test < 1 or valid + test >= 1:
        raise ManifestError(f"split fractions must be in [0, 1) and sum below 1, got valid={valid} test={test}")
    u = hash_unit(seed, source)
    if u < test:
        return "test"
    if u < test + valid:
        return "valid"
    return "train"
