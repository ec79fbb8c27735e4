"""Generation: greedy/beam/sample through the LM's HF generate, left-padded batches, the KV cache."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from auralm.components.connectors import ConnectorConfig
from auralm.components.generation import GenerationConfig, loop_length
from auralm.components.lm import build_example
from auralm.core.errors import ConfigError
from auralm.recipes.hear.model import AudioLM, HearConfig


def trained(kind: str, lm: str, steps: int = 15) -> tuple[AudioLM, dict]:
    """A tiny model briefly fitted to two clips, so its greedy answers are not ties."""
    torch.manual_seed(0)
    model = AudioLM(HearConfig(encoder="conv-tiny", lm=lm, connector=ConnectorConfig(kind=kind)))
    g = torch.Generator().manual_seed(1)
    b = {"states": torch.randn(3, 16, 256, generator=g), "lengths": torch.tensor([16, 9, 5]),
         "texts": ["the cat sat on the mat", "a dog", "birds sing at dawn"]}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(b)["loss"].backward()
        opt.step()
    return model.eval(), b


@pytest.fixture(scope="module", params=[("prefix", "tiny-gpt2"), ("cross", "tiny-llama")], ids=["prefix-gpt2", "cross-llama"])
def fitted(request):
    return trained(*request.param)


def one(b: dict, i: int) -> dict:
    n = int(b["lengths"][i])
    return {"states": b["states"][i : i + 1, :n], "lengths": b["lengths"][i : i + 1]}


def test_greedy_equals_beam_one_and_batched_equals_one_by_one(fitted):
    model, b = fitted
    gen = GenerationConfig(max_new_tokens=8)
    batched = model.generate(b, gen)
    assert len(batched) == 3 and any(batched)
    assert batched == [model.generate(one(b, i), gen)[0] for i in range(3)]
    assert batched == model.generate(b, GenerationConfig(strategy="beam", num_beams=1, max_new_tokens=8))
    assert batched == model.generate(b, gen.replace(use_cache=False))


def test_beam_and_sampling_run_and_respect_limits(fitted):
    model, b = fitted
    beams = model.generate(b, GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=6))
    assert len(beams) == 3
    calls = []
    handle = model.lm.register_forward_hook(lambda *a: calls.append(1))
    try:
        torch.manual_seed(0)
        s1 = model.generate(b, GenerationConfig(strategy="sample", temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=5))
    finally:
        handle.remove()
    assert 1 <= len(calls) <= 5  # one LM step per new token at most (the prompt's step gives the first)
    torch.manual_seed(0)
    s2 = model.generate(b, GenerationConfig(strategy="sample", temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=5))
    assert s1 == s2 and len(s1) == 3


def test_generation_stops_at_the_end_token(fitted):
    model, b = fitted
    calls = []

    def force_end(module, args, kwargs, out):  # make the end token the argmax at every step
        calls.append(1)
        out.logits[..., model.end_token_id] += 1e4
        return out

    handle = model.lm.register_forward_hook(force_end, with_kwargs=True)
    try:
        assert model.generate(b, GenerationConfig(max_new_tokens=10)) == ["", "", ""]
    finally:
        handle.remove()
    assert len(calls) == 1  # the prompt's forward picked the end token; no further step ran


def test_loop_length():
    assert loop_length([5, 1, 1, 1, 1], 4, 8) == 3
    assert loop_length([1, 1, 1], 4, 8) == 0  # three copies: not yet a loop
    assert loop_length([9, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3], 4, 8) == 9
    assert loop_length([1, 2, 3] * 4, 4, 2) == 0  # period longer than max_period
    assert loop_length([1, 1, 1, 1], 0, 8) == 0  # guard off


def test_loop_guard_stops_a_runaway_row(fitted):
    model, b = fitted
    calls, word = [], model.tokenizer(" successive")["input_ids"][0]

    def loop(module, args, kwargs, out):  # make one ordinary token the argmax at every step
        calls.append(1)
        out.logits[..., word] += 1e4
        return out

    handle = model.lm.register_forward_hook(loop, with_kwargs=True)
    try:
        guarded = model.generate(b, GenerationConfig(max_new_tokens=30))
        n_guarded = len(calls)
        unguarded = model.generate(b, GenerationConfig(max_new_tokens=30, max_repeats=0))
    finally:
        handle.remove()
    one_copy = model.tokenizer.decode([word]).strip()
    assert guarded == [one_copy] * 3 and n_guarded == 5  # 4 copies, then the end token; 3 dropped
    assert unguarded == [" ".join([one_copy] * 30).strip()] * 3 or all(len(u) > 20 * len(one_copy) for u in unguarded)


@pytest.mark.parametrize("lm", ["tiny-gpt2", "tiny-llama"])
def test_dropping_finished_rows_decodes_the_tokens_lm_generate_does(lm):
    from auralm.components.generation import _guard, greedy_dropping_finished, hf_generation_config

    model, b = trained("prefix", lm)
    gen = GenerationConfig(max_new_tokens=12, max_repeats=0)
    budgets = [12, 3, 7]  # the guard ends rows 1 and 2 early (if they have not ended): the live rows change
    with torch.no_grad():
        x = model.build_inputs(b, answers=False, left_pad=True)
        ours = greedy_dropping_finished(model.lm, x, gen, model.end_token_id, _guard(gen, model.end_token_id, budgets, None))
        ref = model.lm.generate(inputs_embeds=x["embeds"], attention_mask=x["mask"],
                                generation_config=hf_generation_config(gen, model.end_token_id, model.pad_token_id),
                                logits_processor=[_guard(gen, model.end_token_id, budgets, None)])
    ended = [row.index(model.end_token_id) + 1 if model.end_token_id in row else len(row) for row in ours]
    assert len(set(ended)) > 1 and min(ended) < 12  # rows ended at different steps: some were dropped
    assert ours == [row[:n] for row, n in zip(ref.tolist(), ended)]  # lm.generate pads the rows that ended


def test_rows_with_their_own_token_limits_answer_as_they_would_alone(fitted):
    model, b = fitted
    gen = GenerationConfig(max_new_tokens=8)
    alone = [model.generate(one(b, i), gen.replace(max_new_tokens=n))[0] for i, n in enumerate((8, 2, 5))]
    assert model.generate({**b, "max_new": [8, 2, 5]}, gen) == alone
    assert alone != model.generate(b, gen)  # a limit cut a row (else this proves nothing)


def test_answers_capped_per_audio_position(fitted):
    model, b = fitted
    vocab = " the cat sat on a mat and dog ran to big red sun in sky with blue sea by old tree".split(" ")[1:]
    words = [ids[0] for w in vocab if len(ids := model.tokenizer(" " + w)["input_ids"]) == 1]
    assert len(words) >= 10

    def ramble(module, args, kwargs, out):  # a different ordinary token at every step: no exact loop
        step = len(calls)
        calls.append(1)
        out.logits[..., words[step % len(words)]] += 1e4
        return out

    calls: list[int] = []
    handle = model.lm.register_forward_hook(ramble, with_kwargs=True)
    try:
        capped = model.generate(b, GenerationConfig(max_new_tokens=30, max_new_per_audio=0.5))
    finally:
        handle.remove()
    x = model.build_inputs(b, answers=False, left_pad=True)
    budgets = [min(30, -(-int(n) // 2) + 8) for n in x["lm_audio_lengths"]]
    got = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in capped]
    assert budgets != [30] * 3 and got == budgets


def test_guard_biases_copies_and_ends_rows():
    from auralm.components.generation import _guard

    gen = GenerationConfig(copy_bias=10.0, max_repeats=2)
    guard = _guard(gen, eos_id=0, budgets=[3, 9], copy=[[3, 5, 3], [7]])
    generated = torch.tensor([[1, 2], [4, 4]])  # row 1 ends with 2 copies of [4]: a loop
    scores = guard(generated, torch.zeros(2, 10))
    assert scores[0].tolist() == [0, 0, 0, 10, 0, 10, 0, 0, 0, 0]  # its audio tokens 3 and 5, once each
    assert scores[1].argmax() == 0 and scores[1, 7] < -1e30  # the loop forces the end token
    over = guard(torch.tensor([[1, 2, 6], [1, 2, 6]]), torch.zeros(2, 10))  # row 0 reached its budget of 3
    assert over[0].argmax() == 0 and over[1, 7] == 10.0
    beams = guard(torch.tensor([[1], [2], [1], [2]]), torch.zeros(4, 10))  # 2 beams per row
    assert beams[1, 5] == 10.0 and beams[2, 7] == 10.0 and beams[2, 5] == 0.0


def test_cross_gate_zero_generates_like_the_plain_lm():
    """At gate zero the cross model's greedy tokens are transformers' own GPT-2's."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-gpt2", connector=ConnectorConfig(kind="cross")))
    ref = GPT2LMHeadModel(model.lm.config).eval()
    ref.load_state_dict(model.lm.state_dict())
    ids, _ = build_example(model.tokenizer, model.config.prompt, 0)
    want = ref.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, eos_token_id=model.end_token_id,
                        pad_token_id=model.pad_token_id)[0, len(ids):].tolist()
    want = want[: want.index(model.end_token_id)] if model.end_token_id in want else want
    got = model.generate({"states": torch.randn(1, 8, 256), "lengths": torch.tensor([8])},
                         GenerationConfig(max_new_tokens=6, max_repeats=0))
    assert got == [model.tokenizer.decode(want, skip_special_tokens=True).strip()]


