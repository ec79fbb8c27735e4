"""Sound evaluation: judge's label mapping and accounting, mel error, codebook usage, Frechet distance, data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from auralm.core.errors import AudioError, ConfigError
from auralm.data.manifest import read_manifest
from auralm.metrics.audio import (
    codebook_usage,
    frechet_distance,
    frechet_from_embeddings,
    judge_accuracy,
    judged_correct,
    mel_error,
    normalize_transcript,
)
from auralm.recipes.sound.data import EVENTS, make_digit_corpus, make_sound_events, synth_event


def test_judge_maps_digits_and_number_words() -> None:
    assert judged_correct("7", "seven") and judged_correct("Seven.", "seven") and judged_correct(" seven!", "seven")
    assert judged_correct("Two.", "two") and judged_correct("to", "two") and judged_correct("For.", "four")
    assert not judged_correct("seven eight", "seven")  # more than the one digit
    assert not judged_correct("Heaven.", "seven") and not judged_correct("", "seven")
    assert normalize_transcript("78, ok") == ["seven", "eight", "ok"]
    assert judged_correct("a dog barking", "dog") and not judged_correct("a cat", "dog")


class _Fake:
    def __init__(self, texts: list[str]) -> None:
        self.texts, self.lengths = texts, []

    def transcribe(self, wavs: list[np.ndarray], desc: str = "") -> list[str]:
        self.lengths = [len(w) for w in wavs]
        return self.texts


def test_judge_accuracy_pads_and_counts_per_class() -> None:
    fake = _Fake(["7", "eight", "Seven.", "nine"])
    wavs = [np.zeros(800, np.float32)] * 4
    out = judge_accuracy(wavs, ["seven", "eight", "seven", "eight"], 16000, transcriber=fake)
    assert out["accuracy"] == 0.75 and out["n"] == 4
    assert out["per_class"] == {"eight": {"accuracy": 0.5, "n": 2}, "seven": {"accuracy": 1.0, "n": 2}}
    assert fake.lengths == [800 + 2 * 11200] * 4  # 0.7 s of silence on both sides
    fake = _Fake(["one"])
    judge_accuracy([np.zeros(400, np.float32)], ["one"], 8000, transcriber=fake)
    assert fake.lengths == [800 + 2 * 11200]  # resampled to 16 kHz first
    with pytest.raises(AudioError):
        judge_accuracy(wavs, ["one"], transcriber=fake)


def test_mel_error_and_codebook_usage() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(8000).astype(np.float32) * 0.1
    assert mel_error(a, a) == 0.0
    assert mel_error(a, a * 0.5) == pytest.approx(np.log(2), abs=0.02)  # half amplitude: log 2 in every bin
    u = codebook_usage(torch.arange(8).repeat(4), 16)
    assert u["perplexity"] == pytest.approx(8.0) and u["usage"] == 0.5 and u["used"] == 8 and u["n_codes"] == 32
    with pytest.raises(AudioError):
        codebook_usage([0, 16], 16)


def test_frechet_from_embeddings_matches_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=gen, dtype=torch.float64)
    assert frechet_from_embeddings(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64) + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2, about 1 + 1 + 0 + 0.25
    assert frechet_from_embeddings(a, b) == pytest.approx(2.25, abs=0.1)


def test_frechet_distance_in_a_tiny_random_whisper_space() -> None:
    from transformers import WhisperConfig

    from auralm.components.encoders import build_audio_encoder

    cfg = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
                        decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=50)  # fmt: skip
    enc = build_audio_encoder(cfg, seed=0)
    rng = np.random.default_rng(0)
    tones = [synth_event("beep", rng)[:12000] for _ in range(12)]
    noise = [synth_event("noise-burst", rng)[:12000] for _ in range(12)]
    same = frechet_distance(tones, tones, encoder=enc)
    other = frechet_distance(tones, noise, encoder=enc)
    assert same["fd"] == pytest.approx(0.0, abs=1e-4) and same["n_a"] == 12 and same["dim"] == 16
    assert other["fd"] > 0.02 and other["fd"] > 100 * abs(same["fd"]) and other["n_b"] == 12


def test_make_sound_events_writes_labelled_clips(tmp_path: Path) -> None:
    manifest = make_sound_events(tmp_path, n_per_class=3, seed=1)
    rows = read_manifest(manifest)
    assert len(rows) == 3 * len(EVENTS) and {r.label for r in rows} == set(EVENTS)
    assert all(r.audio_path().is_file() and 0.1 < r.duration < 2.0 for r in rows)
    with pytest.raises(ConfigError, match="unknown sound event"):
        synth_event("thunder", np.random.default_rng(0))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_make_digit_corpus_holds_out_voices(tmp_path: Path) -> None:
    voices = ("espeak-ng:en-us", "espeak-ng:en-gb", "espeak-ng:en-us+f3")
    manifest = make_digit_corpus(tmp_path, n_per_class=1, n_test_per_class=1, eval_voices=("en-us+f3",), voices=voices)
    rows = read_manifest(manifest)
    train = [r for r in rows if r.split != "test"]
    test = [r for r in rows if r.split == "test"]
    assert sorted(r.label for r in train) == sorted(r.label for r in test) and len(train) == 10
    assert {r.meta["voice"] for r in test} == {"en-us+f3"} and "en-us+f3" not in {r.meta["voice"] for r in train}
    assert all(r.text == r.label for r in rows)


def test_sound_eval_cli_with_a_stand_in_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import WhisperConfig

    from auralm.components.encoders import build_audio_encoder
    from auralm.data.audio import write_wav
    from auralm.metrics import audio as evaluate

    cfg = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1,
                        decoder_attention_heads=2, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=150)  # fmt: skip

    class Beep:
        def transcribe(self, wavs: list[np.ndarray], desc: str = "") -> list[str]:
            return ["beep"] * len(wavs)

    monkeypatch.setitem(evaluate._JUDGES, "whisper-tiny.en", Beep())
    monkeypatch.setitem(evaluate._JUDGES, "encoder:whisper-tiny.en", build_audio_encoder(cfg))
    manifest = make_sound_events(tmp_path / "ev", n_per_class=3, seed=0, classes=("beep", "chirp"), test_frac=0.5)
    rng = np.random.default_rng(0)
    for i in range(3):
        write_wav(tmp_path / "gen" / f"beep_{i:03d}.wav", synth_event("beep", rng), 16000)
    out = tmp_path / "m.json"
    from auralm.recipes.sound.cli import eval_cli

    assert eval_cli(["--manifest", str(manifest), "--generated", str(tmp_path / "gen"), "--vocoder", "griffin-lim",
                         "--out", str(out)]) == 0  # fmt: skip
    import json

    m = json.loads(out.read_text())
    assert m["generation"]["accuracy"] == 1.0 and m["frechet_generated_vs_real"]["n_a"] == 3
    assert m["ceiling"]["n"] == m["n_clips"] and "mel_l1" in m["vocoder"]
