"""Vocoders: STFT round trip, Griffin-Lim on a sine, HiFi-GAN shapes, a training step, the trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from auralm.components.codecs.mel import MelConfig, MelFrontend, mel_l1
from auralm.components.codecs.vocoder import (
    GriffinLim,
    HifiGanConfig,
    HifiGanVocoder,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
    load_vocoder,
)
from auralm.recipes.sound.data import make_sound_events
from auralm.recipes.sound.train_vocoder import VocoderOptimConfig, VocoderTrainConfig, train_vocoder

SMALL_MEL = MelConfig(n_fft=256, hop=64, n_mels=32)
SMALL_GEN = HifiGanConfig(upsample_rates=[8, 8], initial_channels=16, resblock_kernels=[3], resblock_dilations=[1])


def _sine(freq: float, seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stft_istft_round_trip_is_exact() -> None:
    front = MelFrontend()
    x = torch.from_numpy(_sine(440, 1.0))[None]
    spec = front.stft(x)
    assert spec.shape == (1, 257, 125)  # n_fft/2 + 1 bins, S // hop frames
    assert torch.allclose(front.istft(spec), x[:, : 125 * 128], atol=1e-5)


def test_griffin_lim_reconstructs_a_sine_with_low_mel_error() -> None:
    front = MelFrontend()
    m = front.mel(_sine(440))
    wav = GriffinLim(n_iter=32)(m)
    assert wav.shape == (62 * 128,)
    err = mel_l1(front.mel(wav), m)
    assert err < 0.4
    assert err < 0.2 * mel_l1(front.mel(_sine(1500)), m)  # far below a different sound
    f = np.fft.rfftfreq(len(wav), 1 / 16000)[np.argmax(np.abs(np.fft.rfft(wav.numpy())))]
    assert abs(f - 440) < 10


def test_hifigan_generator_and_discriminator_shapes() -> None:
    voc = HifiGanVocoder(HifiGanConfig(), MelConfig())
    assert voc(torch.randn(2, 80, 10)).shape == (2, 1280)
    assert voc(torch.randn(80, 7)).shape == (7 * 128,)
    wav = torch.randn(2, 4096)
    for disc in (MultiPeriodDiscriminator(), MultiScaleDiscriminator()):
        outs = disc(wav)
        assert all(score.shape[0] == 2 and len(feats) >= 4 for score, feats in outs)


def test_a_few_training_steps_reduce_the_loss_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    front = MelFrontend(SMALL_MEL)
    voc = HifiGanVocoder(SMALL_GEN, SMALL_MEL).train()
    mpd, msd = MultiPeriodDiscriminator((2, 3)), MultiScaleDiscriminator(2)
    opt = torch.optim.Adam(voc.parameters(), 2e-3)
    real = torch.from_numpy(np.stack([_sine(300, 0.128), _sine(900, 0.128)]))
    mel = front.mel(real)

    def loss() -> torch.Tensor:
        fake = voc(mel)
        rp, fp, rs, fs = mpd(real), mpd(fake), msd(real), msd(fake)
        adv = generator_adv_loss(fp) + generator_adv_loss(fs)
        return 45 * torch.nn.functional.l1_loss(front.mel(fake), mel) + adv + 2 * (feature_matching_loss(rp, fp) + feature_matching_loss(rs, fs))

    first = float(loss().detach())
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < first
    d = discriminator_loss(mpd(real), mpd(voc(mel).detach()))
    assert torch.isfinite(d)


def _voc_cfg(manifest: Path, out: Path, **optim) -> VocoderTrainConfig:
    return VocoderTrainConfig(manifest=str(manifest), out=str(out), mel=SMALL_MEL, model=SMALL_GEN, segment=1024,
                              disc_start=1, eval_every=3, max_eval_clips=1, log_every=1,
                              optim=VocoderOptimConfig(**{"max_steps": 3, "batch_size": 2, "max_minutes": 0, **optim}))


def test_train_vocoder_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    manifest = make_sound_events(tmp_path / "ev", n_per_class=2, seed=0)
    ckpt = train_vocoder(_voc_cfg(manifest, tmp_path / "voc"))
    assert {p.name for p in ckpt.iterdir()} >= {"config.yaml", "weights.safetensors", "trainer_state.pt", "metrics.json"}
    voc = load_vocoder(ckpt)
    assert isinstance(voc, HifiGanVocoder) and voc(torch.randn(32, 5)).shape == (5 * 64,)
    assert isinstance(load_vocoder("griffin-lim", SMALL_MEL), GriffinLim)
    metrics = json.loads((ckpt / "metrics.json").read_text())  # what the demo's choice of vocoder reads
    assert set(metrics["valid"]) >= {"mel_l1_hifigan", "mel_l1_griffin_lim"} and metrics["stopped_by"] == "max_steps"


def test_vocoder_resume_is_exact_with_both_optimizers_and_the_discriminators(tmp_path: Path) -> None:
    """The GAN step is the recipe's; the engine saves and restores both optimizers and the discriminators."""
    manifest = make_sound_events(tmp_path / "ev", n_per_class=2, seed=0)
    full = train_vocoder(_voc_cfg(manifest, tmp_path / "full", max_steps=4))
    cut = train_vocoder(_voc_cfg(manifest, tmp_path / "cut", max_steps=4, stop_after=2))
    state = torch.load(cut / "trainer_state.pt", weights_only=False)
    assert set(state["optimizers"]) == {"generator", "discriminators"} and set(state["extra"]) == {"mpd", "msd"}
    resumed = train_vocoder(_voc_cfg(manifest, tmp_path / "cut", max_steps=4))
    a, b = load_file(str(full / "weights.safetensors")), load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    da = torch.load(full / "trainer_state.pt", weights_only=False)["extra"]
    db = torch.load(resumed / "trainer_state.pt", weights_only=False)["extra"]
    for part in ("mpd", "msd"):
        assert all(torch.equal(da[part][k], db[part][k]) for k in da[part])


@pytest.mark.slow  # two torch processes per trainer: ~20 s
def test_tokenizer_and_vocoder_train_under_torchrun(tmp_path: Path) -> None:
    """Every recipe trains under `torchrun --nproc_per_node 2`: the global batch is split, gradients averaged."""
    import os
    import shutil
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("checks the CPU (gloo) path")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    manifest = make_sound_events(tmp_path / "ev", n_per_class=2, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "AURALM_PROGRESS": "0"}
    runs = {
        "tok": ["train-tokenizer", "optim.max_steps=3", "optim.batch_size=4", "crop_frames=16", "max_eval_clips=2",
                "model.codebook_size=16", "model.code_dim=8", "model.hidden=16", "model.res_blocks=1"],
        "voc": ["train-vocoder", "optim.max_steps=3", "optim.batch_size=2", "segment=1024", "disc_start=1",
                "max_eval_clips=1", "mel.n_fft=256", "mel.hop=64", "mel.n_mels=32", "model.upsample_rates=[8, 8]",
                "model.initial_channels=16", "model.resblock_kernels=[3]", "model.resblock_dilations=[1]"],
    }
    for out, (command, *overrides) in runs.items():
        done = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "auralm", "sound", command, "--manifest",
                               str(manifest), "--out", str(tmp_path / out), *overrides],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        state = torch.load(tmp_path / out / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
        assert state["num_processes"] == 2 and len(state["rng"]) == 2
    assert isinstance(load_vocoder(tmp_path / "voc" / "checkpoints" / "step-000003"), HifiGanVocoder)