def test_generation_config_validates():
    with pytest.raises(ConfigError, match="strategy"):
        GenerationConfig(strategy="nucleus")
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ConfigError, match="max_repeats"):
        GenerationConfig(max_repeats=1)


@pytest.mark.slow
def test_smollm2_prefix_forward_and_generate_on_a_real_clip(tmp_path):
    pytest.importorskip("transformers")
    from auralm.core.errors import ModelNotFoundError
    from auralm.data.audio import load_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav_path = tmp_path / "clip.wav"
    subprocess.run(["espeak-ng", "-w", str(wav_path), "the quick brown fox"], check=True, capture_output=True)
    wav, _ = load_audio(wav_path, 16000)
    try:
        model = AudioLM(HearConfig(encoder="whisper-tiny.en", lm="smollm2-135m-instruct"))
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 / Whisper not installed: {exc}")
    im_end = model.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.end_token_id == im_end
    ids, labels = build_example(model.tokenizer, model.config.prompt, 5, "the quick brown fox")
    assert labels[-1] == im_end and ids[-1] == im_end and ids.count(model.audio_token_id) == 5
    out = model({"wavs": [wav], "texts": ["the quick brown fox"]})
    assert torch.isfinite(out["loss"])
    text = model.generate({"wavs": [wav]}, GenerationConfig(max_new_tokens=8))
    assert len(text) == 1 and isinstance(text[0], str)


