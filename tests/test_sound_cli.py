"""`auralm sound ...` commands through the real entry point, on numpy-synthesised sound events."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml

from auralm.__main__ import main
from auralm.core.config import load_preset
from auralm.core.errors import ConfigError
from auralm.training.checkpoint import resolve_checkpoint

TOK = ["optim.max_steps=20", "eval_every=20", "optim.batch_size=4", "crop_frames=32", "model.hidden=32", "model.codebook_size=16",
       "model.code_dim=16", "model.res_blocks=1"]
GPT = ["gpt.n_layer=1", "gpt.n_embd=32", "gpt.n_head=2", "optim.batch_size=4", "eval_every=10", "save_every=10"]
VAE = ["vae.enc_layers=1", "vae.dec_layers=1", "vae.n_embd=32", "vae.n_head=2", "vae.latent_dim=4", "optim.batch_size=4",
       "anneal_steps=10", "eval_every=10", "save_every=10"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An event manifest, a tokenizer, a class GPT and a two-stage GPT-VAE, all trained through the CLI."""
    from auralm.recipes.sound.data import make_sound_events

    root = tmp_path_factory.mktemp("sound")
    manifest = make_sound_events(root / "events", n_per_class=6, valid_frac=0.2, test_frac=0.2)
    assert main(["sound", "train-tokenizer", "--manifest", str(manifest), "--out", str(root / "tok"), *TOK]) == 0
    tok = root / "tok"  # a run folder: its latest checkpoint is used
    assert main(["sound", "train-gpt", "--kind", "class", "--manifest", str(manifest), "--tokenizer", str(tok),
                 "--out", str(root / "gpt"), "--max-steps", "20", *GPT]) == 0
    tokens = root / "gpt" / "tokens"
    assert main(["sound", "train-gpt", "--kind", "vae", "--tokens", str(tokens), "--out", str(root / "ae"),
                 "--stage", "ae", "--max-steps", "10", *VAE]) == 0
    assert main(["sound", "train-gpt", "--kind", "vae", "--tokens", str(tokens), "--out", str(root / "vae"),
                 "--stage", "vae", "--init-from", str(root / "ae"), "--max-steps", "10", *VAE]) == 0
    return root, manifest


def test_train_gpt_writes_full_checkpoints_and_tensorboard(trained):
    root, _ = trained
    for run in ("gpt", "ae", "vae"):
        ckpt = resolve_checkpoint(root / run)
        assert {p.name for p in ckpt.iterdir()} >= {"config.yaml", "model.safetensors", "trainer_state.pt", "meta.json"}
        assert list((root / run / "tb").glob("events.out.tfevents.*"))
    meta = json.loads((resolve_checkpoint(root / "vae") / "meta.json").read_text())
    assert meta["stage"] == "vae" and meta["anneal_step"] == 10 and meta["kl_weight"] > 0
    assert meta["initialised_from"] == str(resolve_checkpoint(root / "ae"))
    assert set(meta["metrics"]["latent"]) >= {"kl_per_dim", "active_units"}
    assert len(meta["metrics"]["latent"]["kl_per_dim"]) == 4
    labels = json.loads((resolve_checkpoint(root / "gpt") / "meta.json").read_text())["label_names"]
    assert labels == ["beep", "chirp", "click-train", "noise-burst"]


