"""`auralm demo` end to end on the tiny preset: every step runs and writes what it promises."""

from __future__ import annotations

import json
import shutil

import pytest

from auralm.__main__ import main

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") or shutil.which("flite")), reason="needs espeak-ng or flite"
)


def test_tiny_demo_writes_checkpoint_metrics_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "tiny-demo", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "config.yaml").read_text().startswith("out: ")
    assert metrics["corpus"]["clips"] == 16 and metrics["corpus"]["test_sentences_also_in_train"] == 0
    assert metrics["prepare"] == {"pairs": 16, "problems": 0}
    assert metrics["chunk"]["text_exact"] is True and metrics["chunk"]["longest_chunk_seconds"] <= 6.0
    # Whisper tiny.en reads clean synthetic speech well; a broken conversion or chunking would not
    assert metrics["chunk"]["whisper_wer"] < 0.5
    embed = metrics["embed"]
    assert embed["encoded"] == 16 and embed["second_run_encoded"] == 0 and embed["second_run_skipped"] == 16
    assert 0 < embed["real_time_factor"] < 1
    ev = metrics["eval"]
    assert ev["n"] >= 2 and set(ev["hypotheses"]) and ev["wer_shuffled_audio"] is not None
    assert ev["whisper_wer"] is not None and ev["whisper_wer"] < 0.5
    assert metrics["ctc_wer"] is not None
    # the checkpoint is a stage-2 checkpoint that `auralm hear generate` and `auralm hear eval` can load
    assert (out / "checkpoint" / "trainable.safetensors").is_file()
    assert json.loads((out / "checkpoint" / "frozen_parts.json").read_text())["encoder"]["name"] == "whisper-tiny.en"
    # the checkpoint ships the decoding settings the report scored, and auralm.load() uses them
    import auralm

    saved = json.loads((out / "checkpoint" / "generation_config.json").read_text())
    assert saved == ev["generation"] and saved["copy_bias"] == 0.0 and saved["max_new_per_audio"] == 2.0
    assert saved["rescore_beam"] == 4 and ev["lm_wer"] is not None  # rescored, with the LM's own transcript beside
    # the phone head's lexicon travels with the checkpoint: its N-best are the ones rescored
    assert saved["rescore_head"] == "phones" and (out / "checkpoint" / "lexicon.json").is_file()
    pipe = auralm.load(out / "checkpoint")
    assert pipe.generation_saved and pipe.generation.to_dict() == saved
    report = (out / "report.md").read_text()
    assert report.startswith("# auralm demo report")
    assert "| this model (the LM rescoring the phone head's 4 best) |" in report
    assert f"| the LM writing the transcript itself (greedy) | {ev['lm_wer']:.3f} |" in report
    # a run is defined by its steps: each stage records why it stopped, and the report says it
    for name, st in metrics["stages"].items():
        assert (st["stopped_by"], st["steps_done"]) == ("max_steps", st["steps_planned"]), (name, st)
        assert f"- {name} (`{st['preset']}`): {st['steps_done']} of {st['steps_planned']} steps, stopped by max_steps" in report
    assert (out / "loss_curves.png").stat().st_size > 1000
    capsys.readouterr()
    wav = next((out / "corpus" / "wavs").glob("*.wav"))
    assert main(["hear", "generate", "--checkpoint", str(out / "checkpoint"), "--audio", str(wav)]) == 0


def test_a_stage_cut_by_its_time_guard_is_said_loudly_in_the_report():
    from auralm.recipes.hear.demo import _stage_line

    st = {"preset": "hear-demo-stage2", "done_at_minute": 20.1, "stopped_by": "max_minutes", "steps_done": 146,
          "steps_planned": 160}
    line = _stage_line("stage2", st)
    assert "146 of 160 steps, stopped by max_minutes" in line and "WARNING" in line
    assert "WARNING" not in _stage_line("stage2", {**st, "stopped_by": "max_steps", "steps_done": 160})
