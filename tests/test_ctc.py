"""auralm.components.ctc.CTCHead on its own: a frozen embedding matrix, a learned blank, no LM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from auralm.components.ctc import CTCHead
from auralm.core.errors import ConfigError


def head(vocab=(3, 5, 7, 9, 11), negatives=0, V=20, H=8) -> CTCHead:
    torch.manual_seed(0)
    emb = nn.Embedding(V, H).requires_grad_(False)
    return CTCHead(emb, vocab, negatives=negatives)


def test_classes_log_probs_and_state():
    ctc = head(vocab=[9, 3, 5, 3, 11, 7])  # any order, duplicates: sorted unique
    assert ctc.vocab.tolist() == [3, 5, 7, 9, 11] and ctc.num_classes == 6
    assert ctc.classes([5, 4, 11, 3]).tolist() == [1, 4, 0]  # 4 is not a class: dropped
    audio = torch.randn(2, 6, 8)
    logp = ctc.log_probs(audio)
    assert logp.shape == (2, 6, 6) and logp.dtype == torch.float32  # B, T', K+1
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(logp[..., :5] - logp[..., 5:], audio @ ctc.embeddings.weight[ctc.vocab].T)  # blank logit 0
    assert set(ctc.state_dict()) == {"blank.weight", "blank.bias", "vocab"}  # the embeddings are not the head's
    assert [n for n, _ in ctc.named_parameters()] == ["blank.weight", "blank.bias"]
    with pytest.raises(ConfigError, match="0..19"):
        ctc.set_vocab([3, 20])
    with pytest.raises(ConfigError, match="no vocabulary"):
        head(vocab=None).log_probs(audio)


def fit(ctc: CTCHead) -> tuple[float, float]:
    """Train a linear projector and ``ctc`` on two items for 150 steps; check greedy decoding reads their
    targets; return the first and the last loss."""
    features = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(1))
    proj = nn.Linear(4, 8)
    lengths, targets = torch.tensor([8, 5]), [[3, 7, 7, 11], [9, 5]]
    opt = torch.optim.Adam([*proj.parameters(), *ctc.parameters()], lr=3e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = ctc.loss(proj(features), lengths, targets)
        loss.backward()
        opt.step()
        first = first or float(loss.detach())
    assert ctc.greedy_decode(proj(features), lengths) == targets
    return first, float(loss.detach())


def test_loss_trains_and_greedy_decode_reads_the_targets():
    first, last = fit(head())
    assert last < 0.1 * first


def test_sampled_softmax_is_unbiased_and_off_when_it_covers_every_class():
    ctc = head(vocab=range(100), negatives=40, V=100)
    K = len(ctc.vocab)
    flat = torch.tensor([5, 9, 5, 17])
    classes, bias, remapped = ctc.sampled_classes(flat)
    assert classes[:3].tolist() == [5, 9, 17] and remapped.tolist() == [0, 1, 0, 2]
    assert len(set(classes.tolist())) == 43 and bias[:3].eq(0).all()
    assert torch.allclose(bias[3:], torch.tensor((K - 3) / 40).log())
    # the estimated partition function has the exact one as its mean
    logits = torch.randn(K, generator=torch.Generator().manual_seed(1))
    est = torch.stack([(logits[c] + b).exp().sum() for c, b, _ in (ctc.sampled_classes(flat) for _ in range(3000))])
    assert est.mean() == pytest.approx(float(logits.exp().sum()), rel=0.03)
    assert head(vocab=range(100), negatives=97, V=100).sampled_classes(flat) is None
    # eval mode: the full softmax, as without negatives
    audio, lengths, targets = torch.randn(2, 6, 8), torch.tensor([6, 4]), [[5, 9], [17]]
    assert torch.equal(ctc.eval().loss(audio, lengths, targets), head(vocab=range(100), V=100).loss(audio, lengths, targets))
    assert not torch.equal(ctc.train().loss(audio, lengths, targets), ctc.eval().loss(audio, lengths, targets))


def test_compress_drops_blanks_merges_runs_and_mixes_embeddings(monkeypatch):
    ctc = head(vocab=range(20))
    E, blank = ctc.embeddings.weight, 20
    # frames: a a blank b | b b  (clip 2 has length 2 of 4)
    best = [[5, 5, blank, 7], [9, 9, blank, blank]]
    logp = torch.full((2, 4, 21), -30.0)
    for b, row in enumerate(best):
        for t, c in enumerate(row):
            logp[b, t, c] = 0.0
    logp[0, 0, 6] = -1.0  # a second, less likely token in the first frame of run "a"
    monkeypatch.setattr(ctc, "log_probs", lambda audio: logp)
    out, lengths, ids = ctc.compress(torch.zeros(2, 4, 8), torch.tensor([4, 2]), top_k=2)
    assert out.shape == (2, 2, 8) and lengths.tolist() == [2, 1] and ids == [[5, 7], [9]]
    # run "a": mean posterior over its two frames of tokens 5 and 6, top-2, renormalised
    p5, p6 = 1.0, (torch.tensor(-1.0).exp().item()) / 2
    w5, w6 = p5 / (p5 + p6), p6 / (p5 + p6)
    assert torch.allclose(out[0, 0], w5 * E[5] + w6 * E[6], atol=1e-5)
    assert torch.allclose(out[0, 1], E[7], atol=1e-4)
    assert torch.allclose(out[1, 0], E[9], atol=1e-4) and torch.equal(out[1, 1], torch.zeros(8))
    hard, _, _ = ctc.compress(torch.zeros(2, 4, 8), torch.tensor([4, 2]), top_k=1)  # the top token's own embedding
    assert torch.equal(hard[0, 0], E[5]) and torch.equal(hard[0, 1], E[7]) and torch.equal(hard[1, 0], E[9])
    # a clip with only blank frames keeps its least blank frame
    logp[1] = -30.0
    logp[1, :, blank] = torch.tensor([-0.1, 0.0, 0.0, 0.0])  # frame 0 is the least blank ...
    logp[1, 0, 12] = -2.4  # ... and token 12 its best other class
    _, lengths, ids = ctc.compress(torch.zeros(2, 4, 8), torch.tensor([4, 2]))
    assert lengths.tolist() == [2, 1] and ids[1] == [12]


def test_pool_feeds_the_mean_of_each_runs_own_frames(monkeypatch):
    ctc = head(vocab=range(20))
    blank = 20
    best = [[5, 5, blank, 7], [blank, blank, blank, blank]]  # clip 2: blank only (length 3 of 4)
    logp = torch.full((2, 4, 21), -30.0)
    for b, row in enumerate(best):
        for t, c in enumerate(row):
            logp[b, t, c] = 0.0
    logp[1, 1, blank] = -0.2  # frame 1 is clip 2's least blank frame ...
    logp[1, 1, 13] = -2.0  # ... and token 13 its best other class
    monkeypatch.setattr(ctc, "log_probs", lambda audio: logp)
    audio = torch.arange(2 * 4 * 8, dtype=torch.float32).reshape(2, 4, 8).requires_grad_(True)
    out, lengths, ids = ctc.pool(audio, torch.tensor([4, 3]))
    assert out.shape == (2, 2, 8) and lengths.tolist() == [2, 1] and ids == [[5, 7], [13]]
    assert torch.allclose(out[0, 0], audio[0, :2].mean(0)) and torch.equal(out[0, 1], audio[0, 3])
    assert torch.equal(out[1, 0], audio[1, 1]) and torch.equal(out[1, 1], torch.zeros(8))
    out.sum().backward()  # gradients reach the kept frames only
    assert audio.grad[0, :, 0].tolist() == [0.5, 0.5, 0.0, 1.0] and audio.grad[1, :, 0].tolist() == [0, 1, 0, 0]


def test_cosine_scoring_reads_directions_trains_and_saves_its_scale():
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8).requires_grad_(False)
    ctc = CTCHead(emb, (3, 5, 7, 9, 11), scoring="cosine")
    audio = torch.randn(2, 6, 8)
    logp = ctc.log_probs(audio)
    torch.testing.assert_close(logp, ctc.log_probs(5.0 * audio))  # a frame's length does not count, only its direction
    E = torch.nn.functional.normalize(emb.weight[ctc.vocab], dim=-1)
    cos = torch.nn.functional.normalize(audio, dim=-1) @ E.T
    torch.testing.assert_close(logp[..., :5] - logp[..., 5:], 16.0 * cos)  # s = 16 at the start, blank logit 0
    assert set(ctc.state_dict()) == {"log_scale", "blank.weight", "blank.bias", "vocab"}
    assert set(head().state_dict()) == {"blank.weight", "blank.bias", "vocab"}  # dot heads save what they always did
    first, last = fit(ctc)
    assert last < 0.1 * first and float(ctc.log_scale.detach()) != pytest.approx(float(torch.tensor(16.0).log()))
    with pytest.raises(ConfigError, match="dot, cosine"):
        CTCHead(emb, (3, 5), scoring="angle")


def test_nbest_scores_are_ctc_log_probs_best_first():
    """flashlight-text's prefix beam search against torch's CTC loss: each hypothesis scores the log-probability
    of its label sequence over every alignment, and the best of all label sequences (brute force) comes first."""
    import itertools

    from torch.nn import functional as F

    ctc = head(vocab=(3, 5, 7))
    torch.manual_seed(2)
    audio = torch.randn(2, 5, 8) * 2
    lengths = torch.tensor([5, 3])
    found = ctc.nbest(audio, lengths, beam=400, per_frame=4)  # a beam that holds every prefix: exact
    logp = ctc.log_probs(audio).detach()

    def exact(b: int, ids: list[int]) -> float:
        n = int(lengths[b])
        if not ids:
            return float(logp[b, :n, 3].sum())
        classes = ctc.classes(ids)
        return -float(F.ctc_loss(logp[b : b + 1, :n].transpose(0, 1), classes[None], torch.tensor([n]),
                                 torch.tensor([len(classes)]), blank=3, reduction="sum"))  # fmt: skip

    for b, n in enumerate(lengths.tolist()):
        scores = [s for _, s in found[b]]
        assert len(found[b]) > 3 and scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in found[b]}) == len(found[b])  # one entry per label sequence
        for ids, score in found[b]:
            assert score == pytest.approx(exact(b, ids), abs=1e-4)
        every = [list(s) for k in range(n + 1) for s in itertools.product((3, 5, 7), repeat=k)]
        best = max(every, key=lambda ids: exact(b, ids))
        assert found[b][0][0] == best
    with pytest.raises(ConfigError, match="beam"):
        ctc.nbest(audio, lengths, beam=0)
