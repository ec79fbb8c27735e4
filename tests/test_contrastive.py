"""The alignment losses: masked padding, duplicate captions as positives, queue and cross-process negatives,
the norm term and its ratio, the seed's loss for comparison; and the retrieval metric."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from auralm.components.contrastive import (
    AlignLossConfig,
    AlignmentLoss,
    gather_keys,
    multi_positive_nce,
    token_stats,
)
from auralm.core.errors import ConfigError
from auralm.metrics.retrieval import recall_at_k

B, T, D = 4, 6, 8


def batch(seed: int = 0, b: int = B):
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(b, T, D, generator=g), torch.randn(b, T, D, generator=g)
    lengths = torch.tensor([6, 3, 4, 2, 5, 6, 1, 3][:b])
    return pred, target, lengths, torch.arange(b)


def loss_of(cfg: AlignLossConfig, *args, push: bool = False) -> torch.Tensor:
    return AlignmentLoss(cfg, T, D)(*args, push=push)["loss"]


def test_multi_positive_nce_matches_a_row_by_row_reference():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, generator=g)
    pos = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    got = multi_positive_nce(logits, pos)
    for i in range(3):
        e = logits[i].exp()
        assert math.isclose(float(got[i]), -math.log(float(e[pos[i]].sum() / e.sum())), rel_tol=1e-5)
    with pytest.raises(ValueError, match="no positive"):
        multi_positive_nce(logits, torch.zeros_like(pos))


def test_masked_positions_do_not_change_the_loss():
    pred, target, lengths, ids = batch()
    cfg = AlignLossConfig(queue_size=0)
    base = loss_of(cfg, pred, target, lengths, ids)
    pad = ~(torch.arange(T)[None] < lengths[:, None])  # B, T
    pred2, target2 = pred.clone(), target.clone()
    pred2[pad] = torch.randn(int(pad.sum()), D) * 50
    target2[pad] = torch.randn(int(pad.sum()), D) * 50
    assert torch.allclose(loss_of(cfg, pred2, target2, lengths, ids), base, atol=1e-5)
    # the seed's loss trains on padding: the same change moves it
    seed = AlignLossConfig.seed()
    assert not torch.allclose(loss_of(seed, pred2, target2, lengths, ids), loss_of(seed, pred, target, lengths, ids))


def test_duplicate_captions_are_positives_not_negatives():
    pred, target, lengths, _ = batch()
    target[1], lengths[1] = target[0], lengths[0]  # items 0 and 1 share a caption
    ids = torch.tensor([7, 7, 8, 9])
    for level in ({"token_weight": 0.0}, {"seq_weight": 0.0}):
        cfg = AlignLossConfig(queue_size=0, norm_weight=0.0, symmetric=False, **level)
        p = pred.clone().requires_grad_(True)
        # pulling item 0's prediction toward its duplicate's target must not raise the loss
        out = AlignmentLoss(cfg, T, D)(p, target, lengths, ids, push=False)["loss"]
        (grad,) = torch.autograd.grad(out, p)
        step = F.normalize(target[1], dim=-1) - F.normalize(p[0].detach(), dim=-1)  # toward the duplicate
        assert float((grad[0] * step).sum()) <= 1e-6
        # with duplicates counted as negatives (the seed), the same pull is penalised
        neg = AlignmentLoss(cfg.replace(duplicates_positive=False), T, D)(p, target, lengths, ids, push=False)["loss"]
        assert float(neg.detach()) > float(out.detach())
    # the loss equals the loss of a batch where the duplicate's row is gone from the keys and added to positives
    cfg = AlignLossConfig(queue_size=0, norm_weight=0.0, token_weight=0.0, symmetric=False, temperature=0.5)
    got = AlignmentLoss(cfg, T, D)(pred, target, lengths, ids, push=False)["seq_nce"]
    from auralm.components.contrastive import masked_mean_vectors

    a = masked_mean_vectors(F.normalize(pred, dim=-1), lengths)
    t = masked_mean_vectors(F.normalize(target, dim=-1), lengths)
    logits = a @ t.T / 0.5
    rows = [torch.logsumexp(logits[i], 0) - torch.logsumexp(logits[i][ids == ids[i]], 0) for i in range(B)]
    assert torch.allclose(got, torch.stack(rows).mean(), atol=1e-5)


def test_queue_negatives_are_used_and_fifo():
    cfg = AlignLossConfig(queue_size=6)
    loss = AlignmentLoss(cfg, T, D)
    first = batch(0)
    out0 = loss(*first)
    assert loss.queued() == B and float(out0["negatives"]) == B - 1
    second = batch(1)
    ids2 = second[3] + 100
    out1 = loss(second[0], second[1], second[2], ids2)
    assert float(out1["negatives"]) == B - 1 + B and loss.queued() == 6  # queue full: 6 of the 8 kept
    # the queued items change the loss (they are keys), and the result matches a batch holding them as keys
    fresh = AlignmentLoss(cfg, T, D)(second[0], second[1], second[2], ids2, push=False)
    assert not torch.allclose(out1["loss"], fresh["loss"])
    assert loss.q_ids.tolist()[:2] == ids2[2:].tolist() and loss.q_ids.tolist()[2:] == [2, 3, 100, 101]
    # queued keys carry no gradient, and a queue entry with the same caption id is a positive
    p = second[0].clone().requires_grad_(True)
    again = AlignmentLoss(cfg, T, D)
    again(*first)
    again(p, second[1], second[2], ids2)["loss"].backward()
    assert p.grad is not None and again.q_pred.grad is None


def test_norm_term_and_ratio():
    pred, target, lengths, ids = batch()
    s = token_stats(target * 2, target, lengths)
    assert torch.allclose(s["norm_ratio"], torch.tensor(2.0)) and torch.allclose(s["cosine"], torch.tensor(1.0))
    assert torch.allclose(s["log_norm_mse"], torch.tensor(math.log(2) ** 2), atol=1e-6)
    cfg = AlignLossConfig(queue_size=0, seq_weight=0.0, token_weight=0.0, norm_weight=1.0)
    assert float(loss_of(cfg, target, target, lengths, ids)) < 1e-10
    assert torch.allclose(loss_of(cfg, 3 * target, target, lengths, ids), torch.tensor(math.log(3) ** 2), atol=1e-5)
    # cosine-only losses are blind to scale; the norm term is not
    nce = AlignLossConfig(queue_size=0, norm_weight=0.0)
    assert torch.allclose(loss_of(nce, 3 * pred, target, lengths, ids), loss_of(nce, pred, target, lengths, ids), atol=1e-5)


def test_seed_loss_is_per_position_one_way_micro_batch():
    cfg = AlignLossConfig.seed()
    assert (cfg.temperature, cfg.queue_size, cfg.symmetric, cfg.mask_padding) == (0.15, 0, False, False)
    pred, target, lengths, ids = batch()
    out = AlignmentLoss(cfg, T, D)(pred, target, lengths, ids)
    pn, tn = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    want = torch.stack([F.cross_entropy(pn[:, k] @ tn[:, k].T / 0.15, torch.arange(B)) for k in range(T)]).mean()
    assert torch.allclose(out["loss"], want, atol=1e-5)


def test_config_validates():
    with pytest.raises(ConfigError, match="temperature"):
        AlignLossConfig(temperature=0)
    with pytest.raises(ConfigError, match="every weight is 0"):
        AlignLossConfig(seq_weight=0, token_weight=0, norm_weight=0)
    with pytest.raises(ConfigError, match="built for"):
        AlignmentLoss(AlignLossConfig(), T, D)(*batch()[:0], *[torch.zeros(2, T, D + 1)] * 2, torch.tensor([1, 1]),
                                               torch.tensor([0, 1]))


def _worker(rank: int, world: int, out: str) -> None:
    import torch.distributed as dist

    # a file store, not a TCP port: no port picked by one process can be taken before the other binds it
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    pred, target, lengths, ids = batch(0, 8)
    mine = slice(rank * 4, rank * 4 + 4)
    loss = AlignmentLoss(AlignLossConfig(queue_size=0), T, D)
    p = pred.clone().requires_grad_(True)
    res = loss(p[mine], target[mine], lengths[mine], ids[mine])
    res["loss"].backward()
    gathered, offset = gather_keys(torch.full((2, 1), float(rank)))
    torch.save({"loss": res["loss"].detach(), "neg": res["negatives"], "grad": p.grad, "offset": offset,
                "gathered": gathered.detach()}, f"{out}/{rank}.pt")
    # both processes are done with gloo before either tears it down: a rank leaving while the other still
    # talks aborts it ("terminate called without an active exception", SIGABRT; seen once in CI)
    dist.barrier()
    dist.destroy_process_group()


def test_keys_are_gathered_across_processes(tmp_path):
    """Two gloo processes with 4 items each see 8 keys, and their mean loss and summed gradients equal one
    process's on all 8 (the gather keeps the gradient of the other process's keys)."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r = [torch.load(tmp_path / f"{i}.pt") for i in range(2)]
    assert float(r[0]["neg"]) == 7 and r[1]["offset"] == 2 and r[0]["gathered"].flatten().tolist() == [0, 0, 1, 1]
    pred, target, lengths, ids = batch(0, 8)
    p = pred.clone().requires_grad_(True)
    whole = AlignmentLoss(AlignLossConfig(queue_size=0), T, D)(p, target, lengths, ids)
    # the whole batch's loss is the mean of the rows: here, the mean of the two processes' means
    assert torch.allclose((r[0]["loss"] + r[1]["loss"]) / 2, whole["loss"], atol=1e-5)


def test_recall_at_k():
    keys = torch.eye(4)
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 0.2, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1]])
    r = recall_at_k(queries, keys, [0, 1, 3, 2], [0, 1, 2, 3], ks=(1, 2))
    assert r["r@1"] == 0.5 and r["r@2"] == 0.75 and r["median_rank"] == 1.5
    # ties count against the query: a constant embedding is not rewarded
    const = recall_at_k(torch.ones(4, 4), keys + 0 * torch.ones(4, 4), [0, 1, 2, 3], [0, 1, 2, 3], ks=(1,))
    assert const["r@1"] == 0.0
    # several correct keys: the best one counts
    assert recall_at_k(torch.tensor([[0.0, 1.0]]), torch.eye(2), [5], [5, 5], ks=(1,))["r@1"] == 1.0
    with pytest.raises(ValueError, match="no correct key"):
        recall_at_k(queries, keys, [9, 9, 9, 9], [0, 1, 2, 3])
