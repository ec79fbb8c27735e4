"""Mel VQ-VAE tokenizer: quantiser mechanics, encode/decode shapes, short-clip error, trainer + resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auralm.components.codecs.mel import MelConfig
from auralm.components.codecs.mel_vq import MelVQConfig, MelVQTokenizer, MelVQVAE, load_codec
from auralm.components.codecs.quantizer import EMAQuantizer, kmeans
from auralm.core.errors import AudioError
from auralm.recipes.sound.data import make_sound_events
from auralm.recipes.sound.train_tokenizer import TokenizerOptimConfig, TokenizerTrainConfig, train_tokenizer
from auralm.training.checkpoint import resolve_checkpoint

TINY = MelVQConfig(codebook_size=16, code_dim=8, hidden=16, downsample=4, res_blocks=1)


def test_straight_through_gradient_reaches_the_encoder_output() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(8, 4, kmeans_init=False).eval()  # eval: no EMA update after the lookup
    z = torch.randn(2, 4, 5, requires_grad=True)
    out, codes, _ = q(z)
    assert torch.allclose(out, q.lookup(codes))  # forward: the codes themselves
    w = torch.randn_like(out)
    (out * w).sum().backward()
    assert torch.allclose(z.grad, w)  # backward: identity


def test_commitment_loss_pulls_encoder_toward_codes() -> None:
    q = EMAQuantizer(4, 2, kmeans_init=False).eval()
    z = torch.randn(1, 2, 3, requires_grad=True)
    _, _, stats = q(z)
    stats["loss"].backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_ema_update_moves_codes_toward_assigned_vectors() -> None:
    q = EMAQuantizer(2, 2, decay=0.5, kmeans_init=False)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.ema_sum.copy_(q.codebook)
    target = torch.tensor([[1.0, 1.0]] * 4)
    before = (q.codebook[0] - target[0]).norm()
    for _ in range(3):
        q.ema_update(target, torch.zeros(4, dtype=torch.long))
    after = (q.codebook[0] - target[0]).norm()
    assert after < 0.5 * before
    assert torch.allclose(q.codebook[1], torch.tensor([10.0, 10.0]), atol=1.0)  # unassigned code barely moves


def test_dead_codes_are_restarted_from_batch_vectors() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(6, 3, dead_threshold=0.5, kmeans_init=False)
    q.ema_count.copy_(torch.tensor([5.0, 0.1, 5.0, 0.0, 5.0, 5.0]))
    flat = torch.randn(10, 3) + 100.0
    assert q.restart_dead(flat) == 2
    for i in (1, 3):
        assert any(torch.allclose(q.codebook[i], row) for row in flat)
        assert q.ema_count[i] == 1.0
    assert (q.codebook[[0, 2, 4, 5]].abs() < 50).all()  # live codes untouched
    # in training, a code nobody picks dies and comes back on the data
    q2 = EMAQuantizer(4, 2, decay=0.5, dead_threshold=0.5, kmeans_init=False).train()
    q2.codebook.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.1], [50.0, 50.0], [-50.0, 50.0]]))
    q2.ema_sum.copy_(q2.codebook)
    restarted = sum(q2(torch.randn(4, 2, 8) * 0.1)[2]["restarted"] for _ in range(4))
    assert restarted >= 2 and q2.codebook.abs().max() < 5


def test_kmeans_init_and_usage_stats() -> None:
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=gen) for c in centers])
    cent = kmeans(x, 3, generator=gen)
    assert torch.cdist(centers, cent).min(1).values.max() < 0.5
    q = EMAQuantizer(3, 2).train()
    _, codes, stats = q(x.T[None])
    assert stats["usage"] == 1.0 and stats["perplexity"] == pytest.approx(3.0, abs=0.01)


def _tokenizer() -> MelVQTokenizer:
    torch.manual_seed(0)
    return MelVQTokenizer(MelVQVAE(TINY, 80), MelConfig())


def test_encode_decode_shapes_and_frame_rate() -> None:
    tok = _tokenizer()
    assert tok.frame_rate == pytest.approx(16000 / (128 * 4)) and tok.codebook_size == 16
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    codes = tok.encode(wav)
    assert codes.shape == (1, 32) and codes.dtype == torch.long  # 125 mel frames -> ceil(125 / 4)
    assert tok.tokens_per_clip(1.0) == 32
    assert tok.encode(np.stack([wav, wav])).shape == (2, 32)
    assert [c.shape[0] for c in tok.encode_many([wav, wav[:8000]])] == [32, 16]
    out = tok.decode(codes[0])
    assert out.shape == (1, 16 * 1024) and out.dtype == np.float32
    assert tok.decode_mel(codes).shape == (1, 80, 128)


def test_clip_shorter_than_one_token_frame_is_a_clear_error() -> None:
    tok = _tokenizer()
    tok.encode(np.zeros(512, np.float32))  # exactly one token frame is fine
    with pytest.raises(AudioError, match="shorter than one token frame"):
        tok.encode(np.zeros(500, np.float32))
    with pytest.raises(AudioError, match="codes must lie"):
        tok.decode(torch.tensor([0, 16]))


def _tiny_train_cfg(manifest: Path, out: Path, stop_after: int = 0) -> TokenizerTrainConfig:
    return TokenizerTrainConfig(manifest=str(manifest), out=str(out), model=TINY, crop_frames=16, eval_every=2,
                                save_every=2, max_eval_clips=2, log_every=1,
                                optim=TokenizerOptimConfig(max_steps=4, stop_after=stop_after, batch_size=4,
                                                           warmup_steps=2, max_minutes=0))  # fmt: skip


def test_train_tokenizer_writes_a_loadable_checkpoint_and_resumes_exactly(tmp_path: Path) -> None:
    manifest = make_sound_events(tmp_path / "ev", n_per_class=2, seed=0)
    ckpt = train_tokenizer(_tiny_train_cfg(manifest, tmp_path / "a"))
    assert ckpt == tmp_path / "a" / "checkpoints" / "step-000004" == resolve_checkpoint(tmp_path / "a")
    assert {p.name for p in ckpt.iterdir()} >= {"config.yaml", "weights.safetensors", "trainer_state.pt", "metrics.json"}
    assert (tmp_path / "a" / "tb").is_dir()
    assert json.loads((ckpt / "metrics.json").read_text())["stopped_by"] == "max_steps"
    tok = load_codec(ckpt)
    assert tok.encode(np.zeros(4096, np.float32)).shape == (1, 8)
    # stopped after 2 steps, then resumed to 4: bit for bit the weights (codebook included) of 4 steps in one go
    cut = train_tokenizer(_tiny_train_cfg(manifest, tmp_path / "b", stop_after=2))
    assert json.loads((cut / "metrics.json").read_text())["stopped_by"] == "stop_after"
    assert load_codec(cut).model.state_dict()["quantizer.codebook"].shape == (16, 8)
    resumed = train_tokenizer(_tiny_train_cfg(manifest, tmp_path / "b"))
    a, b = load_codec(ckpt).model.state_dict(), load_codec(resumed).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [[json.loads(x) for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()] for d in "ab"]
    assert [r.get("train/loss") for r in logs[0]] == [r.get("train/loss") for r in logs[1]]


def test_audio_tokenizer_is_an_abstract_interface():
    from auralm.components.codecs.base import AudioTokenizer

    with pytest.raises(TypeError, match="abstract"):
        AudioTokenizer()

    class Half(AudioTokenizer):  # encode without decode is not a codec
        def encode(self, wav):
            return torch.zeros(1, 1, dtype=torch.long)

    with pytest.raises(TypeError, match="decode"):
        Half()
    assert issubclass(MelVQTokenizer, AudioTokenizer)
