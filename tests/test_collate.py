"""Rows -> checked rows -> dataset items (cached states or waveforms) -> padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from auralm.core.errors import AudioError, ManifestError
from auralm.data.collate import AudioTextDataset, check_rows, collate, select_split
from auralm.data.manifest import read_manifest

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def make_corpus(root: Path, n_train: int = 6, n_valid: int = 2, n_test: int = 2, seconds: float = 0.5) -> Path:
    """Tone WAVs (one pitch per word) and a manifest with train/valid/test splits; returns the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    splits = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    for i, split in enumerate(splits):
        t = np.arange(int(16000 * (seconds + 0.05 * (i % 3)))) / 16000
        wav = 0.4 * np.sin(2 * np.pi * (220 + 60 * i) * t) * np.hanning(len(t))
        sf.write(str(root / f"clip{i}.wav"), wav.astype(np.float32), 16000, subtype="PCM_16")
        rows.append({"id": f"u{i}", "audio": f"clip{i}.wav", "text": f"{WORDS[i % len(WORDS)]} {i}", "split": split})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_check_rows_accepts_good_rows_and_drops_long_ones(tmp_path):
    rows = read_manifest(make_corpus(tmp_path))
    kept, dropped = check_rows(rows, max_seconds=10)
    assert len(kept) == len(rows) and dropped == 0
    kept, dropped = check_rows(rows, max_seconds=0.52)  # clips are 0.50, 0.55, 0.60 s
    assert dropped == len(rows) - len(kept) > 0 and all(r.id in {"u0", "u3", "u6", "u9"} for r in kept)


def test_check_rows_names_every_bad_row(tmp_path, make_audio):
    make_corpus(tmp_path)
    make_audio.header_only("empty.wav")
    rows = [{"id": "ok", "audio": "clip0.wav", "text": "a"}, {"id": "zero", "audio": "empty.wav", "text": "b"},
            {"id": "gone", "audio": "missing.wav", "text": "c"}, {"id": "mute", "audio": "clip1.wav"}]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AudioError) as err:
        check_rows(read_manifest(path))
    msg = str(err.value)
    assert "3 bad row(s)" in msg and "'zero'" in msg and "length zero" in msg
    assert "'gone'" in msg and "no such file" in msg and "'mute'" in msg and "no text" in msg


def test_select_split_errors_on_empty_split(tmp_path):
    rows = read_manifest(make_corpus(tmp_path))
    assert len(select_split(rows, "valid")) == 2
    assert len(select_split(rows, None)) == len(rows)
    with pytest.raises(ManifestError, match="no rows in split 'dev'.*splits present: test, train, valid"):
        select_split(rows, "dev")
    with pytest.raises(ManifestError, match="no rows"):
        check_rows([])


def test_collate_pads_states_and_lists_waveforms(tmp_path):
    rows = read_manifest(make_corpus(tmp_path))[:3]
    ds = AudioTextDataset(rows, prompt="", default_prompt="Say it.")
    items = [ds[i] for i in range(3)]
    assert not ds.uses_cache and items[0]["wav"].dtype == np.float32 and items[0]["prompt"] == "Say it."
    batch = collate(items)
    assert batch["ids"] == ["u0", "u1", "u2"] and batch["texts"][1] == "bravo 1" and len(batch["wavs"]) == 3
    states = [{"id": str(i), "prompt": "p", "text": "t", "states": torch.ones(n, 4)} for i, n in enumerate([3, 5])]
    batch = collate(states)
    assert batch["states"].shape == (2, 5, 4) and batch["lengths"].tolist() == [3, 5]
    assert batch["states"][0, 3:].abs().sum() == 0  # padding is zeros


def test_dataset_uses_a_cache_only_when_it_holds_every_row(tmp_path):
    from auralm.components.encoders import build_audio_encoder
    from auralm.data.embed_cache import EmbeddingCache, embed_manifest

    manifest = make_corpus(tmp_path)
    rows = read_manifest(manifest)
    enc = build_audio_encoder("conv-tiny")
    embed_manifest(rows[:4], enc, tmp_path / "cache", batch_size=2)
    cache = EmbeddingCache(tmp_path / "cache", enc.name, enc.revision)
    full = AudioTextDataset(rows[:4], cache, enc)
    assert full.uses_cache and full[0]["states"].shape[1] == enc.dim
    states, lengths = enc([_wav(full.rows[1])])
    assert torch.allclose(full[1]["states"], states[0, : int(lengths[0])], atol=1e-5)
    partial = AudioTextDataset(rows, cache, enc)
    assert not partial.uses_cache and partial.missing == len(rows) - 4 and "wav" in partial[0]


def _wav(row):
    from auralm.data.audio import load_audio

    return load_audio(row.audio_path(), 16000)[0]


def test_train_range_was_retired():
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.config import DataConfig

    with pytest.raises(ConfigError, match="train_range"):  # probe 9 of docs/s1-alignment.md (runs I and K)
        DataConfig.from_dict({"train_range": [0.0, 0.7]})
