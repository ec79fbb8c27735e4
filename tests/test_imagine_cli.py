"""S4 through the real entry point: `auralm imagine demo --preset imagine-tiny` writes a loadable bundle, metrics
and a report; generate, eval, train-aligner (resume) and bad input through the CLI; the shipped presets validate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

import auralm
from auralm.__main__ import main
from auralm.core.config import load_preset
from auralm.recipes.imagine.demo import DemoConfig

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_shipped_presets_validate():
    for name in ("imagine-demo", "imagine-tiny"):
        cfg = DemoConfig.from_dict(load_preset(name))
        assert cfg.aligner.recipe == cfg.diffusion.recipe == cfg.judge.recipe == "imagine"
        assert cfg.aligner.text_max_length == cfg.diffusion.text_max_length
        assert cfg.diffusion.model.image_size == cfg.corpus.image_size


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("imagine") / "demo"
    assert main(["imagine", "demo", "--preset", "imagine-tiny", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_writes_a_loadable_bundle_metrics_and_a_report(demo):
    m = json.loads((demo / "metrics.json").read_text())
    for key in ("judged_text", "judged_audio", "judged_other_audio", "judge_ceiling", "retrieval", "audio_over_text"):
        assert key in m
    assert set(m["judged_audio"]) >= {"colour", "shape", "count", "mean", "all"}
    assert m["retrieval"]["n"] == 8 and 0 <= m["retrieval"]["a2t_r@1"] <= 1
    assert m["training"]["aligner"]["steps_done"] == 6 and m["training"]["diffusion"]["stopped_by"] == "max_steps"
    report = (demo / "report.md").read_text()
    assert "from the spoken caption" in report and "grid.png" in report and (demo / "grid.png").is_file()
    pipe = auralm.load(demo / "checkpoint")
    assert type(pipe).__name__ == "ImaginePipeline" and pipe.judge is not None
    assert pipe.generate(text="A red circle.", steps=2)[0].size == (32, 32)


@pytest.mark.slow
def test_generate_eval_and_bad_input_through_the_cli(demo, tmp_path, capsys):
    wav = sorted((demo / "corpus" / "speech" / "wavs").glob("*.wav"))[0]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        assert main(["imagine", "generate", "--checkpoint", str(demo / "checkpoint"), "--audio", str(wav),
                     "--out", str(out), "--seed", "7", "--steps", "2"]) == 0  # fmt: skip
    assert a.read_bytes() == b.read_bytes()  # same seed, same picture
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    capsys.readouterr()
    assert main(["imagine", "generate", "--checkpoint", str(demo / "checkpoint"), "--audio", str(silent),
                 "--out", str(tmp_path / "c.png")]) == 2  # fmt: skip
    assert "silent" in capsys.readouterr().err and not (tmp_path / "c.png").exists()
    assert main(["imagine", "generate", "--checkpoint", str(demo / "checkpoint"), "--text", "a red circle",
                 "--out", str(tmp_path / "x.jpg")]) == 2  # fmt: skip
    out = tmp_path / "m.json"
    assert main(["imagine", "eval", "--checkpoint", str(demo / "aligner"), "--corpus", str(demo / "corpus"),
                 "--n-retrieval", "8", "--out", str(out)]) == 0  # fmt: skip
    m = json.loads(out.read_text())
    assert set(m) == {"retrieval"} and m["retrieval"]["n"] == 8  # an aligner alone: retrieval only
    # more scenes judged than ranked: each count is its own
    assert main(["imagine", "eval", "--checkpoint", str(demo / "checkpoint"), "--corpus", str(demo / "corpus"),
                 "--n-retrieval", "2", "--n-judge", "3", "--steps", "2", "--out", str(out)]) == 0  # fmt: skip
    m = json.loads(out.read_text())
    assert m["retrieval"]["n"] == 2 and m["n_judged"] == 3
    # --aligner swaps the bundle's aligner for another checkpoint: the bundle's own gives the same figures
    same = tmp_path / "same.json"
    assert main(["imagine", "eval", "--checkpoint", str(demo / "checkpoint"), "--corpus", str(demo / "corpus"),
                 "--aligner", str(demo / "aligner"), "--n-retrieval", "2", "--n-judge", "3", "--steps", "2",
                 "--out", str(same)]) == 0  # fmt: skip
    assert json.loads(same.read_text())["judged_audio"] == m["judged_audio"]
    # a finished run resumes to its end at once; another config in the same folder is refused
    run = demo / "aligner"
    assert main(["imagine", "train-aligner", "--corpus", str(demo / "corpus"), "--out", str(run), "--config",
                 str(run / "config.yaml")]) == 0  # fmt: skip
    assert main(["imagine", "train-aligner", "--corpus", str(demo / "corpus"), "--out", str(run), "--config",
                 str(run / "config.yaml"), "loss.queue_size=0"]) == 2  # fmt: skip
