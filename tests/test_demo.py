"""`auralm demo` end to end on the tiny preset: every step runs and writes what it promises."""

from __future__ import annotations

import json
import shutil

import pytest

from auralm.__main__ import main

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") or shutil.which("flite")), reason="needs espeak-ng or flite"
)


def test_tiny_demo_writes_metrics_config_and_cache(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny-demo", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "config.yaml").read_text().startswith("out: ")
    assert metrics["corpus"]["clips"] == 16 and metrics["corpus"]["test_sentences_also_in_train"] == 0
    assert metrics["prepare"] == {"pairs": 16, "problems": 0}
    assert metrics["chunk"]["text_exact"] is True
    assert metrics["chunk"]["longest_chunk_seconds"] <= 6.0
    embed = metrics["embed"]
    assert embed["encoded"] == 16 and embed["second_run_encoded"] == 0 and embed["second_run_skipped"] == 16
    assert 0 < embed["real_time_factor"] < 1
    baseline = metrics["whisper_baseline"]
    assert set(baseline["hypotheses"]) == {k for k in baseline["hypotheses"]} and baseline["clips"]["n"] >= 1
    # Whisper tiny.en reads clean synthetic speech well; a broken conversion or pipeline would not
    assert baseline["clips"]["wer"] < 0.5 and baseline["long_chunks"]["wer"] < 0.5
    assert list((out / "embeddings" / "shards").glob("*.safetensors"))