def test_rescore_beam_picks_among_the_ctc_nbest_by_ctc_lm_and_length():
    from auralm.components.generation import generate
    from auralm.components.lm import sequence_logprobs

    torch.manual_seed(0)
    model = AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-llama", ctc_weight=1.0)).eval()
    b = {"states": torch.randn(3, 12, 256, generator=torch.Generator().manual_seed(3)), "lengths": torch.tensor([12, 7, 9])}
    beams = model.ctc.nbest(*model._audio(b), beam=6)

    def text(ids: list[int]) -> str:
        return model.tokenizer.decode(ids, skip_special_tokens=True).strip()

    top = [text(hyps[0][0]) for hyps in beams]
    assert model.generate(b, GenerationConfig(rescore_beam=6, rescore_weight=0, rescore_length_bonus=0)) == top
    gen = GenerationConfig(rescore_beam=6, rescore_weight=3.0, rescore_length_bonus=0.5)
    start = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else model.end_token_id
    want = []
    for hyps in beams:
        lm = sequence_logprobs(model.lm, [ids for ids, _ in hyps], start)
        scores = [ac + 3.0 * s + 0.5 * len(ids) for (ids, ac), s in zip(hyps, lm)]
        want.append(text(hyps[scores.index(max(scores))][0]))
    assert want != top  # the LM's prior changes the choice somewhere
    streamed: dict[int, str] = {}
    got = generate(model, b, gen, on_delta=lambda row, t: streamed.update({row: streamed.get(row, "") + t}))
    assert got == want and model.generate(b, gen) == want
    assert [streamed[i] for i in range(3)] == want
    # another instruction is answered by the LM, the rows asking the model's own prompt are still rescored
    asked = {**b, "prompts": [None, "What do you hear?", model.config.prompt]}
    mixed = model.generate(asked, gen)
    lm_answer = model.generate({**b, "prompts": ["What do you hear?"] * 3}, GenerationConfig())[1]
    assert mixed == [want[0], lm_answer, want[2]]
    no_ctc = AudioLM(HearConfig(encoder="conv-tiny", lm="tiny-llama"))
    with pytest.raises(ConfigError, match="CTC head"):
        no_ctc.generate(b, GenerationConfig(rescore_beam=2))
    with pytest.raises(ConfigError, match="rescore_beam"):
        GenerationConfig(rescore_beam=-1)
