"""`auralm hear generate` and `auralm hear eval` on a checkpoint of the tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from auralm.__main__ import main
from auralm.recipes.hear.evaluate import derangement
from test_collate import make_corpus

EVAL_KEYS = {"wer", "cer", "n", "wer_shuffled_audio", "cer_shuffled_audio", "whisper_wer", "hypotheses"}


@pytest.fixture(scope="module", params=["hear-tiny", "hear-tiny-cross"])
def trained(request, tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, manifest) of a 2-step tiny run."""
    root = tmp_path_factory.mktemp(request.param)
    manifest = make_corpus(root / "corpus")
    out = root / "run"
    assert main(["hear", "train", "--preset", request.param, "--out", str(out), f"data.manifest={manifest}",
                 "optim.max_steps=2", "data.valid_split=", "logger=none"]) == 0
    return out, manifest


def test_generate_prints_only_the_text(trained, capsys):
    from auralm.components.generation import GenerationConfig
    from auralm.recipes.hear.pipeline import load_checkpoint, transcribe

    out, manifest = trained
    clip = manifest.parent / "clip0.wav"
    capsys.readouterr()
    assert main(["hear", "generate", "--checkpoint", str(out), "--audio", str(clip), "--max-new-tokens", "6"]) == 0
    stdout = capsys.readouterr().out
    expected = transcribe(load_checkpoint(out), [clip], gen=GenerationConfig(max_new_tokens=6))
    assert stdout == expected[0] + "\n"  # nothing but the text
    assert main(["hear", "generate", "--checkpoint", str(out), "--audio", str(clip), "--audio", str(clip),
                 "--strategy", "sample", "--top-k", "5", "--temperature", "0.7", "--max-new-tokens", "4"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["hear", "generate", "--checkpoint", str(out), "--audio", str(clip), "--strategy", "beam",
                 "--num-beams", "2", "--max-new-tokens", "4"]) == 0


def test_the_checkpoints_decoding_settings_are_the_default_and_flags_override_them(trained, tmp_path, capsys):
    import shutil

    import auralm
    from auralm.components.generation import GenerationConfig
    from auralm.recipes.hear.pipeline import load_checkpoint, save_generation_config, transcribe
    from auralm.training.checkpoint import resolve_checkpoint

    out, manifest = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(out), ckpt)
    clip = manifest.parent / "clip0.wav"
    model = load_checkpoint(ckpt)
    two, six = (transcribe(model, [clip], gen=GenerationConfig(max_new_tokens=n))[0] for n in (2, 6))
    assert two != six  # the setting is visible in the output
    save_generation_config(ckpt, GenerationConfig(max_new_tokens=2))
    assert auralm.load(ckpt).transcribe(str(clip)) == two
    capsys.readouterr()
    assert main(["hear", "generate", "--checkpoint", str(ckpt), "--audio", str(clip)]) == 0
    assert capsys.readouterr().out == two + "\n"
    assert main(["hear", "generate", "--checkpoint", str(ckpt), "--audio", str(clip), "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out == six + "\n"
    res = tmp_path / "e.json"
    assert main(["hear", "eval", "--checkpoint", str(ckpt), "--manifest", str(manifest), "--split", "all",
                 "--limit", "2", "--no-whisper", "--out", str(res)]) == 0
    assert json.loads(res.read_text())["generation"]["max_new_tokens"] == 2
    (ckpt / "generation_config.json").write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        auralm.load(ckpt)


def test_long_audio_is_chunked(trained, tmp_path):
    from auralm.components.generation import GenerationConfig
    from auralm.recipes.hear.pipeline import load_checkpoint, transcribe

    out, _ = trained
    model = load_checkpoint(out)
    t = np.arange(16000 * 3) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)  # 1 s on/off
    gen = GenerationConfig(max_new_tokens=3)
    calls = []
    real = model.generate
    model.generate = lambda batch, g: calls.append(len(batch.get("wavs") or batch["lengths"])) or real(batch, g)
    texts = transcribe(model, [wav], gen=gen, chunk_seconds=1.2)
    assert len(texts) == 1 and sum(calls) >= 3  # 3 s in chunks of at most 1.2 s
    calls.clear()
    texts = transcribe(model, [wav], gen=gen, chunk_seconds=1.2, long_audio="context")
    assert len(texts) == 1 and calls == [1]  # all chunks as one audio context
    calls.clear()
    transcribe(model, [wav], gen=gen, chunk_seconds=1.2, long_audio="context", context_tokens=2)
    assert sum(calls) >= 3  # over the token budget: back to chunks


def test_generate_rejects_empty_audio(trained, tmp_path, capsys):
    out, _ = trained
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    assert main(["hear", "generate", "--checkpoint", str(out), "--audio", str(empty)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "error" in captured.err
    assert main(["hear", "generate", "--checkpoint", str(tmp_path), "--audio", str(empty)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_eval_writes_the_promised_json(trained, tmp_path, capsys):
    out, manifest = trained
    result_path = tmp_path / "eval.json"
    assert main(["hear", "eval", "--checkpoint", str(out), "--manifest", str(manifest), "--out", str(result_path),
                 "--max-new-tokens", "4"]) == 0
    result = json.loads(result_path.read_text())
    assert EVAL_KEYS <= set(result)
    assert result["n"] == 2 and set(result["hypotheses"]) == {"u8", "u9"}
    assert result["whisper_wer"] is None  # conv-tiny is not a Whisper encoder
    assert result["wer"] is not None and result["wer_shuffled_audio"] is not None
    assert main(["hear", "eval", "--checkpoint", str(out), "--manifest", str(manifest), "--split", "all", "--limit", "3",
                 "--out", str(tmp_path / "all.json"), "--max-new-tokens", "2"]) == 0
    assert json.loads((tmp_path / "all.json").read_text())["n"] == 3


def test_eval_bad_input(trained, tmp_path, capsys):
    out, manifest = trained
    assert main(["hear", "eval", "--checkpoint", str(out), "--manifest", str(manifest), "--split", "dev",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "no rows in split 'dev'" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_derangement_moves_every_row():
    for n in (2, 3, 10):
        perm = derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))
        assert perm == derangement(n, seed=n)


def test_scores_per_text_source_and_voice_group():
    from auralm.data.manifest import Row
    from auralm.recipes.hear.evaluate import group_scores, row_groups

    metas = [{"text_source": "fortunes", "held_out_voice": False}, {"text_source": "gcide-quotes", "held_out_voice": True},
             {"text_source": "fortunes", "held_out_voice": True}, {}]  # fmt: skip
    rows = [Row(id=str(i), text="a b", meta=m) for i, m in enumerate(metas)]
    groups = row_groups(rows)
    assert groups == {"held_out_voice=no": [0], "held_out_voice=yes": [1, 2], "text_source=fortunes": [0, 2],
                      "text_source=gcide-quotes": [1]}  # fmt: skip
    refs = ["red cat", "blue dog", "green fox", "pink"]  # (no number words: the normaliser turns them into digits)
    scores = group_scores(refs, groups, wer=["red cat", "blue", "green fox", "x"], other=None)
    assert scores["held_out_voice=yes"] == {"n": 2, "wer": 0.25, "other": None}
    assert scores["text_source=gcide-quotes"]["wer"] == 0.5 and scores["held_out_voice=no"]["wer"] == 0.0
