"""AudioLM: forward/backward on tiny configs, which parameters train, CTC, bf16 autocast, trained-weight I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auralm.components.connectors import ConnectorConfig, SpliceError
from auralm.components.lm import AUDIO_TOKEN, PlaceholderError, load_lm
from auralm.core.errors import AudioError, AuralmError
from auralm.recipes.hear.model import AudioLM, CheckpointMismatchError, HearConfig, LoraConfig


def tiny(kind="prefix", lm="tiny-gpt2", **kw) -> AudioLM:
    torch.manual_seed(0)
    return AudioLM(HearConfig(encoder="conv-tiny", lm=lm, connector=ConnectorConfig(kind=kind, **kw.pop("conn", {})), **kw))


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"states": torch.randn(2, 12, 256, generator=g), "lengths": torch.tensor([12, 7]),
            "texts": ["the cat sat", "a dog ran far"], "prompts": None}


def grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("kind,lm", [("prefix", "tiny-gpt2"), ("cross", "tiny-llama")])
def test_only_the_connector_gets_gradients_and_overfitting_works(kind, lm):
    model = tiny(kind, lm).train()
    assert not model.lm.training and not model.encoder.training
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch()
    losses = []
    for step in range(30):
        opt.zero_grad()
        out = model(b)
        out["loss"].backward()
        if step == 0:
            names = grads(model)
            assert names and all(n.startswith("connector.") for n in names)
            assert int(out["n_tokens"]) == len(model.tokenizer("the cat sat a dog ran far")["input_ids"]) + 2
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_forward_from_waveforms_runs_the_frozen_encoder():
    model = tiny()
    wavs = [np.sin(np.arange(8000) / 10).astype(np.float32), np.zeros(3000, np.float32) + 0.1]
    states, lengths = model.encode_audio(wavs)
    assert states.shape[0] == 2 and lengths.tolist() == model.encoder.output_lengths([8000, 3000]).tolist()
    out = model({"wavs": wavs, "texts": ["x", "y"]})
    out["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())


def test_bfloat16_autocast_forward_backward():
    for kind in ("prefix", "cross"):
        model = tiny(kind, ctc_weight=0.3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch())
        assert torch.isfinite(out["loss"]) and "ctc_loss" in out
        out["loss"].backward()
        assert grads(model)


def test_ctc_head_loss_and_greedy_decode():
    model = tiny(ctc_weight=1.0, conn={"stack": 2})  # 6 and 4 frames for 3 and 4 target tokens
    assert {k for k in model.trainable_state_dict() if not k.startswith("connector.")} == {"ctc_blank.weight", "ctc_blank.bias", "ctc_vocab"}
    b = batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = model.ctc_loss(*model.connector.project(b["states"], b["lengths"]), b["texts"])
        loss.backward()
        opt.step()
        first = first or float(loss.detach())
    assert float(loss.detach()) < 0.5 * first
    texts = model.ctc_greedy_decode(b)
    assert texts == ["the cat sat", "a dog ran far"]


def test_trainable_state_dict_round_trip_and_other_width_is_refused():
    model = tiny("cross", "tiny-gpt2")
    state = model.trainable_state_dict()
    assert state and all(k.startswith("connector.") for k in state)
    assert sum(v.numel() for v in state.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    other = tiny("cross", "tiny-gpt2")
    with torch.no_grad():
        for p in other.connector.parameters():
            p.add_(1.0)
    other.load_trainable_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in other.trainable_state_dict().items())
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tok = load_lm("tiny-gpt2")
    narrow = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_embd=32, n_layer=2, n_head=4)).eval()
    small = AudioLM(HearConfig(encoder="conv-tiny", lm="narrow", connector=ConnectorConfig(kind="cross")), lm=narrow, tokenizer=tok)
    assert small.frozen_parts()["lm"]["revision"].startswith("w")
    with pytest.raises(CheckpointMismatchError, match="width 32"):
        small.load_trainable_state_dict(state)
    with pytest.raises(CheckpointMismatchError, match="missing"):
        model.load_trainable_state_dict({k: v for k, v in state.items() if "blocks.1." not in k})


def test_lora_stage_two_trains_connector_and_adapters_only():
    for lm in ("tiny-gpt2", "tiny-llama"):
        model = tiny("prefix", lm)
        before = model.trainable_state_dict().keys()
        model.add_lora(LoraConfig(r=4, alpha=8))
        assert model.config.lora.r == 4 and model.train().lm.training
        state = model.trainable_state_dict()
        lora = [k for k in state if "lora_" in k]
        assert lora and set(state) == set(before) | set(lora)
        out = model(batch())
        out["loss"].backward()
        names = grads(model)
        assert any("lora_" in n for n in names) and all(n.startswith("connector.") or "lora_" in n for n in names)
        plain = tiny("prefix", lm)
        with pytest.raises(CheckpointMismatchError, match="LoRA"):
            plain.load_trainable_state_dict(state)
        again = AudioLM(model.config.replace(encoder="conv-tiny"))  # lora.r > 0 in the config: adapters built
        again.load_trainable_state_dict(state)


def test_frozen_parts_and_bad_inputs():
    model = tiny()
    parts = model.frozen_parts()
    assert parts["encoder"]["name"] == "conv-tiny" and parts["encoder"]["revision"] == model.encoder.revision
    assert parts["lm"] == {"name": "tiny-gpt2", "revision": model.lm.auralm_revision}
    b = batch()
    with pytest.raises(PlaceholderError, match="2 audio placeholder"):
        model({**b, "prompts": [f"{AUDIO_TOKEN} and {AUDIO_TOKEN}"] * 2})
    with pytest.raises(AudioError, match="length zero"):
        model({**b, "lengths": torch.tensor([12, 0])})
    ids = torch.tensor([[model.audio_token_id] * 2])
    with pytest.raises(SpliceError, match="2 audio placeholder positions but 3 audio frames"):
        from auralm.components.connectors import splice_audio

        splice_audio(torch.zeros(1, 2, 64), ids, torch.zeros(1, 3, 64), torch.tensor([3]), model.audio_token_id)
    with pytest.raises(AuralmError, match="texts"):
        model({**b, "texts": None})


@pytest.mark.parametrize("lm", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("kind", ["prefix", "cross"])
def test_loss_on_answer_columns_equals_full_logits_loss(lm, kind):
    """forward() runs the LM head on answer columns only; the loss must equal the all-positions loss."""
    import torch.nn.functional as F

    from auralm.components.connectors import ConnectorConfig
    from auralm.recipes.hear.model import AudioLM, HearConfig

    torch.manual_seed(0)
    m = AudioLM(HearConfig(encoder="conv-tiny", lm=lm, connector=ConnectorConfig(kind=kind)))
    for p in m.connector.parameters():
        torch.nn.init.normal_(p, std=0.05)  # open the gates so the audio matters
    batch = {"wavs": [torch.randn(16000).numpy(), torch.randn(9000).numpy()], "texts": ["hello there world", "a b"]}
    out = m(batch)
    x = m.build_inputs(batch, answers=True, left_pad=False)
    with m.audio_context(x["audio"], x["audio_lengths"]):
        logits = m.lm(inputs_embeds=x["embeds"], attention_mask=x["mask"], use_cache=False).logits
    t = x["labels"][:, 1:]
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), t.reshape(-1), ignore_index=-100,
                          reduction="sum") / (t != -100).sum()
    assert torch.allclose(out["lm_loss"], ref, atol=1e-5)


def _soft_model(**kw):
    from auralm.components.connectors import ConnectorConfig
    from auralm.recipes.hear.model import AudioLM, HearConfig

    torch.manual_seed(0)
    return AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-llama", connector=ConnectorConfig(kind="prefix"),
                              ctc_weight=1.0, feed="ctc_soft", **kw))


def test_ctc_compress_drops_blanks_merges_runs_and_mixes_embeddings(monkeypatch):
    m = _soft_model(soft_top_k=2)
    V, blank = m.vocab_size, m.vocab_size
    E = m.lm.get_input_embeddings().weight
    # frames: a a blank b | b b  (clip 2 has length 2 of 4)
    best = [[5, 5, blank, 7], [9, 9, blank, blank]]
    logp = torch.full((2, 4, V + 1), -30.0)
    for b, row in enumerate(best):
        for t, c in enumerate(row):
            logp[b, t, c] = 0.0
    logp[0, 0, 6] = -1.0  # a second, less likely token in the first frame of run "a"
    monkeypatch.setattr(m, "ctc_log_probs", lambda audio: logp)
    out, lengths = m.ctc_compress(torch.zeros(2, 4, m.lm_dim), torch.tensor([4, 2]))
    assert lengths.tolist() == [2, 1]
    # run "a": mean posterior over its two frames of tokens 5 and 6, top-2, renormalised
    p5, p6 = 1.0, (torch.tensor(-1.0).exp().item()) / 2
    w5, w6 = p5 / (p5 + p6), p6 / (p5 + p6)
    assert torch.allclose(out[0, 0], w5 * E[5] + w6 * E[6], atol=1e-5)
    assert torch.allclose(out[0, 1], E[7], atol=1e-4)
    assert torch.allclose(out[1, 0], E[9], atol=1e-4) and torch.equal(out[1, 1], torch.zeros(m.lm_dim))
    m.config = m.config.replace(soft_top_k=1)  # hard feed: the top token's own embedding, exactly
    hard, _ = m.ctc_compress(torch.zeros(2, 4, m.lm_dim), torch.tensor([4, 2]))
    assert torch.equal(hard[0, 0], E[5]) and torch.equal(hard[0, 1], E[7]) and torch.equal(hard[1, 0], E[9])

    # feed_noise: in training some runs read their next-best token or vanish; in eval nothing changes
    m.config = m.config.replace(feed_noise=0.6)
    assert torch.equal(m.eval().ctc_compress(torch.zeros(2, 4, m.lm_dim), torch.tensor([4, 2]))[0], hard)
    m.train()
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        noisy, n = m.ctc_compress(torch.zeros(2, 4, m.lm_dim), torch.tensor([4, 2]))
        first = noisy[0, 0]
        seen.add(("len", int(n[0])))
        seen.add(("a", "best" if torch.equal(first, E[5]) else "next" if torch.equal(first, E[6]) else "other"))
        assert int(n[1]) == 1  # a clip's only run is never dropped
    assert {("len", 1), ("len", 2), ("a", "best"), ("a", "next")} <= seen


def test_ctc_soft_trains_the_projector_through_the_lm_loss():
    m = _soft_model()
    batch = {"wavs": [np.random.RandomState(0).randn(16000).astype("float32")], "texts": ["hello world"]}
    out = m(batch)
    out["lm_loss"].backward()  # the LM loss alone must reach the projector through the mixture weights
    grads = [p.grad for p in m.connector.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert m.generate({"wavs": batch["wavs"]}) is not None


def test_lm_weight_zero_trains_ctc_without_running_the_lm(monkeypatch):
    m = _soft_model(lm_weight=0.0)
    monkeypatch.setattr(m.lm, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("LM was run")))
    out = m({"wavs": [np.zeros(16000, dtype="float32") + 0.1], "texts": ["hello world"]})
    assert torch.equal(out["loss"], out["ctc_loss"]) and int(out["n_tokens"]) > 0


def test_ctc_soft_needs_a_ctc_head():
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.model import HearConfig

    with pytest.raises(ConfigError, match="ctc_soft"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", feed="ctc_soft")
    with pytest.raises(ConfigError, match="lm_weight = 0"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", lm_weight=0.0)


def test_ctc_vocab_train_is_a_shortlist_saved_with_the_weights():
    m = _soft_model(ctc_vocab="train")
    with pytest.raises(AuralmError, match="no vocabulary"):
        m.ctc_log_probs(torch.zeros(1, 2, m.lm_dim))
    texts = ["hello world", "world peace"]
    m.set_ctc_vocab(texts)
    ids = sorted({i for t in texts for i in m.tokenizer(" " + t, add_special_tokens=False).input_ids})
    assert m.ctc_vocab.tolist() == ids
    assert m.ctc_log_probs(torch.zeros(1, 3, m.lm_dim)).shape == (1, 3, len(ids) + 1)
    wav = [np.random.RandomState(1).randn(16000).astype("float32")]
    assert torch.isfinite(m({"wavs": wav, "texts": ["hello world"]})["ctc_loss"])
    state = m.trainable_state_dict()
    fresh = _soft_model(ctc_vocab="train")
    fresh.load_trainable_state_dict(state)  # the vocabulary (any size) comes with the weights
    assert torch.equal(fresh.ctc_vocab, m.ctc_vocab)
    assert fresh.ctc_greedy_decode({"wavs": wav}) == m.ctc_greedy_decode({"wavs": wav})


def test_ctc_vocab_common_spells_rare_tokens_with_frequent_pieces():
    m = _soft_model(ctc_vocab="common", ctc_vocab_size=3000)
    assert len(m.ctc_vocab) == 3000 and int(m.ctc_vocab.max()) == 2999
    text = "photosynthesis unbelievably"
    ids = m.tokenizer(" " + text, add_special_tokens=False).input_ids
    assert any(i >= 3000 for i in ids)  # rare tokens: with ctc_vocab=train-style dropping they would vanish
    classes = m._ctc_classes(ids)
    pieces = m.ctc_vocab[classes].tolist()
    assert all(p < 3000 for p in pieces) and len(pieces) > len(ids)
    assert m.tokenizer.decode(pieces) == " " + text  # the spelling says the same text
    wav = [np.random.RandomState(2).randn(16000).astype("float32")]
    assert torch.isfinite(m({"wavs": wav, "texts": [text]})["ctc_loss"])
    with pytest.raises(AuralmError, match="ctc_vocab must be one of"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_vocab="rare")


def test_sampled_ctc_softmax_is_unbiased_trains_and_is_off_in_eval():
    model = tiny(ctc_weight=1.0, conn={"stack": 2}, ctc_negatives=40)
    K = len(model.ctc_vocab)
    flat = torch.tensor([5, 9, 5, 17])
    classes, bias, remapped = model._sampled_classes(flat)
    assert classes[:3].tolist() == [5, 9, 17] and remapped.tolist() == [0, 1, 0, 2]
    assert len(set(classes.tolist())) == 43 and bias[:3].eq(0).all()
    assert torch.allclose(bias[3:], torch.tensor((K - 3) / 40).log())
    # the estimated partition function has the exact one as its mean
    logits = torch.randn(K, generator=torch.Generator().manual_seed(1))
    est = torch.stack([(logits[c] + b).exp().sum() for c, b, _ in (model._sampled_classes(flat) for _ in range(3000))])
    assert est.mean() == pytest.approx(float(logits.exp().sum()), rel=0.03)
    # eval mode, and a sample as large as the vocabulary, use the full softmax
    b = batch()
    audio, lengths = model.connector.project(b["states"], b["lengths"])
    full = tiny(ctc_weight=1.0, conn={"stack": 2}).ctc_loss(audio, lengths, b["texts"])
    assert torch.equal(model.eval().ctc_loss(audio, lengths, b["texts"]), full)
    assert model.train()._sampled_classes(flat) is not None
    assert tiny(ctc_weight=1.0, conn={"stack": 2}, ctc_negatives=K).train()._sampled_classes(flat) is None
    # trained with the sampled softmax, the full-softmax greedy decoding learns the transcripts
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        model.ctc_loss(*model.connector.project(b["states"], b["lengths"]), b["texts"]).backward()
        opt.step()
    assert model.eval().ctc_greedy_decode(b) == ["the cat sat", "a dog ran far"]


def test_learned_ctc_head_starts_as_the_embeddings_head_trains_and_round_trips():
    plain, learned = _soft_model(ctc_vocab="train"), _soft_model(ctc_vocab="train", ctc_head="learned")
    texts = ["hello world", "the cat sat on the mat"]
    for m in (plain, learned):
        m.set_ctc_vocab(texts)
    K = len(learned.ctc_vocab)
    assert learned.ctc_delta.shape == (K, learned.lm_dim) and learned.ctc_bias.shape == (K,)
    audio = torch.randn(2, 5, learned.lm_dim)
    assert torch.equal(plain.ctc_log_probs(audio), learned.ctc_log_probs(audio))  # zero offsets at the start
    state = learned.trainable_state_dict()
    assert {"ctc_delta", "ctc_bias", "ctc_vocab"} <= set(state)
    wav = [np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1] * 2
    learned.train()({"wavs": wav, "texts": texts})["ctc_loss"].backward()
    assert learned.ctc_delta.grad.abs().sum() > 0 and learned.ctc_bias.grad.abs().sum() > 0
    with torch.no_grad():
        learned.ctc_delta.add_(0.5)
    fresh = _soft_model(ctc_vocab="train", ctc_head="learned")  # no vocabulary yet: the head comes with the state
    fresh.load_trainable_state_dict(learned.trainable_state_dict())
    assert torch.equal(fresh.eval().ctc_log_probs(audio), learned.eval().ctc_log_probs(audio))
    with pytest.raises(AuralmError, match="ctc_head"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0, ctc_head="mlp")
