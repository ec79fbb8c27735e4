"""Text encoders: one (B, T, D) + lengths interface for BERT-like and CLIP text towers, fixed token counts,
sentence vectors, errors, and parity of the offline MiniLM with auralm.hub's sentence encoder."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, CLIPTextConfig, CLIPTextModel

from auralm.components.encoders import TextEncoder, build_text_encoder, text_encoder_names, word_tokenizer
from auralm.core.errors import ConfigError, ModelNotFoundError

TINY = dict(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TEXTS = ["A large red circle at the top left.", "Two shapes: a small blue square and a green triangle."]


@pytest.fixture(scope="module")
def bert() -> TextEncoder:
    return build_text_encoder(BertConfig(**TINY, max_position_embeddings=40), max_length=24)


@pytest.fixture(scope="module")
def clip() -> TextEncoder:
    return build_text_encoder(CLIPTextConfig(**TINY, max_position_embeddings=77, bos_token_id=2, eos_token_id=3))


def test_states_and_lengths(bert, clip):
    for enc, dim in ((bert, 32), (clip, 32)):
        states, lengths = enc.encode(TEXTS)
        ids = enc.tokenizer(TEXTS)["input_ids"]
        assert states.shape == (2, max(map(len, ids)), dim) and lengths.tolist() == [len(i) for i in ids]
        assert lengths.dtype == torch.long and enc.kind in ("bert", "clip")
        assert not any(p.requires_grad for p in enc.parameters()) and not enc.training


def test_pad_to_max_gives_the_fixed_token_count_and_the_same_real_states(bert, clip):
    for enc in (bert, clip):
        short, lengths = enc.encode(TEXTS)
        fixed, lengths2 = enc.encode(TEXTS, pad_to_max=True)
        assert fixed.shape[1] == enc.max_length and torch.equal(lengths, lengths2)
        for b, n in enumerate(lengths.tolist()):  # padding does not change the real tokens' states
            assert torch.allclose(short[b, :n], fixed[b, :n], atol=1e-5)
    assert clip.max_length == 77 and bert.max_length == 24


def test_clip_states_are_the_text_models_last_hidden_state(clip):
    batch = clip.tokenize(TEXTS, pad_to_max=True)
    ref = CLIPTextModel(clip.model.config)
    ref.load_state_dict(clip.model.state_dict())
    with torch.no_grad():
        want = ref.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.allclose(clip.encode(TEXTS, pad_to_max=True)[0], want, atol=1e-6)


def test_embed_is_the_unit_masked_mean(bert):
    states, lengths = bert.encode(TEXTS)
    vec = bert.embed(TEXTS)
    assert vec.shape == (2, 32) and torch.allclose(vec.norm(dim=-1), torch.ones(2), atol=1e-5)
    want = torch.nn.functional.normalize(states[1, : lengths[1]].mean(0), dim=-1)
    assert torch.allclose(vec[1], want, atol=1e-5)
    assert torch.allclose(bert.embed(TEXTS[:1]), vec[:1], atol=1e-5)  # batching does not change a vector


def test_bad_input_is_refused(bert):
    with pytest.raises(ConfigError, match="empty"):
        bert.encode(["a red circle", "  "])
    with pytest.raises(ConfigError, match="no texts"):
        bert.encode([])
    with pytest.raises(ConfigError, match=r"text\(s\) \[0\].*more than max_length=24"):
        bert.encode(["red " * 40])
    with pytest.raises(ModelNotFoundError, match="unknown text encoder"):
        build_text_encoder("no-such-encoder")
    with pytest.raises(ConfigError, match="vocab_size"):
        build_text_encoder(BertConfig(**{**TINY, "vocab_size": 10}))
    with pytest.raises(ConfigError, match="max_length"):
        build_text_encoder(BertConfig(**TINY, max_position_embeddings=40), max_length=100)


def test_same_seed_same_weights_and_names():
    a = build_text_encoder(BertConfig(**TINY), seed=1)
    b = build_text_encoder(BertConfig(**TINY), seed=1)
    assert a.revision == b.revision != build_text_encoder(BertConfig(**TINY), seed=2).revision
    assert "all-minilm-l6-v2" in text_encoder_names() and "clip-vit-large-patch14" in text_encoder_names()
    assert word_tokenizer()("a red circle.")["input_ids"][0] == 2  # [CLS] first


def test_clip_by_hf_name_needs_the_local_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        build_text_encoder("openai/clip-vit-base-patch32")


def test_clip_from_a_saved_folder(clip, tmp_path):
    clip.model.save_pretrained(tmp_path / "text_encoder")
    clip.tokenizer.save_pretrained(tmp_path / "tokenizer")
    again = build_text_encoder(str(tmp_path))
    assert again.kind == "clip" and again.max_length == 77
    assert torch.allclose(again.encode(TEXTS)[0], clip.encode(TEXTS)[0], atol=1e-6)


@pytest.mark.slow
def test_minilm_matches_the_hub_sentence_encoder():
    from auralm.hub import encode_sentences

    enc = build_text_encoder()
    assert enc.name == "all-minilm-l6-v2" and enc.dim == 384 and enc.max_length == 32
    ref = encode_sentences(enc.model, enc.tokenizer, TEXTS)
    assert torch.allclose(enc.embed(TEXTS), ref, atol=1e-5)
