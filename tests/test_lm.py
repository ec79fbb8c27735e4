"""auralm.components.lm: tiny LMs from code, the audio placeholder, examples with masked labels, decoder layers."""

from __future__ import annotations

import pytest
import torch

from auralm.components.lm import (
    AUDIO_TOKEN,
    PlaceholderError,
    add_audio_token,
    build_example,
    decoder_layers,
    end_token_id,
    lm_revision,
    load_lm,
    text_ids,
)


@pytest.fixture(scope="module")
def gpt2():
    return load_lm("tiny-gpt2")


@pytest.fixture(scope="module")
def llama():
    return load_lm("tiny-llama")


def test_tiny_lms_shapes_and_audio_token_outside_vocab(gpt2, llama):
    for model, tok, n_vocab in ((*gpt2, 50257), (*llama, 50259)):
        emb = model.get_input_embeddings().weight
        assert tuple(emb.shape) == (n_vocab, 64)
        assert len(decoder_layers(model)) == 2
        audio_id = add_audio_token(tok)
        assert audio_id == add_audio_token(tok) == n_vocab  # idempotent, not in the LM's vocabulary
        assert tok(f"x {AUDIO_TOKEN} y", add_special_tokens=False)["input_ids"].count(audio_id) == 1
    assert decoder_layers(gpt2[0]) is gpt2[0].transformer.h
    assert decoder_layers(llama[0]) is llama[0].model.layers


def test_tiny_revision_is_a_hash_of_seed_and_config(gpt2):
    assert gpt2[0].auralm_revision == lm_revision("tiny-gpt2") == lm_revision("tiny-gpt2", 0)
    assert lm_revision("tiny-gpt2", 1) != lm_revision("tiny-gpt2") != lm_revision("tiny-llama")
    a, _ = load_lm("tiny-gpt2", seed=1)
    b, _ = load_lm("tiny-gpt2", seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.lm_head.weight, gpt2[0].lm_head.weight)


def test_plain_example_labels_only_answer_and_eos(gpt2):
    _, tok = gpt2
    audio_id = add_audio_token(tok)
    ids, labels = build_example(tok, "Transcribe.", 3, "hello world")
    assert ids.count(audio_id) == 3 and ids[:3] == [audio_id] * 3  # no placeholder in the prompt: audio first
    answer = [i for i in labels if i != -100]
    assert answer == tok("hello world", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert labels[: len(ids) - len(answer)] == [-100] * (len(ids) - len(answer)) and ids[-len(answer):] == answer
    assert end_token_id(tok) == 50256
    prompt_ids, prompt_labels = build_example(tok, f"Listen: {AUDIO_TOKEN} and transcribe.", 2, None)
    assert set(prompt_labels) == {-100} and prompt_ids.count(audio_id) == 2
    assert tok.decode(prompt_ids).endswith(f"Listen: {AUDIO_TOKEN * 2} and transcribe.\n")


def test_chat_example_ends_with_im_end(llama):
    _, tok = llama
    ids, labels = build_example(tok, "Transcribe.", 2, "a cat")
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in text and text.endswith("a cat<|im_end|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end_token_id(tok) == im_end
    assert [i for i in labels if i != -100] == tok("a cat", add_special_tokens=False)["input_ids"] + [im_end]
    # the user turn's own <|im_end|> is not a label
    assert labels[ids.index(im_end)] == -100
    # a system message goes first when given (None: the template's default, here none)
    sys_ids, sys_labels = build_example(tok, "Transcribe.", 2, "a cat", system="Be exact.")
    assert tok.decode(sys_ids).startswith("<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\n")
    assert [i for i in sys_labels if i != -100] == [i for i in labels if i != -100]


def test_placeholder_errors(gpt2):
    _, tok = gpt2
    with pytest.raises(PlaceholderError, match="2 audio placeholder"):
        build_example(tok, f"{AUDIO_TOKEN} then {AUDIO_TOKEN}", 4, "x")
    with pytest.raises(ValueError, match="1 audio placeholder"):  # cross family: no placeholders
        build_example(tok, f"{AUDIO_TOKEN} hi", 0, "x")


def test_text_ids_mid_sentence(gpt2):
    _, tok = gpt2
    assert text_ids(tok, "hello world") == tok(" hello world", add_special_tokens=False)["input_ids"]
    assert tok.decode(text_ids(tok, " hello ")) == " hello"


def test_pad_ids_pads_right_or_left():
    from auralm.components.lm import pad_ids

    assert pad_ids([[1, 2, 3], [4]], 0, left=False).tolist() == [[1, 2, 3], [4, 0, 0]]
    assert pad_ids([[1, 2, 3], [4]], 0, left=True).tolist() == [[1, 2, 3], [0, 0, 4]]


def test_inject_lora_trains_only_the_adapters_and_names_missing_targets():
    from auralm.components.lm import LoraConfig, inject_lora
    from auralm.core.errors import ConfigError

    lm, _ = load_lm("tiny-llama")
    inject_lora(lm, LoraConfig(r=2))  # auto: q_proj + v_proj
    trained = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trained)
    with pytest.raises(ConfigError, match="no such modules"):
        inject_lora(load_lm("tiny-gpt2")[0], LoraConfig(r=2, targets=["q_proj"]))
    with pytest.raises(ConfigError, match="r > 0"):
        inject_lora(lm, LoraConfig(r=0))


def test_adapters_off_runs_the_base_lm_and_sequence_logprobs_sum_next_token_log_probs():
    from torch import nn

    from auralm.components.lm import LoraConfig, adapters_off, inject_lora, sequence_logprobs

    lm, _ = load_lm("tiny-llama")
    lm.eval()
    ids = torch.tensor([[5, 9, 13, 2]])
    base = lm(input_ids=ids).logits.detach()
    with adapters_off(lm):  # no adapters yet: nothing changes
        torch.testing.assert_close(lm(input_ids=ids).logits, base)
    inject_lora(lm, LoraConfig(r=2))
    for name, p in lm.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.5)  # as if trained (B starts at zero)
    lm.eval()  # the adapters' dropout layers are new
    grads = {n: p.requires_grad for n, p in lm.named_parameters()}
    adapted = lm(input_ids=ids).logits.detach()
    assert not torch.allclose(base, adapted)
    with adapters_off(lm):
        torch.testing.assert_close(lm(input_ids=ids).logits, base)
    torch.testing.assert_close(lm(input_ids=ids).logits, adapted)  # back on afterwards
    assert {n: p.requires_grad for n, p in lm.named_parameters()} == grads  # and as trainable as before

    got = sequence_logprobs(lm, [[9, 13, 2], [7], []], start_id=5, batch_size=2)  # padded in batches of two
    logp = adapted.log_softmax(-1)[0]
    assert got[0] == pytest.approx(float(logp[0, 9] + logp[1, 13] + logp[2, 2]), abs=1e-4)
    assert got[1] == pytest.approx(float(lm(input_ids=torch.tensor([[5]])).logits.detach().log_softmax(-1)[0, 0, 7]), abs=1e-4)
    assert got[2] == 0.0
