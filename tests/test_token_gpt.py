"""Token GPT: sampling filters as defined, guidance formula, overfitting a tiny set, exact resume."""

from __future__ import annotations

import math

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
from auralm.recipes.sound.train_gpt import TokenSet, TrainGPTConfig, load_token_model, train_gpt

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


def test_overfits_a_tiny_set_and_reproduces_it(tmp_path):
    tokens = _memorise_set()
    cfg = TrainGPTConfig(kind="class", out=str(tmp_path / "run"), steps=150, batch_size=6, lr=3e-3, warmup_steps=10,
                         eval_every=1000, save_every=1000, tensorboard=False, gpt=GPTConfig(**TINY))
    ckpt = train_gpt(cfg, tokens)
    model, _, meta = load_token_model(ckpt)
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert state["history"][-1]["loss"] < 0.05 < state["history"][0]["loss"]
    assert meta["label_names"] == ["a", "b", "c"] and meta["clip_tokens"] == 10
    first = class_inputs(model.cfg, torch.arange(3))
    for sc in (SamplingConfig(strategy="greedy"), SamplingConfig(temperature=0.1, top_k=5, top_p=0.9)):
        out = generate(model, first, 10, sc, generator=torch.Generator().manual_seed(0))
        assert [o.tolist() for o in out] == tokens.codes.tolist()
    assert math.isclose(state["step"], 150)


def test_class_gpt_resume_is_exact(tmp_path):
    tokens = TokenSet.random(20, 8, 16, ["a", "b"], seed=1)
    base = dict(kind="class", steps=12, batch_size=4, warmup_steps=3, eval_every=5, save_every=5, tensorboard=False,
                gpt=GPTConfig(dropout=0.1, cfg_dropout=0.2, **TINY))
    full = train_gpt(TrainGPTConfig(out=str(tmp_path / "full"), **base), tokens)
    part = TrainGPTConfig(out=str(tmp_path / "part"), stop_after=7, **base)
    assert torch.load(train_gpt(part, tokens) / "state.pt", weights_only=False)["step"] == 7
    resumed = train_gpt(part.replace(stop_after=0), tokens)
    a, _, _ = load_token_model(full)
    b, _, _ = load_token_model(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    ha = torch.load(full / "state.pt", weights_only=False)["history"]
    hb = torch.load(resumed / "state.pt", weights_only=False)["history"]
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
