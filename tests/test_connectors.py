"""Connectors: stacking projector, the splice and its count check, gated cross-attention and gate-zero parity."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from auralm.components.connectors import (
    ConnectorConfig,
    CrossConnector,
    GatedCrossAttention,
    PrefixConnector,
    SpliceError,
    StackProjector,
    build_connector,
    lengths_mask,
    splice_audio,
)
from auralm.components.lm import decoder_layers, load_lm
from auralm.core.errors import ConfigError


def test_stack_projector_shapes_and_padding_never_leaks():
    torch.manual_seed(0)
    proj = StackProjector(8, 16, stack=3, projector="mlp", hidden=32)
    states, lengths = torch.randn(2, 10, 8), torch.tensor([10, 5])
    out, new = proj(states, lengths)
    assert out.shape == (2, 4, 16) and new.tolist() == [4, 2]  # ceil(10/3), ceil(5/3)
    garbage = states.clone()
    garbage[1, 5:] = 1e3  # frames past item 1's length
    out2, _ = proj(garbage, lengths)
    assert torch.equal(out2[1, :2], out[1, :2]) and torch.equal(out2[0], out[0])
    alone, _ = proj(states[1:, :5], lengths[1:])  # the item encoded alone gives the same frames
    torch.testing.assert_close(alone[0], out[1, :2])
    assert isinstance(StackProjector(8, 16, 2, "linear").net, torch.nn.Linear)


def test_adapter_layers_attend_within_the_valid_frames_only():
    torch.manual_seed(0)
    proj = StackProjector(8, 16, stack=2, adapter_layers=2, adapter_heads=4).eval()
    states, lengths = torch.randn(2, 10, 8), torch.tensor([10, 5])
    out, new = proj(states, lengths)
    assert out.shape == (2, 5, 16) and new.tolist() == [5, 3]
    alone, _ = proj(states[1:, :5], lengths[1:])  # padding is masked out of the self-attention
    torch.testing.assert_close(alone[0], out[1, :3])
    moved, _ = proj(torch.cat([states[:, :2].flip(1), states[:, 2:]], 1), lengths)  # context changes every frame
    assert not torch.allclose(moved[0, 2:], out[0, 2:])
    with pytest.raises(ConfigError, match="adapter_heads"):
        build_connector(ConnectorConfig(adapter_layers=1, adapter_heads=5), 8, 16)


def test_lengths_mask_marks_the_valid_steps():
    assert lengths_mask(torch.tensor([3, 1, 0]), 4).tolist() == [
        [True, True, True, False], [True, False, False, False], [False, False, False, False]]


def test_splice_puts_valid_frames_at_placeholders_in_order():
    A = 99
    ids = torch.tensor([[1, A, A, A, 2, 0], [3, 4, A, A, 5, 6]])
    embeds = torch.zeros(2, 6, 4)
    audio = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4) + 1
    out = splice_audio(embeds, ids, audio, torch.tensor([3, 2]), A)
    assert torch.equal(out[0, 1:4], audio[0]) and torch.equal(out[1, 2:4], audio[1, :2])
    assert torch.equal(out[ids != A], torch.zeros(int((ids != A).sum()), 4))


def test_splice_count_mismatch_names_both_counts():
    A = 99
    ids = torch.tensor([[A, A, A, A, 1, A, A, A, A]])  # a prompt with two placeholders' worth, one clip
    with pytest.raises(SpliceError, match=r"8 audio placeholder positions but 4 audio frames"):
        splice_audio(torch.zeros(1, 9, 4), ids, torch.randn(1, 4, 4), torch.tensor([4]), A)
    with pytest.raises(ValueError, match=r"placeholders \[2, 1\], frames \[1, 2\]"):  # totals agree, rows do not
        splice_audio(torch.zeros(2, 3, 4), torch.tensor([[A, A, 1], [A, 1, 1]]), torch.randn(2, 2, 4), torch.tensor([1, 2]), A)


def test_build_connector_and_config_errors():
    assert isinstance(build_connector(ConnectorConfig(), 8, 16), PrefixConnector)
    cross = build_connector(ConnectorConfig(kind="cross", every_n=2), 8, 16, num_layers=5)
    assert isinstance(cross, CrossConnector) and cross.layer_ids == [0, 2, 4]
    with pytest.raises(ConfigError, match="prefix, cross"):
        ConnectorConfig(kind="late")
    with pytest.raises(ConfigError, match="not divisible"):
        build_connector(ConnectorConfig(kind="cross", heads=3), 8, 16, num_layers=2)
    with pytest.raises(ConfigError, match="gate"):
        ConnectorConfig(gate="relu")


@pytest.mark.parametrize("gate", ["tanh", "sigmoid"])
def test_gate_zero_is_exact_identity_and_nonzero_lets_audio_in(gate):
    torch.manual_seed(0)
    block = GatedCrossAttention(16, heads=4, gate=gate)
    x, mask = torch.randn(2, 5, 16) * 30, torch.tensor([[True] * 3, [True, False, False]])
    a1, a2 = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    assert torch.equal(block(x, a1, mask), x)
    with torch.no_grad():
        block.gate_attn.fill_(1.0)
    y1, y2 = block(x, a1, mask), block(x, a2, mask)
    assert not torch.allclose(y1, y2)
    a3 = a1.clone()
    a3[1, 1:] = 1e3  # masked audio keys change nothing
    torch.testing.assert_close(block(x, a3, mask)[1], y1[1])


def test_sigmoid_gate_is_visualgpt_srau():
    torch.manual_seed(0)
    block = GatedCrossAttention(8, heads=2, gate="sigmoid", tau=0.3, alpha=2.0)
    with torch.no_grad():
        block.gate_attn.fill_(1.0)  # blend fully into the VisualGPT mix; FFW gate stays 0
    x, audio, mask = torch.randn(1, 4, 8), torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool)
    h = block.norm(x)
    s = torch.sigmoid(2.0 * h)
    b_vis = torch.where(s > 0.3, s, 0.0)
    b_lan = torch.where(1 - s > 0.3, 1 - s, 0.0)
    expected = b_vis * block.attend(h, audio, mask) + b_lan * x
    torch.testing.assert_close(block(x, audio, mask), expected)
    assert ((b_vis == 0) | (b_lan == 0) | ((s > 0.3) & (s < 0.7))).all()


@pytest.mark.parametrize("name,ref_cls", [("tiny-gpt2", GPT2LMHeadModel), ("tiny-llama", LlamaForCausalLM)])
@pytest.mark.parametrize("gate", ["tanh", "sigmoid"])
def test_cross_keeps_lm_keys_and_gate_zero_parity(name, ref_cls, gate):
    lm, _ = load_lm(name)
    keys = list(lm.state_dict())
    conn = build_connector(ConnectorConfig(kind="cross", gate=gate, stack=2), 32, 64, num_layers=2)
    conn.attach(decoder_layers(lm))
    assert list(lm.state_dict()) == keys  # the LM's own keys, unchanged
    pretrained, _ = load_lm(name, seed=7)
    lm.load_state_dict(pretrained.state_dict())  # pretrained weights load into the wrapped LM as is
    ref = ref_cls(pretrained.config).eval()  # transformers' own model with the same weights
    ref.load_state_dict(pretrained.state_dict())
    ids = torch.tensor([[464, 3797, 318, 257, 1332, 13, 383], [40, 588, 340, 13, 50256, 50256, 50256]])
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    audio, lengths = conn.project(torch.randn(2, 6, 32), torch.tensor([6, 3]))
    with torch.no_grad(), conn.audio(audio, lengths):
        ours = lm(inputs_embeds=lm.get_input_embeddings()(ids), attention_mask=mask).logits
    with torch.no_grad():
        theirs = ref(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ours, theirs)
    with torch.no_grad():
        for p in conn.blocks.parameters():
            if p.numel() == 1:
                p.fill_(0.5)
        with conn.audio(audio, lengths):
            opened = lm(input_ids=ids, attention_mask=mask).logits
        with conn.audio(audio * -1, lengths):
            other = lm(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(opened, theirs) and not torch.allclose(opened, other)
    conn.detach()
    with torch.no_grad():
        assert torch.equal(lm(input_ids=ids, attention_mask=mask).logits, theirs)