def test_generate_writes_wavs_and_rejects_bad_input(trained, tmp_path, capsys):
    root, _ = trained
    ckpt = str(root / "gpt")  # a run folder: its latest checkpoint
    out = tmp_path / "gen"
    assert main(["sound", "generate", "--checkpoint", ckpt, "--label", "chirp", "--n", "3", "--out", str(out),
                 "--temperature", "0.9", "--top-k", "8", "--top-p", "0.9"]) == 0
    wavs = sorted(out.glob("chirp_*.wav"))
    assert len(wavs) == 3
    audio, sr = sf.read(wavs[0])
    assert sr == 16000 and len(audio) >= 1024
    assert main(["sound", "generate", "--checkpoint", ckpt, "--label", "dog", "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'dog' is not one the model was trained on" in err and "beep, chirp, click-train, noise-burst" in err
    assert main(["sound", "generate", "--checkpoint", ckpt, "--label", "beep", "--n", "0", "--out", str(out)]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    # the GPT-VAE alone samples its prior
    assert main(["sound", "generate", "--checkpoint", str(resolve_checkpoint(root / "vae")), "--n", "2", "--out", str(out)]) == 0
    assert len(list(out.glob("prior_*.wav"))) == 2


def test_interpolate_writes_wavs_and_spectrograms_and_rejects_short_clips(trained, tmp_path, capsys):
    root, manifest = trained
    wavs = sorted((manifest.parent / "wavs").glob("*.wav"))
    out = tmp_path / "interp"
    ckpt = str(root / "vae")
    assert main(["sound", "interpolate", "--checkpoint", ckpt, "--a", str(wavs[0]), "--b", str(wavs[-1]),
                 "--steps", "4", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"step_{k:02d}.{ext}" for k in range(4) for ext in ("png", "wav")]
    assert (out / "step_00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    short = tmp_path / "short.wav"
    sf.write(short, np.full(200, 0.1, dtype=np.float32), 16000)
    assert main(["sound", "interpolate", "--checkpoint", ckpt, "--a", str(short), "--b", str(wavs[0]),
                 "--steps", "3", "--out", str(tmp_path / "x")]) == 2
    assert "shorter than one token frame" in capsys.readouterr().err
    assert main(["sound", "interpolate", "--checkpoint", str(root / "gpt"), "--a", str(wavs[0]),
                 "--b", str(wavs[1]), "--steps", "3", "--out", str(tmp_path / "y")]) == 2
    assert "no GPT-VAE" in capsys.readouterr().err


def test_bundle_serves_generate_and_interpolate(trained, tmp_path):
    from auralm.recipes.sound.demo import make_bundle

    root, manifest = trained
    bundle = make_bundle(tmp_path / "bundle", resolve_checkpoint(root / "tok"), None, resolve_checkpoint(root / "gpt"),
                         resolve_checkpoint(root / "vae"))
    cfg = yaml.safe_load((bundle / "config.yaml").read_text())
    assert cfg == {"recipe": "sound", "kind": "bundle", "tokenizer": "tokenizer", "vocoder": "", "gpt": "gpt", "vae": "vae"}
    moved = tmp_path / "moved"
    shutil.move(str(bundle), moved)  # self-contained: still works elsewhere
    assert main(["sound", "generate", "--checkpoint", str(moved), "--label", "beep", "--n", "2",
                 "--out", str(tmp_path / "g"), "--greedy"]) == 0
    wavs = sorted((manifest.parent / "wavs").glob("*.wav"))
    assert main(["sound", "interpolate", "--checkpoint", str(moved), "--a", str(wavs[0]), "--b", str(wavs[1]),
                 "--steps", "2", "--out", str(tmp_path / "i")]) == 0
    assert len(list((tmp_path / "i").glob("*.png"))) == 2


def test_load_returns_the_sound_pipeline(trained, tmp_path):
    """auralm.load() on a bundle dispatches on its recipe field and generates what the command writes."""
    import auralm
    from auralm.data.audio import load_audio
    from auralm.recipes.sound.demo import make_bundle
    from auralm.recipes.sound.pipeline import SoundPipeline

    root, _ = trained
    bundle = make_bundle(tmp_path / "bundle", resolve_checkpoint(root / "tok"), None, resolve_checkpoint(root / "gpt"),
                         resolve_checkpoint(root / "vae"))
    pipe = auralm.load(bundle)
    assert isinstance(pipe, SoundPipeline) and pipe.recipe == "sound" and pipe.labels == ["beep", "chirp", "click-train", "noise-burst"]
    wavs = pipe.generate_sound("beep", n=2, seed=3, sampling={"strategy": "greedy"})
    assert len(wavs) == 2 and all(w.dtype == np.float32 and w.ndim == 1 and len(w) for w in wavs)
    assert main(["sound", "generate", "--checkpoint", str(bundle), "--label", "beep", "--n", "2", "--seed", "3",
                 "--out", str(tmp_path / "g"), "--greedy"]) == 0
    written = load_audio(tmp_path / "g" / "beep_000.wav", pipe.sample_rate)[0]
    assert np.abs(written - wavs[0]).max() < 1e-3  # the same clip, up to 16-bit WAV rounding
    with pytest.raises(ConfigError, match="known labels"):
        pipe.generate_sound("moo")


def test_sound_presets_load_and_validate():
    from auralm.recipes.sound.demo import SoundDemoConfig

    for name in ("sound-demo", "sound-tiny"):
        SoundDemoConfig.from_dict(load_preset(name))


@pytest.mark.slow
def test_tiny_sound_demo_writes_bundle_and_metrics(tmp_path):
    """The whole chain on the sound-tiny preset (about 40 s: the Whisper judge dominates)."""
    if not (shutil.which("espeak-ng") or shutil.which("flite")):
        pytest.skip("needs espeak-ng or flite")
    out = tmp_path / "demo"
    assert main(["sound", "demo", "--preset", "sound-tiny", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    e = m["eval"]
    # max_eval_clips 4: the judge hears 4 held-out clips and 2 generations for each of their labels
    n_labels = len(e["ceiling"]["per_class"])
    assert e["ceiling"]["n"] == 4 and e["generation"]["n"] == 2 * n_labels and 0 <= e["generation"]["accuracy"] <= 1
    assert set(e["vocoder_on_real_mels"]) == {"neural", "griffin_lim"}
    assert e["frechet"]["generated_vs_real"]["n_a"] == 2 * n_labels
    assert set(m["gpt_vae"]) == {"stage1_ae", "vae_free_bits", "vae_no_free_bits"}
    # each training run is defined by its steps and records why it stopped
    assert set(m["stages"]) == {"tokenizer", "vocoder", "gpt", "vae_ae", "vae", "vae_no_free_bits"}
    assert all(st["stopped_by"] == "max_steps" and st["steps_done"] == st["steps_planned"] for st in m["stages"].values())
    assert len(m["interpolation"]["pngs"]) == 3 and all((out / "interpolation" / f"step_{k:02d}.png").is_file() for k in range(3))
    bundle = yaml.safe_load((out / "checkpoint" / "config.yaml").read_text())
    assert bundle["kind"] == "bundle" and (out / "checkpoint" / "gpt" / "model.safetensors").is_file()
    assert main(["sound", "generate", "--checkpoint", str(out / "checkpoint"), "--label", "seven", "--n", "1",
                 "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "seven_000.wav").is_file()
