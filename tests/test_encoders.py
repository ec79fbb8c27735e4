"""Audio encoders: Whisper at real length vs the stock padded forward, batching, freezing, names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2BertConfig, Wav2Vec2Config, WhisperConfig

from auralm.components.encoders import (
    ConvEncoderConfig,
    WhisperAudioEncoder,
    build_audio_encoder,
    encoder_names,
    resolve_name,
)
from auralm.core.errors import AudioError, ConfigError, ModelNotFoundError

WINDOW = 32000  # the tiny Whisper below has 100 positions = 200 mel frames = 2 s


def tiny_whisper_config(**kw) -> WhisperConfig:
    base = dict(
        d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=100,
    )
    return WhisperConfig(**{**base, **kw})


def tiny_wav2vec2_config(norm: str) -> Wav2Vec2Config:
    return Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
    )


def waves(*sizes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(sizes)) / 16000
    base = 0.3 * np.sin(2 * np.pi * 300 * t)
    return [(base[:n] + 0.05 * rng.standard_normal(n)).astype(np.float32) for n in sizes]


@pytest.fixture(scope="module")
def whisper() -> WhisperAudioEncoder:
    return build_audio_encoder(tiny_whisper_config())


def test_pad_to_30s_equals_transformers_forward(whisper):
    wavs = waves(8000, 16000, 3333)
    whisper.pad_to_30s = True
    try:
        states, lengths = whisper(wavs)
    finally:
        whisper.pad_to_30s = False
    feats = whisper.mel.fe(wavs, sampling_rate=16000, return_tensors="pt").input_features
    assert feats.shape[-1] == 200
    with torch.no_grad():
        ref = whisper.encoder(feats).last_hidden_state
    assert states.shape == ref.shape == (3, 100, 32)
    assert torch.equal(states, ref)
    assert lengths.tolist() == [25, 50, 10]  # ceil((n // 160) / 2)


def test_real_length_matches_stock_on_a_full_window(whisper):
    """A clip exactly one window long needs no padding, so the real-length path must equal the stock one."""
    wav = waves(WINDOW)
    feats = whisper.mel.fe(wav, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = whisper.encoder(feats).last_hidden_state
    states, lengths = whisper(wav)
    assert lengths.tolist() == [100]
    torch.testing.assert_close(states, ref, rtol=0, atol=1e-6)


def test_real_length_is_truncated_not_padded(whisper):
    sizes = [8000, 16000, 3333, 150]
    states, lengths = whisper(waves(*sizes))
    assert lengths.tolist() == [25, 50, 10, 1]
    assert states.shape == (4, 50, 32)
    assert whisper.output_lengths(sizes).tolist() == lengths.tolist()
    assert whisper.frame_rate == 50 and whisper.dim == 32 and whisper.sample_rate == 16000
    assert states[2, 10:].abs().sum() == 0 and states[2, :10].abs().sum() > 0


ENCODER_CONFIGS = {
    "whisper": tiny_whisper_config,
    "wav2vec2-layer": lambda: tiny_wav2vec2_config("layer"),
    "wav2vec2-group": lambda: tiny_wav2vec2_config("group"),
    "w2v-bert": lambda: Wav2Vec2BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        output_hidden_size=32, conv_depthwise_kernel_size=3,
    ),
    "conv": lambda: ConvEncoderConfig(dim=32),
}


@pytest.mark.parametrize("family", sorted(ENCODER_CONFIGS))
def test_batch_equals_each_item_alone(family):
    enc = build_audio_encoder(ENCODER_CONFIGS[family]())
    sizes = [8000, 16000, 3333, 150]
    wavs = waves(*sizes)
    states, lengths = enc(wavs)
    assert states.shape[0] == 4 and states.shape[2] == enc.dim
    assert lengths.tolist() == enc.output_lengths(sizes).tolist()
    assert states.shape[1] == int(lengths.max())
    for i, wav in enumerate(wavs):
        alone, n = enc([wav])
        assert n.tolist() == [int(lengths[i])]
        torch.testing.assert_close(states[i, : n[0]], alone[0], rtol=0, atol=2e-5)
    assert enc.frame_rate > 0


def test_padded_tensor_input_equals_list_input(whisper):
    wavs = waves(8000, 4000)
    padded = torch.zeros(2, 8000)
    padded[0], padded[1, :4000] = torch.from_numpy(wavs[0]), torch.from_numpy(wavs[1])
    a, la = whisper(wavs)
    b, lb = whisper(padded, torch.tensor([8000, 4000]))
    assert torch.equal(la, lb) and torch.equal(a, b)
    with pytest.raises(AudioError):
        whisper(padded, [9000, 10])


def test_frozen_by_default_and_trainable_on_request():
    frozen = build_audio_encoder(ConvEncoderConfig(dim=16))
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()  # a parent calling .train() must not switch a frozen encoder to training
    assert not frozen.training
    states, _ = frozen(waves(4000))
    assert not states.requires_grad

    enc = build_audio_encoder(tiny_whisper_config(), trainable=True)
    assert enc.training and enc.encoder.conv1.weight.requires_grad and enc.encoder.layers[0].fc1.weight.requires_grad
    assert not enc.encoder.embed_positions.weight.requires_grad  # Whisper's sinusoidal table stays fixed
    states, lengths = enc(waves(4000, 2000))
    states.sum().backward()
    assert enc.encoder.conv1.weight.grad is not None and enc.encoder.conv1.weight.grad.abs().sum() > 0


def test_too_long_audio_is_refused(whisper):
    with pytest.raises(AudioError, match="at most 2 s"):
        whisper(waves(WINDOW + 160))


def test_names_resolve_and_unknown_lists_valid():
    assert resolve_name("openai/whisper-tiny.en")[:2] == ("whisper-tiny.en", "whisper")
    assert resolve_name("facebook/wav2vec2-large-xlsr-53")[1] == "hf"
    assert resolve_name("w2v-bert-2.0") == ("w2v-bert-2.0", "hf", "facebook/w2v-bert-2.0")
    with pytest.raises(ModelNotFoundError) as err:
        build_audio_encoder("whisper-gigantic")
    assert "whisper-tiny.en" in str(err.value) and "conv-tiny" in str(err.value)
    assert {"conv-tiny", "whisper-tiny.en", "wav2vec2-base"} <= set(encoder_names())


def test_hf_model_missing_from_cache_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        build_audio_encoder("nobody-auralm/wav2vec2-does-not-exist")


def test_conv_tiny_by_name_is_deterministic():
    a, b = build_audio_encoder("conv-tiny"), build_audio_encoder("conv-tiny")
    assert a.name == "conv-tiny" and a.revision == b.revision and a.frame_rate == 25
    c = build_audio_encoder(ConvEncoderConfig(seed=1))
    assert c.revision != a.revision
    with pytest.raises(ConfigError):
        build_audio_encoder("conv-tiny", pad_to_30s=True)
    with pytest.raises(ConfigError):
        ConvEncoderConfig(dim=0)


@pytest.mark.slow
def test_real_whisper_tiny_en():
    hub = pytest.importorskip("auralm.hub")
    if not hasattr(hub, "load_whisper"):
        pytest.skip("auralm.hub has no load_whisper yet")
    try:
        enc = build_audio_encoder("whisper-tiny.en")
    except ModelNotFoundError as exc:
        pytest.skip(f"whisper-tiny.en not available offline: {exc}")
    assert enc.dim == 384 and enc.frame_rate == 50 and enc.revision == hub.revision("whisper-tiny.en")
    wavs = waves(16000, 24000)
    states, lengths = enc(wavs)
    assert states.shape == (2, 75, 384) and lengths.tolist() == [50, 75]
    assert torch.isfinite(states).all()
    enc.pad_to_30s = True
    padded, _ = enc(wavs)
    feats = enc.mel.fe(wavs, sampling_rate=16000, return_tensors="pt").input_features.to(enc.dtype)
    with torch.no_grad():
        ref = enc.encoder(feats).last_hidden_state
    assert torch.equal(padded, ref)
