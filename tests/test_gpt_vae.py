"""GPT-VAE: KL modes and schedules as defined, active units, stage 2 loads stage 1, resume restores the KL weight."""

from __future__ import annotations

import json

import pytest
import torch

from auralm.core.errors import ConfigError
from auralm.recipes.sound.gpt_vae import GPTVAE, GPTVAEConfig, active_units, kl_per_dim, kl_term, kl_weight
from auralm.recipes.sound.train_gpt import (
    GPTOptimConfig,
    GPTTask,
    TokenSet,
    TrainGPTConfig,
    load_token_model,
    resolve_model,
    train_gpt,
)

TINY = GPTVAEConfig(latent_dim=4, enc_layers=1, dec_layers=1, n_head=2, n_embd=32, block_size=16, dropout=0.1)


def test_kl_per_dim_and_the_three_free_bits_modes():
    # dim 0: mu = +-1, var 1 -> KL = 0.5 * mean(mu^2) = 0.5; dim 1: mu 0, logvar log 2 -> 0.5 * (2 - 1 - log 2)
    mu = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    logvar = torch.tensor([[0.0, 2.0], [0.0, 2.0]]).log()
    logvar[:, 0] = 0.0
    kl = kl_per_dim(mu, logvar)
    expected = torch.tensor([0.5, 0.5 * (2 - 1 - torch.log(torch.tensor(2.0)))])
    assert torch.allclose(kl, expected)
    assert torch.isclose(kl_term(kl, "none", 0.3), kl.sum())
    assert torch.isclose(kl_term(kl, "per_dim", 0.3), torch.tensor(0.5 + 0.3))  # KL_1 = 0.153 -> 0.3
    assert torch.isclose(kl_term(kl, "per_dim", 0.1), kl.sum())  # both above the target
    assert torch.isclose(kl_term(kl, "total", 1.0), torch.tensor(1.0))  # 0.653 < 1
    assert torch.isclose(kl_term(kl, "total", 0.5), kl.sum())
    # below its target a dimension gets no gradient (the "free" nats)
    kl_req = kl.clone().requires_grad_(True)
    kl_term(kl_req, "per_dim", 0.3).backward()
    assert kl_req.grad.tolist() == [1.0, 0.0]
    with pytest.raises(ConfigError):
        kl_term(kl, "hinge", 0.1)


def test_kl_weight_schedules():
    assert [kl_weight(s, "linear", 0.5, 10) for s in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]
    cyc = [kl_weight(s, "cyclical", 1.0, 40, cycles=4) for s in range(0, 45, 5)]
    assert cyc == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert kl_weight(2, "cyclical", 1.0, 40, cycles=4) == pytest.approx(0.4)
    assert kl_weight(3, "constant", 0.7, 10) == 0.7


def test_active_units_count_dims_whose_posterior_mean_varies():
    g = torch.Generator().manual_seed(0)
    mus = torch.stack([torch.randn(200, generator=g), 0.05 * torch.randn(200, generator=g), torch.full((200,), 3.0)], 1)
    n, var = active_units(mus)
    assert n == 1 and var[0] > 0.5 and var[1] < 0.01 and var[2] == 0


def _tokens() -> TokenSet:
    return TokenSet.random(24, 10, 16, ["x"], seed=2)


OPTIM = ("max_steps", "stop_after", "batch_size", "warmup_steps")


def _cfg(tmp_path, name: str, **kw) -> TrainGPTConfig:
    base = dict(kind="vae", out=str(tmp_path / name), eval_every=5, save_every=4, logger="none", log_every=1, vae=TINY,
                beta=0.5, anneal_steps=8, free_bits="per_dim", free_bits_target=0.1)
    optim = {"max_steps": 10, "batch_size": 4, "warmup_steps": 2, **{k: kw.pop(k) for k in OPTIM if k in kw}}
    return TrainGPTConfig(**{**base, **kw}, optim=GPTOptimConfig(**optim))


