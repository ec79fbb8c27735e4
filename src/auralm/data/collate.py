"""Examples for the audio LM: manifest rows -> items (cached states or waveforms) -> padded batches.

* :func:`check_rows` checks every row before any training (audio present, decodable, not empty, text
  present) and raises one error naming all bad rows; rows longer than ``max_seconds`` are dropped.
* :class:`AudioTextDataset` yields ``{"id", "states" (T, D) | "wav" (S,), "text", "prompt"}``:
  states from an :class:`~auralm.data.embed_cache.EmbeddingCache` when it holds every row, else the
  16 kHz waveform (the model's encoder then runs on the batch).
* :func:`collate` pads states into ``(B, T, D)`` + ``lengths (B,)``, or lists waveforms under ``"wavs"``:
  the batch layout ``AudioLM.forward`` takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from auralm.core.constants import SAMPLE_RATE
from auralm.core.errors import AudioError, AuralmError, ManifestError
from auralm.data.audio import audio_info, load_audio
from auralm.data.manifest import Row


def row_seconds(row: Row) -> float:
    """Seconds of audio a row covers (its span, else the file's duration from the header)."""
    if row.start is not None and row.end is not None:
        return float(row.end - row.start)
    info = audio_info(row.audio_path())
    return info.duration


def check_rows(rows: Sequence[Row], max_seconds: float | None = None, need_text: bool = True,
               what: str = "manifest") -> tuple[list[Row], int]:
    """Check every row; return ``(rows kept, rows dropped as longer than max_seconds)``.

    Raises :class:`AudioError` naming every row whose audio is missing, unreadable or of length zero
    (and, with ``need_text``, every row without text), before anything is trained or written.
    """
    if not rows:
        raise ManifestError(f"{what} has no rows")
    bad, kept, dropped = [], [], 0
    for row in rows:
        if not row.audio:
            bad.append(f"row {row.id!r}: no audio")
            continue
        if need_text and not (row.text or "").strip():
            bad.append(f"row {row.id!r}: no text (the answer to train on)")
            continue
        try:
            info = audio_info(row.audio_path())
        except AuralmError as exc:
            bad.append(f"row {row.id!r}: {exc}")
            continue
        seconds = float(row.end - row.start) if row.start is not None and row.end is not None else info.duration
        if info.frames == 0 or seconds <= 0:
            bad.append(f"row {row.id!r}: audio of length zero ({row.audio_path()})")
            continue
        if row.end is not None and row.end > info.duration + 0.01:
            bad.append(f"row {row.id!r}: span ends at {row.end:g} s but the file lasts {info.duration:.3f} s")
            continue
        if max_seconds is not None and seconds > max_seconds:
            dropped += 1
            continue
        kept.append(row)
    if bad:
        shown = bad[:30] + ([f"... and {len(bad) - 30} more"] if len(bad) > 30 else [])
        raise AudioError(f"{len(bad)} bad row(s) in {what}, nothing was trained:\n  " + "\n  ".join(shown))
    if not kept:
        raise ManifestError(f"{what}: all {dropped} row(s) are longer than max_seconds={max_seconds:g}")
    return kept, dropped


def select_split(rows: Sequence[Row], split: str | None, what: str = "manifest") -> list[Row]:
    """Rows of ``split`` (all rows when ``split`` is None or empty); error when none are left."""
    if not split:
        return list(rows)
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        present = sorted({str(r.split) for r in rows})
        raise ManifestError(f"{what} has no rows in split {split!r} (splits present: {', '.join(present)})")
    return chosen


class AudioTextDataset:
    """Map-style dataset of manifest rows; item ``i`` is a dict (see the module docstring).

    ``cache`` is used when it holds every row (checked once, here); otherwise items carry waveforms.
    ``prompt`` overrides the rows' own prompts; ``default_prompt`` fills rows without one.
    """

    def __init__(self, rows: Sequence[Row], cache: Any = None, encoder: Any = None, prompt: str = "",
                 default_prompt: str = "", sample_rate: int = SAMPLE_RATE):
        self.rows = list(rows)
        self.prompt, self.default_prompt = prompt, default_prompt
        self.sample_rate = int(getattr(encoder, "sample_rate", sample_rate))
        self.cache = None
        self.missing = 0
        if cache is not None:
            self.keys = [cache.row_key(r) for r in self.rows]
            self.missing = sum(k not in cache for k in self.keys)
            if self.missing == 0:
                self.cache = cache

    @property
    def uses_cache(self) -> bool:
        return self.cache is not None

    def __len__(self) -> int:
        return len(self.rows)

    def lengths(self) -> list[float]:
        """Seconds of audio per row (its span, else the manifest's ``duration``, else the file header)."""
        if not hasattr(self, "_lengths"):
            self._lengths = [float(r.duration) if r.duration is not None and (r.start is None or r.end is None)
                             else row_seconds(r) for r in self.rows]
        return self._lengths

    def prompt_of(self, row: Row) -> str:
        return self.prompt or row.prompt or self.default_prompt

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item: dict[str, Any] = {"id": row.id, "text": row.text, "prompt": self.prompt_of(row)}
        if self.cache is not None:
            item["states"] = self.cache.lookup(self.keys[i]).float()
        else:
            wav, _ = load_audio(row.audio_path(), self.sample_rate, row.start, row.end)
            if wav.size == 0:
                raise AudioError(f"row {row.id!r}: audio of length zero")
            item["wav"] = wav
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> one batch: ``ids``, ``prompts``, ``texts`` and either ``states``+``lengths`` or ``wavs``."""
    import torch

    if not items:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {
        "ids": [it["id"] for it in items],
        "prompts": [it["prompt"] for it in items],
        "texts": [it.get("text") for it in items],
    }
    if "states" in items[0]:
        lengths = torch.tensor([it["states"].shape[0] for it in items], dtype=torch.long)
        dim = items[0]["states"].shape[1]
        states = torch.zeros(len(items), int(lengths.max()), dim)  # B, T_max, D (zeros past each length)
        for b, it in enumerate(items):
            states[b, : it["states"].shape[0]] = it["states"]
        batch["states"], batch["lengths"] = states, lengths
    else:
        batch["wavs"] = [np.asarray(it["wav"], dtype=np.float32) for it in items]
    return batch
