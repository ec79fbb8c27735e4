"""S3 chat: conversations with several media, labels, splice, LoRA merge/export, QLoRA refusal, exact resume,
bad input, and the real entry points on tiny random parts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from auralm.components.lm import PlaceholderError, load_lm
from auralm.components.lm.chat import build_conversation
from auralm.core.errors import AudioError, ConfigError, ImageError
from auralm.recipes.chat.model import ChatLM, ChatModelConfig

TINY = dict(image_encoder="efficientnet-tiny", image_size=64, audio_encoder="conv-tiny", lm="tiny-llama",
            audio_stack=2, system="")  # fmt: skip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ChatLM(ChatModelConfig(**TINY, feed="raw", ctc_weight=0.0))
    return m.eval()


def _image(seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _wav(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)


def test_labels_are_minus_100_outside_replies_token_by_token():
    _, tok = load_lm("tiny-llama")
    msgs = [{"role": "user", "content": "<|image|>What colour is the circle?"}, {"role": "assistant", "content": "red"},
            {"role": "user", "content": "And the square?"}, {"role": "assistant", "content": "blue"}]  # fmt: skip
    ids, labels = build_conversation(tok, msgs, [3], system="")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    red, blue = tok("red", add_special_tokens=False)["input_ids"], tok("blue", add_special_tokens=False)["input_ids"]
    expected_labelled = red + [end] + blue + [end]
    assert [t for t in labels if t != -100] == expected_labelled
    for i, (t, lab) in enumerate(zip(ids, labels)):
        assert lab in (-100, t), f"position {i}: a label that is not its token"
    # every labelled span starts right after "<|im_start|>assistant\n" and ends with the end token
    text = tok.decode([t for t, lab in zip(ids, labels) if lab == -100])
    assert "red" not in text.split("assistant\n")[1][:3] and text.count("<|image|>") == 3


def test_several_images_and_clips_land_at_their_placeholders(model):
    msgs = [{"role": "user", "content": "<|image|><|audio|>\nfirst"}, {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "<|image|> and <|audio|>?"}]  # fmt: skip
    media = [{"kind": "image", "image": _image(0)}, {"kind": "audio", "wav": _wav(0.5, 1)},
             {"kind": "image", "image": _image(2)}, {"kind": "audio", "wav": _wav(0.8, 3)}]  # fmt: skip
    with torch.no_grad():
        tokens = model.build_inputs({"messages": [msgs], "media": [media]}, answers=False)
        imgs = model.image_proj(model._image_states([media[0], media[2]]))  # 2, N, H
        aud = model.project_audio([media[1], media[3]])
    row_ids = torch.tensor(build_conversation(model.tokenizer, msgs, [imgs.shape[1], int(aud["lm_lengths"][0]),
                                                                       imgs.shape[1], int(aud["lm_lengths"][1])],
                                              system="", generation_prompt=True)[0])  # fmt: skip
    img_pos = (row_ids == model.media_ids["image"]).nonzero().squeeze(1)
    aud_pos = (row_ids == model.media_ids["audio"]).nonzero().squeeze(1)
    n = imgs.shape[1]
    torch.testing.assert_close(tokens["embeds"][0, img_pos[:n]], imgs[0])
    torch.testing.assert_close(tokens["embeds"][0, img_pos[n:]], imgs[1])
    a0 = int(aud["lm_lengths"][0])
    torch.testing.assert_close(tokens["embeds"][0, aud_pos[:a0]], aud["lm"][0, :a0])
    torch.testing.assert_close(tokens["embeds"][0, aud_pos[a0:]], aud["lm"][1, : int(aud["lm_lengths"][1])])


def test_a_finer_image_stride_merged_by_the_pool_feeds_the_same_positions():
    torch.manual_seed(0)
    m = ChatLM(ChatModelConfig(**{**TINY, "image_stride": 16, "image_pool": 2}, feed="raw", ctc_weight=0.0)).eval()
    assert m.image_encoder.grid == (4, 4) and m.image_encoder.name.endswith("@s16")
    with torch.no_grad():
        states = m._image_states([{"kind": "image", "image": _image(0)}])
        out = m.image_proj(states)
    assert states.shape[1] == 16 and out.shape[1] == m.image_proj.num_tokens == 4  # 4 x 4 tokens -> 2 x 2 positions
    with pytest.raises(ConfigError, match="EfficientNet encoders only"):
        ChatLM(ChatModelConfig(**{**TINY, "image_encoder": "openai/clip-vit-base-patch32", "image_stride": 16}))
    with pytest.raises(ConfigError, match="image_stride must be one of"):
        ChatModelConfig(**{**TINY, "image_stride": 4})


def test_the_image_ctc_feed_splices_each_pictures_own_words_and_learns_its_description():
    """image_feed=ctc_soft: each picture reaches the LM as its own number of word embeddings (the CTC head's
    greedy reading); the image CTC loss falls on a fixed description; the vocabulary is saved with the weights."""
    torch.manual_seed(0)
    cfg = ChatModelConfig(**{**TINY, "image_stride": 8}, feed="raw", ctc_weight=0.0, image_context=1,
                          image_context_width=64, image_ctc_weight=1.0, image_feed="ctc_soft")  # fmt: skip
    m = ChatLM(cfg)
    texts = ["A large red circle at the top left.", "A small blue square on the right."]
    m.set_ctc_vocab(texts, head="image_ctc")
    pics = [{"kind": "image", "image": _image(0), "text": texts[0]}, {"kind": "image", "image": _image(1), "text": texts[1]}]
    states = m._image_states(pics)
    items = [{"kind": "image", "states": s, "text": t} for s, t in zip(states, texts)]
    opt = torch.optim.Adam([p for n, p in m.named_parameters() if n.startswith(("image_proj.", "image_ctx.", "image_ctc."))], lr=3e-3)
    first = m.image_ctc_only_loss(items).item()
    for _ in range(150):
        opt.zero_grad()
        m.image_ctc_only_loss(items).backward()
        opt.step()
    m.eval()
    assert m.image_ctc_only_loss(items).item() < 0.2 * first
    said = m.describe(items)
    assert said == [t.strip() for t in texts], said
    msgs = [{"role": "user", "content": "<|image|> then <|image|>?"}]
    with torch.no_grad():
        x = m.build_inputs({"messages": [msgs], "media": [items]}, answers=False)
    E = m.lm.get_input_embeddings().weight
    words = [text_ids_of(m, t) for t in texts]
    row_ids = torch.tensor(build_conversation(m.tokenizer, msgs, [len(w) for w in words], system="",
                                              generation_prompt=True)[0])  # fmt: skip
    pos = (row_ids == m.media_ids["image"]).nonzero().squeeze(1)
    torch.testing.assert_close(x["embeds"][0, pos], E[torch.tensor(words[0] + words[1])])
    state = m.trainable_state_dict()
    assert "image_ctc.vocab" in state and any(k.startswith("image_ctx.") for k in state)
    fresh = ChatLM(cfg)
    fresh.load_trainable_state_dict(state)
    torch.testing.assert_close(fresh.image_ctc.vocab, m.image_ctc.vocab)
    with pytest.raises(ConfigError, match="image_feed=ctc_soft reads the image CTC head"):
        ChatModelConfig(**TINY, image_feed="ctc_soft")
    with pytest.raises(ConfigError, match="descriptions need up to"):
        ChatLM(ChatModelConfig(**TINY, image_ctc_weight=1.0)).set_ctc_vocab(texts, head="image_ctc")


def text_ids_of(m, text):
    from auralm.components.lm import text_ids

    return text_ids(m.tokenizer, text)


def test_placeholder_count_mismatch_names_both_counts(model):
    msgs = [{"role": "user", "content": "<|image|><|image|> which?"}]
    with pytest.raises(PlaceholderError, match=r"2 <\|image\|> placeholder\(s\) but 1 image"):
        model.build_inputs({"messages": [msgs], "media": [[{"kind": "image", "image": _image(0)}]]}, answers=False)
    msgs = [{"role": "user", "content": "no placeholder"}]
    with pytest.raises(PlaceholderError, match=r"0 <\|audio\|> placeholder\(s\) but 1 audio clip"):
        model.build_inputs({"messages": [msgs], "media": [[{"kind": "audio", "wav": _wav(0.3, 0)}]]}, answers=False)


def test_merged_lora_gives_the_same_logits(model, tmp_path):
    from auralm.components.lm import LoraConfig, merge_lora

    m = ChatLM(ChatModelConfig(**TINY, feed="raw", ctc_weight=0.0))
    m.add_lora(LoraConfig(r=4, alpha=8.0, dropout=0.0))
    with torch.no_grad():
        for name, p in m.lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # trained-looking adapters (B starts at zero)
    m.eval()
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        before = m.lm(input_ids=ids).logits
        merged = merge_lora(m.lm)
        after = merged(input_ids=ids).logits
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)


def test_qlora_without_cuda_fails_clearly():
    from auralm.components.lm import check_quantize

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="QLoRA.*needs a CUDA GPU"):
        check_quantize("nf4")
    with pytest.raises(ConfigError, match="quantize"):
        ChatModelConfig.from_dict({**TINY, "lora": {"r": 4, "quantize": "int3"}})


def test_bad_media_are_named(tmp_path):
    from auralm.recipes.chat.pipeline import ChatPipeline

    m = ChatLM(ChatModelConfig(**TINY, feed="raw", ctc_weight=0.0)).eval()
    pipe = ChatPipeline(m)
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="image 0"):
        pipe.reply(images=[text], prompt="what?")
    with pytest.raises(ImageError, match="image 0"):
        pipe.reply(images=[empty], prompt="what?")
    bad_audio = tmp_path / "clip.xyz"
    bad_audio.write_bytes(b"\x00\x01garbage")
    with pytest.raises(AudioError):
        pipe.reply(audio=[bad_audio])
    with pytest.raises(PlaceholderError, match="1 <\\|image\\|> placeholder"):
        pipe.chat([{"role": "user", "content": "<|image|> what?"}])
    with pytest.raises(PlaceholderError, match="0 <\\|image\\|> placeholder"):
        pipe.chat([{"role": "user", "content": "what?"}], images=[_image(0)])
    with pytest.raises(AudioError, match="zero samples"):
        pipe.reply(audio=[np.zeros(0, np.float32)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from auralm.recipes.chat.data import ChatSynthConfig, synth_chat

    out = tmp_path_factory.mktemp("chat") / "data"
    synth_chat(ChatSynthConfig(out=str(out), scenes=24, image_size=64, conversations=2, voices=["espeak-ng:en-us"],
                               test_voices=["espeak-ng:en-gb"], clips_per_text=1, pictures=16))  # fmt: skip
    return out


def test_synth_splits_scenes_and_keeps_heldout_combinations_out_of_training(dataset):
    from auralm.recipes.chat.data import read_examples

    ex = read_examples(dataset)
    train_scenes = {e["scene"] for e in ex if e["split"] == "train"}
    test_scenes = {e["scene"] for e in ex if e["split"] == "test"}
    assert train_scenes and not train_scenes & test_scenes
    words = " ".join(m["content"] for e in ex if e["split"] == "train" and e["kind"] == "chat" for m in e["messages"])
    for combo in ("blue triangle", "yellow circle", "purple square"):
        assert combo not in words
    cross = [e for e in ex if e["kind"] == "qa" and e["type"] == "cross"]
    assert cross and all(e["answer"] in ("yes", "no") and e["sound"] for e in cross)


def test_cross_replies_in_training_name_both_numbers_then_answer(dataset):
    from auralm.data.scenes import NUMBER_WORDS, read_scenes
    from auralm.recipes.chat.data import cross_reply, normalise, read_examples

    counts = {s["id"]: len(s["objects"]) for s in read_scenes(dataset / "scenes")}
    seen = 0
    for e in read_examples(dataset):
        if e["kind"] != "chat":
            continue
        heard = [m["text"] for m in e["media"] if m["kind"] == "audio" and m["text"] in NUMBER_WORDS]
        for t, reply in zip(e["types"], [m["content"] for m in e["messages"][1::2]]):
            if t == "cross":
                n = counts[e["scene"]]
                assert reply == f"I hear {heard[0]} and see {NUMBER_WORDS[n]} shape{'s' * (n != 1)}: " \
                                f"{'yes' if NUMBER_WORDS.index(heard[0]) == n else 'no'}."
                seen += 1
    assert seen
    assert cross_reply("two", 2, working=False) == "yes" and cross_reply("one", 3, working=False) == "no"
    assert normalise(cross_reply("one", 1, working=True)) == "yes"


def _train(dataset, out, *extra):
    from auralm.core.config import apply_overrides, load_preset
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.train import train

    cfg = apply_overrides(TrainConfig.from_dict(load_preset("chat-tiny")), [f"data.dataset={dataset}", f"out={out}", *extra])
    return train(cfg)


def test_stage2_resume_is_exact(dataset, tmp_path):
    from safetensors.torch import load_file

    one = _train(dataset, tmp_path / "s1")
    two = ["stage=2", "model.lora.r=4", f"init_from={one}", "optim.max_steps=4"]
    straight = _train(dataset, tmp_path / "a", *two)
    _train(dataset, tmp_path / "b", *two, "optim.stop_after=2")
    resumed = _train(dataset, tmp_path / "b", *two)
    a, b = load_file(str(straight / "trainable.safetensors")), load_file(str(resumed / "trainable.safetensors"))
    assert set(a) == set(b) and any("lora_" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_stage1_warm_up_reads_pictures_against_their_scene_descriptions(dataset, tmp_path):
    from auralm.data.scenes import read_scenes
    from auralm.recipes.chat.data import read_examples, scene_descriptions

    desc = scene_descriptions(dataset)
    extra = {f"pictures/{s['image']}": s for s in read_scenes(dataset / "pictures")}
    assert {p for p in desc if p.startswith("pictures/")} == {p for p, s in extra.items() if s["split"] == "train"}
    assert all(desc[p] == extra[p]["captions"][0] for p in desc if p.startswith("pictures/"))
    counted = scene_descriptions(dataset, count=True)  # data.describe_count: the number of shapes closes the description
    assert counted.keys() == desc.keys()
    for p, s in extra.items():
        if p in desc:
            n = len(s["objects"])
            word = ["zero", "one", "two", "three", "four"][n]
            assert counted[p] == desc[p][:-1] + f": {word} {'shape' if n == 1 else 'shapes'}."
    ex = read_examples(dataset)
    caption = next(e for e in ex if e["kind"] == "caption" and e["messages"][1]["content"] == desc[e["media"][0]["path"]])
    assert caption  # the canonical caption is one of each scene's captions
    with pytest.raises(ConfigError, match="descriptions need up to .* positions, but a picture has 4"):
        _train(dataset, tmp_path / "s0", "model.image_ctc_weight=1.0", "data.image_ctc_batch=4")
    run = _train(dataset, tmp_path / "s1", "model.image_stride=8", "model.image_context=1", "model.image_ctc_weight=1.0",
                 "model.image_feed=ctc_soft", "data.image_ctc_batch=4", "eval_every=2", "eval_media=3",
                 "data.describe_count=true")  # fmt: skip
    from safetensors.torch import load_file

    state = load_file(str(run / "trainable.safetensors"))
    assert "image_ctc.vocab" in state and any(k.startswith("image_ctx.") for k in state)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["valid"]["image_wer"] and 0 <= metrics["valid"]["image_exact"] <= 1
    assert metrics["train"]["picture_ctc_loss"] > 0


@pytest.mark.slow
def test_demo_generate_load_and_export_through_the_cli(tmp_path):
    import auralm

    env_cmd = [sys.executable, "-m", "auralm"]
    out = tmp_path / "demo"
    subprocess.run([*env_cmd, "chat", "demo", "--preset", "chat-tiny-demo", "--out", str(out)], check=True,
                   capture_output=True)  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"typed", "spoken", "other_image", "no_image"} <= set(metrics["eval"]["accuracy"])
    assert (out / "report.md").is_file() and (out / "examples.png").is_file()
    pipe = auralm.load(out / "checkpoint")
    assert type(pipe).__name__ == "ChatPipeline"
    image = next((out / "data" / "scenes" / "images").glob("*.png"))
    clip = next((out / "data" / "speech" / "wavs").glob("*.wav"))
    res = subprocess.run([*env_cmd, "chat", "generate", "--checkpoint", str(out / "checkpoint"), "--image", str(image),
                          "--audio", str(clip), "--max-new-tokens", "3"], capture_output=True, text=True, check=True)  # fmt: skip
    assert res.stdout.strip() == pipe.reply(images=[image], audio=[clip], max_new_tokens=3)
    exported = pipe.export(tmp_path / "export")
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(exported / "lm")
    ids = torch.randint(0, 200, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(lm(input_ids=ids).logits, pipe.model.lm(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert (exported / "projectors.safetensors").is_file()


def test_the_demo_report_says_loudly_when_a_stage_was_cut():
    from auralm.recipes.chat.demo import _report

    acc = {"typed": {"colour": 0.9, "overall": 0.9}}
    ev = {"split": "test", "types": ["colour"], "accuracy": acc, "chance": {"colour": 0.2}, "chance_choices": {"colour": 0.2},
          "other_image_truth": {"colour": 0.1}, "counts": {"colour": 30}, "examples": []}  # fmt: skip
    stages = {"stage1": {"stopped_by": "max_steps", "steps_done": 800, "steps_planned": 800},
              "stage2": {"stopped_by": "max_minutes", "steps_done": 79, "steps_planned": 110}}  # fmt: skip
    text = _report({"eval": ev, "stages": stages, "minutes": {"total": 30.5}})
    assert "WARNING: stage2 was cut by its time guard at step 79 of 110" in text and "stage1 was cut" not in text
    stages["stage2"] = stages["stage1"]
    assert "WARNING" not in _report({"eval": ev, "stages": stages, "minutes": {"total": 26.0}})


def test_replies_are_compared_by_their_first_word_or_the_word_after_their_working():
    from auralm.recipes.chat.data import normalise

    assert [normalise(r) for r in ("Red.", " Yes, it is!", "three", "")] == ["red", "yes", "three", ""]
    assert [normalise(r) for r in ("I hear two and see two shapes: Yes.", "a: b: no", "x:")] == ["yes", "no", ""]


def test_oversample_repeats_conversations_holding_a_named_type():
    from auralm.core.errors import ConfigError
    from auralm.recipes.chat.config import ChatDataSource
    from auralm.recipes.chat.train import oversampled

    convs = [{"id": "a", "types": ["colour", "cross"]}, {"id": "b", "types": ["shape"]},
             {"id": "c", "types": ["sound", "cross", "count"]}]  # fmt: skip
    out = oversampled(convs, {"cross": 3, "sound": 2})
    assert [e["id"] for e in out] == ["a", "b", "c", "a", "a", "c", "c"]  # the largest factor of its types, once each
    assert oversampled(convs, {}) == convs
    assert dict(ChatDataSource(oversample={"cross": 2}).oversample) == {"cross": 2}
    for bad in ({"crosss": 2}, {"cross": 0}, {"cross": 1.5}):
        with pytest.raises(ConfigError, match="oversample"):
            ChatDataSource(oversample=bad)


def test_group_by_length_batches_similar_conversations_and_keeps_each_epoch_a_permutation(dataset):
    from auralm.core.config import load_preset
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.data import conversation_size, read_examples
    from auralm.recipes.chat.train import ChatTask

    msgs = [{"role": "user", "content": "<image><audio>\nhi"}, {"role": "assistant", "content": "red"}]
    e = {"messages": msgs, "media": [{"kind": "image", "path": "p.png"}, {"kind": "audio", "path": "a.wav", "text": "two"}]}
    assert conversation_size(e, {"p.png": "a red circle"}) == (20 + 17) + (20 + 3) + 12 + 3
    assert conversation_size(e) == (20 + 17) + (20 + 3) + 80 + 3  # a picture without its description: a typical one
    train = [x for x in read_examples(dataset) if x["split"] == "train" and x["kind"] == "chat"]
    sizes = [conversation_size(x) for x in train]

    def spread(group: bool) -> tuple[list[list[int]], float]:
        cfg = TrainConfig.from_dict(load_preset("chat-tiny"))
        cfg = cfg.replace(optim=cfg.optim.replace(batch_size=4, group_by_length=group))
        task = ChatTask(cfg, None, train, [], None)
        batches = [[i for i, _, _ in task.global_batch(s)] for s in range(len(train) // 4)]
        return batches, sum(max(sizes[i] for i in b) - min(sizes[i] for i in b) for b in batches) / len(batches)

    grouped, g = spread(True)
    plain, p = spread(False)
    assert len({i for b in grouped for i in b}) == len(grouped) * 4  # within an epoch, no conversation twice
    assert g < p / 2  # similar lengths together
    assert grouped == spread(True)[0]  # a pure function of the step: resume draws the same batches


def test_eval_keeps_heldout_combinations_apart_and_chance_reads_named_choices():
    from auralm.recipes.chat.evaluate import chance, named_choices, pick

    def qa(type_, question, answer, heldout=False, split="test"):
        return {"kind": "qa", "split": split, "type": type_, "question": question, "answer": answer, "heldout": heldout}

    ex = [qa("colour", "What colour is the circle?", "red"), qa("colour", "What colour is the square?", "blue", True),
          qa("colour", "What colour is the triangle?", "red", split="train"),
          qa("position", "Is the red circle on the left or the right?", "left"),
          qa("position", "Is the blue one on the left or right side?", "left"),
          qa("position", "Is the red circle at the top or the bottom?", "top"),
          qa("position", "Is the square near the top or the bottom of the image?", "bottom"),
          qa("position", "Which side is the circle on, left or right?", "right")]
    # a question about a held-out combination is asked in its own row only, never among the per-type figures
    assert [e["answer"] for e in pick(ex, "test", 0, ("colour",))] == ["red"]
    assert [e["answer"] for e in pick(ex, "test", 0, ("colour",), heldout=True)] == ["blue"]
    items = pick(ex, "test", 0)
    assert named_choices(items[1]["question"], {"left", "right", "top", "bottom"}) == {"left", "right"}
    assert named_choices("What colour is the circle?", {"red", "blue"}) == frozenset()
    # majority over all five: left 2/5; the question's own two choices: left 2 of the 3 left/right, top 1 of 2
    assert chance(items)["position"] == pytest.approx(2 / 5)
    assert chance(items, choices=True)["position"] == pytest.approx(3 / 5)
    assert chance(items, choices=True)["colour"] == chance(items)["colour"] == 1.0


def test_other_image_truth_is_perfect_on_the_right_scene_and_not_on_another(dataset):
    from auralm.recipes.chat.data import read_examples
    from auralm.recipes.chat.evaluate import SCENE_TYPES, other_image_truth, pick

    items = [e for e in pick(read_examples(dataset), "test", 0) if e["type"] in SCENE_TYPES]
    scenes = list(dict.fromkeys(e["scene"] for e in items))
    # reading the right picture perfectly answers every question: the stored answers are the scene's truth
    assert other_image_truth(dataset, items, {s: s for s in scenes}) == {t: 1.0 for t in {e["type"] for e in items}}
    shifted = other_image_truth(dataset, items, {s: scenes[(i + 1) % len(scenes)] for i, s in enumerate(scenes)})
    assert shifted["colour"] < 1.0 and all(0.0 <= v <= 1.0 for v in shifted.values())


def test_eval_asks_only_the_named_types_and_conditions(dataset):
    from auralm.recipes.chat.data import read_examples
    from auralm.recipes.chat.evaluate import evaluate, pick

    ex = read_examples(dataset)
    assert {e["type"] for e in pick(ex, "test", 0, ("cross",))} == {"cross"}
    assert len(pick(ex, "test", 0, ("cross",))) == sum(e["kind"] == "qa" and e["type"] == "cross" and e["split"] == "test" for e in ex)

    class Idle:
        def eval(self):
            return self

    with pytest.raises(ValueError, match="unknown question type.*crosss"):
        evaluate(Idle(), dataset, types=("crosss",))
    with pytest.raises(ValueError, match="unknown condition.*shuffled"):
        evaluate(Idle(), dataset, conditions=("shuffled",))


def test_the_demo_budget_lowers_the_last_stage_guard_loudly(capsys):
    from auralm.core.config import load_preset
    from auralm.recipes.chat.config import TrainConfig
    from auralm.recipes.chat.demo import ChatDemoConfig, _within_budget

    stage = TrainConfig.from_dict(load_preset("chat-demo-stage2"))
    assert stage.optim.max_minutes == 14.0
    assert _within_budget(stage, 20.0) is stage  # enough time left: the preset's guard stands
    assert capsys.readouterr().err == ""
    assert _within_budget(stage, 9.34).optim.max_minutes == 9.3
    assert "guard lowered from 14.0 to 9.3 min" in capsys.readouterr().err
    assert _within_budget(stage, -2.0).optim.max_minutes == 1.0  # over budget already: one minute, still a checkpoint
    assert ChatDemoConfig.from_dict(load_preset("chat-demo")).budget_minutes == 30.0
    with pytest.raises(ConfigError, match="budget_minutes"):
        ChatDemoConfig(budget_minutes=-1)
