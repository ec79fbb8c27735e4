"""AudioLM: forward/backward on tiny configs, which parameters train, CTC, bf16 autocast, trained-weight I/O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auralm.components.connectors import ConnectorConfig, SpliceError
from auralm.components.lm import AUDIO_TOKEN, PlaceholderError, load_lm, text_ids
from auralm.core.errors import AudioError, AuralmError
from auralm.recipes.hear.model import (
    TRAINABLE_PREFIXES,
    AudioLM,
    HearConfig,
    LoraConfig,
)
from auralm.training.checkpoint import CheckpointMismatchError


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


def ctc_loss(model, b):
    """The model's CTC loss on a batch of cached states (the LM is not run)."""
    return model.ctc.loss(*model.connector.project(b["states"], b["lengths"]), [text_ids(model.tokenizer, t) for t in b["texts"]])


def test_ctc_head_loss_and_greedy_decode():
    model = tiny(ctc_weight=1.0, conn={"stack": 2})  # 6 and 4 frames for 3 and 4 target tokens
    assert {k for k in model.trainable_state_dict() if not k.startswith("connector.")} == {"ctc.blank.weight", "ctc.blank.bias", "ctc.vocab"}
    assert {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith(TRAINABLE_PREFIXES)} == set()
    b = batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = ctc_loss(model, b)
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


def test_ctc_soft_feeds_the_compressed_runs_and_their_ids(monkeypatch):
    m = _soft_model(soft_top_k=1)
    V = m.vocab_size  # ctc_vocab=all: class k is token k, the blank is V
    E = m.lm.get_input_embeddings().weight
    logp = torch.full((1, 4, V + 1), -30.0)
    for t, c in enumerate([5, 5, V, 7]):
        logp[0, t, c] = 0.0
    monkeypatch.setattr(m.ctc, "log_probs", lambda audio: logp)
    monkeypatch.setattr(m.connector, "project", lambda states, lengths: (torch.zeros(1, 4, m.lm_dim), torch.tensor([4])))
    x = m.build_inputs({"states": torch.zeros(1, 16, 256), "lengths": torch.tensor([16])}, answers=False, left_pad=True)
    assert x["lm_audio_lengths"].tolist() == [2] and x["lm_audio_ids"] == [[5, 7]]
    rows = x["embeds"][0]  # L, H: the two runs are spliced as the embeddings of tokens 5 and 7, in order
    assert any(torch.equal(rows[i], E[5]) and torch.equal(rows[i + 1], E[7]) for i in range(len(rows) - 1))


