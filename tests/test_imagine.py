"""S4 imagine on tiny random parts: the aligner's token count, the Stable Diffusion path from audio (size, seed,
mask), the offline pixel UNet, bad audio and mismatched encoders, the judge's labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, CLIPTextConfig, CLIPTextModel, WhisperConfig

from auralm.components.encoders import build_audio_encoder, build_text_encoder, word_tokenizer
from auralm.core.errors import AudioError, ConfigError
from auralm.recipes.imagine.config import AlignerTrainConfig
from auralm.recipes.imagine.model import (
    Aligner,
    ConvAdapter,
    DiffusionConfig,
    JudgeConfig,
    build_scheduler,
    build_unet,
    diffusion_loss,
    sample_images,
    scene_labels,
)
from auralm.recipes.imagine.pipeline import ImaginePipeline, sd_generate

TINY_WHISPER = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                    encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=50)  # 1 s window
TINY_TEXT = dict(vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * g.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_encoder():
    return build_audio_encoder(WhisperConfig(**TINY_WHISPER))


@pytest.fixture(scope="module")
def clip_text():
    return build_text_encoder(CLIPTextConfig(**TINY_TEXT, max_position_embeddings=16, bos_token_id=2, eos_token_id=3))


def aligner_for(text, audio_dim=32) -> tuple[Aligner, AlignerTrainConfig]:
    cfg = AlignerTrainConfig.from_dict({"model": {"audio_dim": audio_dim, "text_dim": text.dim, "tokens": text.max_length,
                                                  "hidden": 32, "heads": 2, "layers": 1, "text_encoder": "clip-random"},
                                        "text_max_length": text.max_length})  # fmt: skip
    torch.manual_seed(0)
    return Aligner(cfg.model).eval(), cfg


@pytest.fixture(scope="module")
def sd_pipe(clip_text):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
                        norm_num_groups=32)  # fmt: skip
    text_encoder = CLIPTextModel(clip_text.model.config)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=word_tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler(steps_offset=1, clip_sample=False), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # fmt: skip


def test_the_aligner_gives_the_text_encoders_token_count(clip_text):
    bert = build_text_encoder(BertConfig(**TINY_TEXT, max_position_embeddings=64), max_length=24)
    for text in (clip_text, bert):
        aligner, _ = aligner_for(text)
        for frames in (7, 50, 333):
            states, logits = aligner(torch.randn(2, frames, 32), torch.tensor([frames, max(1, frames // 3)]))
            assert states.shape == (2, text.max_length, text.dim) and logits.shape == (2, text.max_length + 1)
            assert states.shape[1:] == text.encode(["a red circle."], pad_to_max=True)[0].shape[1:]


def test_padding_frames_do_not_change_the_aligner(clip_text):
    aligner, _ = aligner_for(clip_text)
    x = torch.randn(1, 40, 32)
    alone = aligner(x, torch.tensor([40]))[0]
    padded = torch.cat([x, torch.randn(1, 21, 32) * 9], 1)
    assert torch.allclose(aligner(padded, torch.tensor([40]))[0], alone, atol=1e-5)
    assert ConvAdapter(32, 16, 2)(torch.randn(1, 41, 32), torch.tensor([41]))[1].tolist() == [11]


def test_sd_path_makes_an_image_of_the_requested_size_from_audio(sd_pipe, clip_text, audio_encoder):
    aligner, cfg = aligner_for(clip_text)
    pipe = ImaginePipeline(aligner, cfg, audio_encoder=audio_encoder, text_encoder=clip_text, diffusers_pipe=sd_pipe)
    a = pipe.generate(audio=[speech(0.8)], seed=3, steps=3, height=24, width=32)
    assert len(a) == 1 and a[0].size == (32, 24) and a[0].mode == "RGB"
    b = pipe.generate(audio=[speech(0.8)], seed=3, steps=3, height=24, width=32)
    c = pipe.generate(audio=[speech(0.8)], seed=4, steps=3, height=24, width=32)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))  # same seed, same image
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    t = pipe.generate(text="a large red circle.", seed=3, steps=2)
    assert t[0].size == (16, 16)
    with pytest.raises(ConfigError, match="multiples of 2"):
        pipe.generate(text="a red circle.", steps=1, height=25)


def test_sd_path_honours_the_mask(sd_pipe):
    g = torch.Generator().manual_seed(0)
    states = torch.randn(1, 16, 32, generator=g)
    mask = (torch.arange(16) < 5).long()[None]
    other = states.clone()
    other[:, 5:] = torch.randn(1, 11, 32, generator=g) * 5
    a = sd_generate(sd_pipe, states, mask, seed=1, steps=2)
    b = sd_generate(sd_pipe, other, mask, seed=1, steps=2)
    c = sd_generate(sd_pipe, other, None, seed=1, steps=2)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))
    with pytest.raises(ConfigError, match="another text encoder"):
        sd_generate(sd_pipe, torch.randn(1, 16, 48), None, steps=1)


def test_offline_unet_samples_are_seeded_and_masked():
    cfg = DiffusionConfig(image_size=8, cond_dim=16, channels=[32, 32], head_dim=8)
    torch.manual_seed(0)
    unet, sched = build_unet(cfg).eval(), build_scheduler(cfg)
    states, mask = torch.randn(2, 6, 16), torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    a = sample_images(unet, sched, states, mask, steps=3, seed=5)
    assert a.shape == (2, 3, 8, 8) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, sample_images(unet, sched, states, mask, steps=3, seed=5))
    # item b depends on its own seed only: the second item alone with seed 6 is the batch's second image
    assert torch.allclose(sample_images(unet, sched, states[1:], mask[1:], steps=3, seed=6)[0], a[1], atol=1e-5)
    changed = states.clone()
    changed[0, 3:] = 7.0
    assert torch.allclose(sample_images(unet, sched, changed, mask, steps=3, seed=5)[0], a[0], atol=1e-5)
    # the ancestral sampler draws fresh noise each step, from each item's own seeded stream
    ddpm = build_scheduler(cfg, "ddpm")
    d = sample_images(unet, ddpm, states, mask, steps=4, seed=5)
    assert torch.equal(d, sample_images(unet, ddpm, states, mask, steps=4, seed=5))
    assert torch.allclose(sample_images(unet, ddpm, states[1:], mask[1:], steps=4, seed=6)[0], d[1], atol=1e-5)


def test_min_snr_weighting_down_weights_the_clean_timesteps():
    cfg = DiffusionConfig(image_size=8, cond_dim=16, channels=[32, 32], head_dim=8)
    torch.manual_seed(0)
    unet, sched = build_unet(cfg).eval(), build_scheduler(cfg, "ddpm")
    x, states, mask = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 6, 16), torch.ones(4, 6, dtype=torch.long)

    def loss(**kw):
        with torch.no_grad():
            return float(diffusion_loss(unet, sched, x, states, mask, torch.Generator().manual_seed(3), **kw))

    plain = loss()
    assert loss(snr_gamma=1e9) == pytest.approx(plain, rel=1e-6)  # gamma above every SNR: weight 1
    # by hand: the same draws, each item weighted min(SNR, 1) / SNR
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    with torch.no_grad():
        pred = unet(sched.add_noise(x, noise, t), t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    per_item = (pred - noise).pow(2).flatten(1).mean(1)
    assert per_item.mean().item() == pytest.approx(plain, rel=1e-5)
    assert loss(snr_gamma=1.0) == pytest.approx((per_item * snr.clamp(max=1.0) / snr).mean().item(), rel=1e-5)
    # t_min keeps the draws on the noisy side
    assert loss(t_min=999) != pytest.approx(plain)


def test_diffusion_conditions_are_the_text_encoders_states_encoded_once(clip_text, monkeypatch):
    from auralm.recipes.imagine.config import DiffusionTrainConfig
    from auralm.recipes.imagine.train import DiffusionTask

    captions = [["red circle", "a red one"], ["blue square"]]
    cfg = DiffusionTrainConfig.from_dict({"model": {"image_size": 8, "cond_dim": clip_text.dim, "channels": [32, 32],
                                                    "head_dim": 8}, "text_max_length": clip_text.max_length})  # fmt: skip
    task = DiffusionTask(cfg, clip_text, torch.rand(2, 3, 8, 8), captions, (torch.rand(1, 3, 8, 8), ["blue square"]))
    monkeypatch.setattr(clip_text, "encode", lambda *a, **k: pytest.fail("encoded again"))  # cached: never again
    states, mask = task.condition(["a red one", "blue square"], [False, True])
    monkeypatch.undo()
    want, lens = clip_text.encode(["a red one"], pad_to_max=True)
    torch.testing.assert_close(states[0], want[0], atol=2e-3, rtol=2e-3)  # stored in float16
    assert mask[0].sum() == lens[0] and mask[1].tolist() == [1] + [0] * (mask.shape[1] - 1)  # dropped: the null input
    assert float(states[1].abs().sum()) == 0.0


def test_bad_audio_is_refused_and_long_audio_is_windowed(clip_text, audio_encoder, sd_pipe):
    aligner, cfg = aligner_for(clip_text)
    pipe = ImaginePipeline(aligner, cfg, audio_encoder=audio_encoder, text_encoder=clip_text, diffusers_pipe=sd_pipe)
    with pytest.raises(AudioError, match="audio item 1: the audio is silent"):
        pipe.audio_features([speech(0.5), np.zeros(8000, np.float32)])
    with pytest.raises(AudioError, match="audio item 0: audio of length zero"):
        pipe.audio_features([np.zeros(0, np.float32)])
    long = speech(2.5)
    feats = pipe.audio_features([long])[0]
    # three windows of the 1 s encoder: 50 + 50 + 25 frames, all kept (never cut to the window)
    assert feats.shape == (125, 32)
    first, _ = audio_encoder([long[:16000]])
    assert torch.allclose(feats[:50], first[0], atol=1e-5)
    with pytest.raises(AudioError, match="accepts at most 1 s"):
        audio_encoder([long])  # the encoder alone refuses; the pipeline windows


def test_mismatched_encoders_are_refused(clip_text, audio_encoder):
    aligner, cfg = aligner_for(clip_text)
    wide = build_text_encoder(BertConfig(**{**TINY_TEXT, "hidden_size": 48}, max_position_embeddings=64), max_length=16)
    with pytest.raises(ConfigError, match="48-wide states, but the aligner was trained for 32-wide"):
        ImaginePipeline(aligner, cfg, text_encoder=wide)
    other_audio = build_audio_encoder(WhisperConfig(**{**TINY_WHISPER, "d_model": 64}))
    pipe = ImaginePipeline(aligner, cfg, audio_encoder=other_audio, text_encoder=clip_text)
    with pytest.raises(ConfigError, match="64-wide states; the aligner was trained on 32-wide"):
        pipe.audio_features([speech(0.5)])
    with pytest.raises(ConfigError, match="give audio or text"):
        pipe.generate()


def test_judge_labels_name_the_main_object():
    scene = {"id": "s", "objects": [{"colour": "blue", "shape": "square"}, {"colour": "red", "shape": "circle"}]}
    cfg = JudgeConfig()
    assert scene_labels(scene, cfg) == {"colour": 2, "shape": 1, "count": 1}
    with pytest.raises(ConfigError, match="outside the judge's classes"):
        scene_labels({"id": "x", "objects": [{"colour": "pink", "shape": "star"}]}, cfg)
