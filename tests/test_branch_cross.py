"""Multi-branch gated cross-attention (components/connectors/cross.py): identity at init, masks from lengths,
empty branches, the three gates, LM keys unchanged."""

from __future__ import annotations

import pytest
import torch

from auralm.components.connectors import BRANCH_GATES, MultiBranchCrossConnector, resurrect_mix
from auralm.components.lm import decoder_layers, load_lm

DIMS = {"audio": 12, "tags": 8, "metadata": 10}


def _lm(name: str = "tiny-gpt2"):
    torch.manual_seed(0)
    lm, tok = load_lm(name)
    return lm, tok


def _rows(B: int = 3, seed: int = 0, lengths: dict | None = None):
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or {"audio": [5, 2, 3], "tags": [4, 0, 1], "metadata": [1, 1, 0]}
    T = {"audio": 5, "tags": 4, "metadata": 1}
    return {b: (torch.randn(B, T[b], d, generator=g), torch.tensor(lengths[b])) for b, d in DIMS.items()}


def _ids(tok, B: int = 3):
    return torch.tensor([tok("a playlist of slow organ music")["input_ids"]] * B)


def _perturb(conn: MultiBranchCrossConnector) -> None:
    """Move every zero-initialised gate/projection away from zero (as training would)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in conn.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("gate", BRANCH_GATES)
@pytest.mark.parametrize("lm_name", ["tiny-gpt2", "tiny-llama"])
def test_identity_at_init(gate, lm_name):
    lm, tok = _lm(lm_name)
    ids = _ids(tok)
    keys = set(lm.state_dict())
    with torch.no_grad():
        plain = lm(ids).logits
    conn = MultiBranchCrossConnector(DIMS, lm.config.hidden_size, len(decoder_layers(lm)), every_n=1, gate=gate).eval()
    conn.attach(decoder_layers(lm))
    with torch.no_grad(), conn.memories(_rows()):
        fused = lm(ids).logits
    assert torch.equal(fused, plain)  # bit for bit
    assert set(lm.state_dict()) == keys  # the LM's keys are unchanged (the blocks live in the connector)
    _perturb(conn)
    with torch.no_grad(), conn.memories(_rows()):
        moved = lm(ids).logits
    assert not torch.allclose(moved, plain)  # the gates are live once they move


@pytest.mark.parametrize("gate", BRANCH_GATES)
def test_padded_rows_never_reach_the_logits(gate):
    lm, tok = _lm()
    conn = MultiBranchCrossConnector(DIMS, 64, 2, gate=gate).eval()
    conn.attach(decoder_layers(lm))
    _perturb(conn)
    ids = _ids(tok)
    rows = _rows()
    with torch.no_grad(), conn.memories(rows):
        base = lm(ids).logits
    changed = {}
    for b, (states, lengths) in rows.items():  # overwrite every padded position with large noise
        s = states.clone()
        for i, n in enumerate(lengths.tolist()):
            s[i, n:] = 1e3 * torch.randn_like(s[i, n:])
        changed[b] = (s, lengths)
    with torch.no_grad(), conn.memories(changed):
        assert torch.equal(lm(ids).logits, base)
    valid = {**rows, "audio": (rows["audio"][0] + 1.0, rows["audio"][1])}  # a valid value does change them
    with torch.no_grad(), conn.memories(valid):
        assert not torch.allclose(lm(ids).logits, base)


def test_an_empty_branch_equals_a_missing_one():
    lm, tok = _lm()
    conn = MultiBranchCrossConnector(DIMS, 64, 2, gate="resurrect").eval()
    conn.attach(decoder_layers(lm))
    _perturb(conn)
    ids = _ids(tok)
    rows = _rows(lengths={"audio": [5, 2, 3], "tags": [0, 0, 0], "metadata": [1, 1, 1]})
    with torch.no_grad(), conn.memories(rows):
        empty = lm(ids).logits
    with torch.no_grad(), conn.memories({k: v for k, v in rows.items() if k != "tags"}):
        missing = lm(ids).logits
    assert torch.isfinite(empty).all() and torch.equal(empty, missing)


def test_every_n_and_detach():
    lm, tok = _lm()
    conn = MultiBranchCrossConnector(DIMS, 64, 2, every_n=2)
    assert conn.layer_ids == [0] and list(conn.blocks) == ["0"]
    conn.attach(decoder_layers(lm))
    _perturb(conn)
    ids = _ids(tok)
    with torch.no_grad():
        plain = lm(ids).logits
        conn.detach()
        with conn.memories(_rows()):
            assert torch.equal(lm(ids).logits, plain)  # detached: the plain LM


def test_resurrect_mix_thresholds():
    lang, enc = torch.full((5,), 2.0), torch.full((5,), 10.0)
    alpha = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    out = resurrect_mix(lang, enc, alpha, tau=0.2)
    # alpha 0.1 <= tau: the language path is cut; alpha 0.9 >= 1 - tau: the encoder path is cut
    assert out.tolist() == pytest.approx([0.9 * 10, 0.3 * 2 + 0.7 * 10, 0.5 * 2 + 0.5 * 10, 0.7 * 2 + 0.3 * 10, 0.9 * 2])


def test_bad_rows_are_named():
    conn = MultiBranchCrossConnector(DIMS, 64, 2)
    with pytest.raises(ValueError, match="unknown branch"):
        conn.project({"lyrics": (torch.zeros(1, 1, 4), torch.tensor([1]))})
    with pytest.raises(ValueError, match="branch tags: lengths must be in 0..4"):
        conn.project({"tags": (torch.zeros(1, 4, 8), torch.tensor([5]))})
    with pytest.raises(ValueError, match="width 7"):
        conn.project({"tags": (torch.zeros(1, 4, 7), torch.tensor([2]))})


def test_gradients_reach_every_branch():
    lm, tok = _lm()
    conn = MultiBranchCrossConnector(DIMS, 64, 2, gate="resurrect")
    conn.attach(decoder_layers(lm))
    lm.requires_grad_(False)
    ids = _ids(tok)
    for _ in range(2):  # step 1 moves the zero blend; step 2 reaches the projectors
        conn.zero_grad()
        with conn.memories(_rows()):
            lm(ids, labels=ids).loss.backward()
        with torch.no_grad():
            for p in conn.parameters():
                if p.grad is not None:
                    p.sub_(0.1 * p.grad)
    for b in DIMS:
        assert conn.projectors[b].net[0].weight.grad.abs().sum() > 0, b


def test_first_layer_counts_from_the_top():
    assert MultiBranchCrossConnector(DIMS, 64, 30, every_n=2, first_layer=-6).layer_ids == [24, 26, 28]
    assert MultiBranchCrossConnector(DIMS, 64, 4, first_layer=1).layer_ids == [1, 2, 3]
    with pytest.raises(ValueError, match="outside"):
        MultiBranchCrossConnector(DIMS, 64, 4, first_layer=4)