def test_ctc_soft_trains_the_projector_through_the_lm_loss():
    m = _soft_model()
    batch = {"wavs": [np.random.RandomState(0).randn(16000).astype("float32")], "texts": ["hello world"]}
    out = m(batch)
    out["lm_loss"].backward()  # the LM loss alone must reach the projector through the mixture weights
    grads = [p.grad for p in m.connector.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert m.generate({"wavs": batch["wavs"]}) is not None


def test_ctc_pool_feeds_continuous_runs_at_the_embedding_norm(monkeypatch):
    torch.manual_seed(0)
    m = _soft_model(soft_top_k=1).__class__(_soft_model().config.replace(feed="ctc_pool", audio_norm="embedding"))
    V = m.vocab_size
    norm = m.lm.get_input_embeddings().weight.norm(dim=-1).mean()
    logp = torch.full((1, 4, V + 1), -30.0)
    for t, c in enumerate([5, 5, V, 7]):
        logp[0, t, c] = 0.0
    monkeypatch.setattr(m.ctc, "log_probs", lambda audio: logp)
    frames = torch.randn(1, 4, m.lm_dim) * 50
    monkeypatch.setattr(m.connector, "project", lambda states, lengths: (frames, torch.tensor([4])))
    x = m.build_inputs({"states": torch.zeros(1, 16, 256), "lengths": torch.tensor([16])}, answers=False, left_pad=True)
    assert x["lm_audio_lengths"].tolist() == [2] and x["lm_audio_ids"] == [[5, 7]]
    run_a = frames[0, :2].mean(0)
    want = [run_a * norm / run_a.norm(), frames[0, 3] * norm / frames[0, 3].norm()]  # the audio itself, rescaled
    rows = x["embeds"][0]
    assert any(torch.allclose(rows[i], want[0], atol=1e-5) and torch.allclose(rows[i + 1], want[1], atol=1e-5)
               for i in range(len(rows) - 1))


def test_ctc_pool_trains_the_projector_through_the_lm_loss():
    from auralm.components.connectors import ConnectorConfig
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.model import AudioLM, HearConfig

    torch.manual_seed(0)
    m = AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-llama", connector=ConnectorConfig(kind="prefix"),
                           ctc_weight=1.0, feed="ctc_pool", audio_norm="embedding"))
    batch = {"wavs": [np.random.RandomState(0).randn(16000).astype("float32")], "texts": ["hello world"]}
    m(batch)["lm_loss"].backward()  # no token lookup on the way: the LM loss reaches the projector directly
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.connector.parameters())
    assert m.generate({"wavs": batch["wavs"]}) is not None
    with pytest.raises(ConfigError, match="ctc_pool needs"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", feed="ctc_pool")
    with pytest.raises(ConfigError, match="audio_norm"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0, feed="ctc_soft", audio_norm="embedding")


def test_pool_align_loss_is_one_minus_the_cosine_to_each_runs_token(monkeypatch):
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.model import HearConfig

    torch.manual_seed(0)
    m = _soft_model().__class__(_soft_model().config.replace(feed="ctc_pool", audio_norm="embedding", pool_align_weight=0.5))
    V, E = m.vocab_size, m.lm.get_input_embeddings().weight
    logp = torch.full((1, 4, V + 1), -30.0)
    for t, c in enumerate([5, 5, V, 7]):
        logp[0, t, c] = 0.0
    monkeypatch.setattr(m.ctc, "log_probs", lambda audio: logp)
    frames = torch.stack([E[5] * 3, E[5] * 3, E[1], -E[7]])[None].detach().requires_grad_()  # run 1 points at token 5, run 2 away from 7
    monkeypatch.setattr(m.connector, "project", lambda states, lengths: (frames, torch.tensor([4])))
    monkeypatch.setattr(m, "_ctc_loss", lambda *a: (torch.tensor(0.0), torch.tensor(2)))
    out = m({"states": torch.zeros(1, 16, 256), "lengths": torch.tensor([16]), "texts": ["hello world"]})
    assert torch.allclose(out["pool_align_loss"], torch.tensor((0.0 + 2.0) / 2), atol=1e-5)
    assert torch.allclose(out["loss"], out["lm_loss"] + 0.5 * out["pool_align_loss"], atol=1e-5)
    out["pool_align_loss"].backward()
    assert frames.grad[0, 3].abs().sum() > 0 and frames.grad[0, 2].abs().sum() == 0  # blank frames are not pulled
    # stage 1 (lm_weight 0): the same term beside the CTC loss, and the LM is never run
    w = m.__class__(m.config.replace(lm_weight=0.0, ctc_weight=1.0))
    monkeypatch.setattr(w.ctc, "log_probs", lambda audio: logp)
    monkeypatch.setattr(w.connector, "project", lambda states, lengths: (frames, torch.tensor([4])))
    monkeypatch.setattr(w, "_ctc_loss", lambda *a: (torch.tensor(1.5), torch.tensor(2)))
    monkeypatch.setattr(w.lm, "forward", lambda *a, **k: pytest.fail("the LM ran in a CTC-only step"))
    out = w({"states": torch.zeros(1, 16, 256), "lengths": torch.tensor([16]), "texts": ["hello world"]})
    assert torch.allclose(out["pool_align_loss"], torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(out["loss"], torch.tensor(1.5 + 0.5 * 1.0), atol=1e-5) and "lm_loss" not in out
    with pytest.raises(ConfigError, match="pool_align_weight"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0, feed="ctc_soft", pool_align_weight=1.0)


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
        m.ctc.log_probs(torch.zeros(1, 2, m.lm_dim))
    texts = ["hello world", "world peace"]
    m.set_ctc_vocab(texts)
    ids = sorted({i for t in texts for i in m.tokenizer(" " + t, add_special_tokens=False).input_ids})
    assert m.ctc_vocab.tolist() == ids
    assert m.ctc.log_probs(torch.zeros(1, 3, m.lm_dim)).shape == (1, 3, len(ids) + 1)
    wav = [np.random.RandomState(1).randn(16000).astype("float32")]
    assert torch.isfinite(m({"wavs": wav, "texts": ["hello world"]})["ctc_loss"])
    state = m.trainable_state_dict()
    fresh = _soft_model(ctc_vocab="train")
    fresh.load_trainable_state_dict(state)  # the vocabulary (any size) comes with the weights
    assert torch.equal(fresh.ctc_vocab, m.ctc_vocab)
    assert fresh.ctc_greedy_decode({"wavs": wav}) == m.ctc_greedy_decode({"wavs": wav})


def test_sampled_ctc_softmax_trains_the_projector_and_is_off_in_eval():
    model = tiny(ctc_weight=1.0, conn={"stack": 2}, ctc_negatives=40)
    assert model.ctc.negatives == 40
    b = batch()
    full = tiny(ctc_weight=1.0, conn={"stack": 2})
    assert torch.equal(ctc_loss(model.eval(), b), ctc_loss(full, b))  # eval mode: the full softmax
    # trained with the sampled softmax, the full-softmax greedy decoding learns the transcripts
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(80):
        opt.zero_grad()
        ctc_loss(model, b).backward()
        opt.step()
    assert model.eval().ctc_greedy_decode(b) == ["the cat sat", "a dog ran far"]


def test_retired_options_are_unknown_config_keys():
    for key in ("feed_noise", "ctc_head", "ctc_vocab_size"):
        with pytest.raises(AuralmError, match=key):
            HearConfig.from_dict({"encoder": "conv-tiny", key: 1})
    with pytest.raises(AuralmError, match="time_mask_prob"):
        HearConfig.from_dict({"connector": {"time_mask_prob": 0.1}})
    with pytest.raises(AuralmError, match="ctc_vocab must be one of"):
        HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0, ctc_vocab="common")
