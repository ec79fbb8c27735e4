"""Token GPT: sampling filters as defined, guidance formula, overfitting a tiny set, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from auralm.core.errors import ConfigError
from auralm.recipes.sound.gpt import (
    GPTConfig,
    SamplingConfig,
    TokenGPT,
    class_inputs,
    filter_top_k,
    filter_top_p,
    generate,
    make_batch,
)
from auralm.recipes.sound.train_gpt import (
    GPTOptimConfig,
    TokenSet,
    TrainGPTConfig,
    load_token_model,
    train_gpt,
)

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 16}


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 3.0, 2.0, 5.0, 4.0], [0.0, -1.0, 2.0, 1.0, 3.0]])
    kept = filter_top_k(logits, 2).isfinite()
    assert kept.tolist() == [[False, False, False, True, True], [False, False, True, False, True]]
    assert torch.equal(filter_top_k(logits, 0), logits) and torch.equal(filter_top_k(logits, 5), logits)


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # ranked: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()
    assert filter_top_p(logits, 0.4).isfinite().tolist() == [[False, True, False, False]]  # 0.5 >= 0.4
    assert filter_top_p(logits, 0.75).isfinite().tolist() == [[False, True, False, True]]  # 0.5+0.3
    assert filter_top_p(logits, 0.85).isfinite().tolist() == [[False, True, True, True]]  # +0.15
    assert filter_top_p(logits, 1.0).isfinite().all()
    # kept logits are unchanged, so renormalising gives p_i / (kept mass)
    kept = filter_top_p(logits, 0.75).softmax(-1)
    assert torch.allclose(kept, torch.tensor([[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]]), atol=1e-6)


def test_make_batch_layout():
    inputs, targets = make_batch([torch.tensor([5, 6, 7]), torch.tensor([8])], torch.tensor([20, 21]), eos=16, pad_id=0)
    assert inputs.tolist() == [[20, 5, 6, 7], [21, 8, 0, 0]]
    assert targets.tolist() == [[5, 6, 7, 16], [8, 16, -100, -100]]


def test_label_dropout_rate_and_ids():
    cfg = GPTConfig(codebook_size=8, n_labels=3, **TINY)
    ids = class_inputs(cfg, torch.tensor([0, 1, 2]))
    assert ids.tolist() == [10, 11, 12] and cfg.null == 9 and cfg.eos == 8
    dropped = class_inputs(cfg, torch.zeros(4000, dtype=torch.long), torch.Generator().manual_seed(0), drop=0.25)
    assert abs(float((dropped == cfg.null).float().mean()) - 0.25) < 0.03


def test_guidance_is_uncond_plus_s_times_difference():
    torch.manual_seed(0)
    cfg = GPTConfig(codebook_size=8, n_labels=2, **TINY)
    model = TokenGPT(cfg).eval()
    first = class_inputs(cfg, torch.tensor([0, 1]))
    greedy = SamplingConfig(strategy="greedy")
    cond = generate(model, first, 6, greedy)
    uncond = generate(model, torch.full((2,), cfg.null), 6, greedy)
    assert [c.tolist() for c in generate(model, first, 6, greedy.replace(guidance_scale=0.0))] == [u.tolist() for u in uncond]
    s = 3.0
    first_step = generate(model, first, 1, greedy.replace(guidance_scale=s))
    lc, lu = model(first[:, None])[:, -1, :8], model(torch.full((2, 1), cfg.null))[:, -1, :8]
    assert [int(x) for x in (lu + s * (lc - lu)).argmax(-1)] == [int(c[0]) for c in first_step]
    assert all(len(c) == 6 for c in cond)


def test_fixed_length_never_emits_eos_and_eos_mode_stops():
    torch.manual_seed(1)
    cfg = GPTConfig(codebook_size=4, n_labels=1, **TINY)
    model = TokenGPT(cfg)
    with torch.no_grad():  # make EOS overwhelmingly likely
        model.head.weight.zero_()
        model.head.weight[cfg.eos] = 0.0
        model.ln_f.bias.zero_()
        model.head.weight[cfg.eos, 0] = 1.0
        model.ln_f.bias[0] = 50.0
    first = class_inputs(cfg, torch.zeros(3, dtype=torch.long))
    fixed = generate(model, first, 5, SamplingConfig(strategy="greedy"))
    assert all(len(c) == 5 and int(c.max()) < cfg.codebook_size for c in fixed)
    stopped = generate(model, first, 5, SamplingConfig(strategy="greedy"), stop_at_eos=True, min_tokens=0)
    assert all(len(c) == 0 for c in stopped)
    at_least_two = generate(model, first, 5, SamplingConfig(strategy="greedy"), stop_at_eos=True, min_tokens=2)
    assert all(len(c) == 2 for c in at_least_two)
    with pytest.raises(ConfigError):
        generate(model, first, 40)


def _memorise_set() -> TokenSet:
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 12, (3, 10), generator=g)
    return TokenSet(codes=codes, lengths=torch.full((3,), 10), labels=torch.arange(3), label_names=["a", "b", "c"],
                    codebook_size=12, ids=["x", "y", "z"], splits=["train"] * 3)


def _log(run: Path, key: str = "train/loss") -> list[float]:
    return [r[key] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if key in r]


def test_overfits_a_tiny_set_and_reproduces_it(tmp_path):
    tokens = _memorise_set()
    cfg = TrainGPTConfig(kind="class", out=str(tmp_path / "run"), eval_every=1000, save_every=1000, logger="none",
                         log_every=1, gpt=GPTConfig(**TINY),
                         optim=GPTOptimConfig(max_steps=150, batch_size=6, lr=3e-3, warmup_steps=10))
    ckpt = train_gpt(cfg, tokens)
    model, _, meta = load_token_model(ckpt)
    losses = _log(tmp_path / "run")
    assert len(losses) == 150 and losses[-1] < 0.05 < losses[0]
    assert meta["label_names"] == ["a", "b", "c"] and meta["clip_tokens"] == 10
    first = class_inputs(model.cfg, torch.arange(3))
    for sc in (SamplingConfig(strategy="greedy"), SamplingConfig(temperature=0.1, top_k=5, top_p=0.9)):
        out = generate(model, first, 10, sc, generator=torch.Generator().manual_seed(0))
        assert [o.tolist() for o in out] == tokens.codes.tolist()
    assert torch.load(ckpt / "trainer_state.pt", weights_only=False)["step"] == 150 == meta["step"]


def _class_cfg(out: Path, **optim) -> TrainGPTConfig:
    return TrainGPTConfig(kind="class", out=str(out), eval_every=5, save_every=5, logger="none", log_every=1,
                          gpt=GPTConfig(dropout=0.1, cfg_dropout=0.2, **TINY),
                          optim=GPTOptimConfig(**{"max_steps": 12, "batch_size": 4, "warmup_steps": 3, **optim}))


def test_class_gpt_resume_is_exact(tmp_path):
    tokens = TokenSet.random(20, 8, 16, ["a", "b"], seed=1)
    full = train_gpt(_class_cfg(tmp_path / "full"), tokens)
    part = _class_cfg(tmp_path / "part", stop_after=7)
    cut = train_gpt(part, tokens)
    assert torch.load(cut / "trainer_state.pt", weights_only=False)["step"] == 7
    assert json.loads((cut / "metrics.json").read_text())["stopped_by"] == "stop_after"
    resumed = train_gpt(_class_cfg(tmp_path / "part"), tokens)
    a, _, _ = load_token_model(full)
    b, _, _ = load_token_model(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert _log(tmp_path / "full") == _log(tmp_path / "part") and len(_log(tmp_path / "full")) == 12
    # another token set in the same run folder is refused (the run's data fingerprint)
    with pytest.raises(ConfigError, match="other data"):
        train_gpt(_class_cfg(tmp_path / "part", max_steps=14), TokenSet.random(20, 8, 16, ["a", "b"], seed=2))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """`torchrun --nproc_per_node 2 -m auralm sound train-gpt`: the global batch is split over the processes and
    the gradients all-reduced; the weights match one process with the same global batch."""
    import os
    import shutil
    import subprocess
    import sys

    from auralm.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("checks the CPU (gloo) path")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    TokenSet.random(24, 8, 16, ["a", "b", "c"], seed=4).save(tmp_path / "tokens")
    args = ["sound", "train-gpt", "--kind", "class", "--tokens", str(tmp_path / "tokens"), "--max-steps", "4",
            "optim.batch_size=8", "optim.warmup_steps=1", "gpt.n_layer=1", "gpt.n_embd=32", "gpt.n_head=2",
            "gpt.dropout=0.0", "gpt.cfg_dropout=0.3", "logger=none", "log_every=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "AURALM_PROGRESS": "0"}
    two = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "auralm", *args, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    a, _, _ = load_token_model(tmp_path / "one")
    b, _, _ = load_token_model(tmp_path / "two")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    assert _log(tmp_path / "one") == pytest.approx(_log(tmp_path / "two"), rel=1e-5)
    state = torch.load(tmp_path / "two" / "checkpoints" / "step-000004" / "trainer_state.pt", weights_only=False)
    assert state["num_processes"] == 2 and len(state["rng"]) == 2


def test_the_time_guard_cuts_the_run_loudly_and_says_so_in_metrics(tmp_path, capsys):
    ckpt = train_gpt(_class_cfg(tmp_path / "run", max_minutes=1e-6), TokenSet.random(20, 8, 16, ["a", "b"], seed=1))
    m = json.loads((ckpt / "metrics.json").read_text())
    assert (m["stopped_by"], m["steps_done"], m["steps_planned"]) == ("max_minutes", 1, 12)
    assert "WARNING [train-gpt class] stopped by max_minutes at step 1 of 12" in capsys.readouterr().err


def test_sound_presets_give_valid_trainer_configs_with_the_engines_names():
    """Every trainer section of the sound presets builds its config the way the demo does (step counts in optim)."""
    from auralm.core.config import load_preset
    from auralm.recipes.sound.train_tokenizer import TokenizerTrainConfig
    from auralm.recipes.sound.train_vocoder import VocoderTrainConfig
    from auralm.training.config import merge_dicts

    for name in ("sound-demo", "sound-tiny"):
        p = load_preset(name)
        where = {"manifest": "m.jsonl", "out": "o"}
        tok = TokenizerTrainConfig.from_dict(merge_dicts({"optim": {"seed": 3}}, p["tokenizer"], where))
        voc = VocoderTrainConfig.from_dict(merge_dicts(p["vocoder"], where))
        gpt = TrainGPTConfig.from_dict(merge_dicts(p["gpt"], {"kind": "class"}))
        vae = TrainGPTConfig.from_dict(merge_dicts(p["vae"], {"kind": "vae", "optim": {"max_steps": p["vae_steps"]}}))
        assert tok.optim.seed == 3 and tok.optim.min_lr_frac == 0.1 and vae.optim.max_steps == p["vae_steps"]
        for c in (tok, voc, gpt, vae):
            assert c.recipe == "sound" and c.resume == "auto"
        if name == "sound-demo":  # step counts define the runs; the time caps are guards
            assert voc.optim.max_steps == 480 and voc.optim.max_minutes >= 1.5 * 3.5
            assert tok.optim.max_steps == 3000 and tok.optim.max_minutes >= 1.5 * 6.25