def _log(run, key):
    return [r[key] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if key in r]


def test_stage2_starts_from_the_stage1_encoder_and_decoder(tmp_path):
    tokens = _tokens()
    stage1 = train_gpt(_cfg(tmp_path, "ae", stage="ae", max_steps=6), tokens)
    ae, _, meta = load_token_model(stage1)
    assert meta["stage"] == "ae"
    task = GPTTask(resolve_model(_cfg(tmp_path, "vae", stage="vae", init_from=str(tmp_path / "ae")), tokens), tokens)
    fresh = GPTVAE(task.cfg.vae)
    for name, p in ae.state_dict().items():
        assert torch.equal(task.model.state_dict()[name], p), name
    assert not torch.equal(fresh.enc_blocks[0].attn.qkv.weight, ae.enc_blocks[0].attn.qkv.weight)
    assert task.initialised_from == str(stage1)  # the run folder's latest checkpoint
    with pytest.raises(ConfigError, match="init_from"):
        GPTTask(resolve_model(_cfg(tmp_path, "vae2", stage="vae"), tokens), tokens)


def test_resume_restores_kl_weight_and_anneal_step(tmp_path):
    tokens = _tokens()
    stage1 = train_gpt(_cfg(tmp_path, "ae", stage="ae", max_steps=4), tokens)
    kw = dict(stage="vae", init_from=str(stage1), kl_schedule="linear")
    full = train_gpt(_cfg(tmp_path, "full", **kw), tokens)
    part = train_gpt(_cfg(tmp_path, "part", stop_after=6, **kw), tokens)
    saved = torch.load(part / "trainer_state.pt", weights_only=False)["extra"]  # the recipe's extra state
    assert saved["anneal_step"] == 6 and saved["kl_weight"] == pytest.approx(kl_weight(5, "linear", 0.5, 8))
    assert json.loads((part / "meta.json").read_text())["anneal_step"] == 6
    resumed = train_gpt(_cfg(tmp_path, "part", **kw), tokens)
    expected = [kl_weight(s, "linear", 0.5, 8) for s in range(10)]
    assert _log(tmp_path / "part", "train/kl_weight") == _log(tmp_path / "full", "train/kl_weight") == expected
    assert torch.load(resumed / "trainer_state.pt", weights_only=False)["extra"]["anneal_step"] == 10
    assert _log(tmp_path / "part", "train/loss") == _log(tmp_path / "full", "train/loss")
    a, _, _ = load_token_model(full)
    b, _, _ = load_token_model(resumed)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_stage1_autoencoder_resume_is_exact(tmp_path):
    tokens = _tokens()
    full = train_gpt(_cfg(tmp_path, "full", stage="ae"), tokens)
    train_gpt(_cfg(tmp_path, "part", stage="ae", stop_after=3), tokens)
    resumed = train_gpt(_cfg(tmp_path, "part", stage="ae"), tokens)
    a, _, _ = load_token_model(full)
    b, _, _ = load_token_model(resumed)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_interpolate_decodes_the_line_between_the_two_latents():
    torch.manual_seed(0)
    model = GPTVAE(TINY.replace(codebook_size=16, dropout=0.0)).eval()
    a, b = torch.randint(0, 16, (10,)), torch.randint(0, 16, (8,))
    path = model.interpolate(a, b, 5)
    assert len(path) == 5 and all(len(p) == 10 and int(p.max()) < 16 for p in path)
    mu_a, _ = model.encode(a[None])
    mu_b, _ = model.encode(b[None])
    assert path[0].tolist() == model.decode(mu_a, 10)[0].tolist()
    assert path[-1].tolist() == model.decode(mu_b, 10)[0].tolist()
    assert path[2].tolist() == model.decode((mu_a + mu_b) / 2, 10)[0].tolist()
    with pytest.raises(ConfigError):
        model.interpolate(a, b, 1)
