"""Every shipped preset loads and validates with its config class; the demo's defaults are its preset."""

from __future__ import annotations

import pytest

from auralm.core.config import load_preset, preset_names
from auralm.core.errors import ConfigError
from auralm.recipes.caption.config import TrainConfig as CaptionTrainConfig
from auralm.recipes.caption.demo import CaptionDemoConfig
from auralm.recipes.chat.config import TrainConfig as ChatTrainConfig
from auralm.recipes.chat.demo import ChatDemoConfig
from auralm.recipes.hear.config import TrainConfig, config_from_preset
from auralm.recipes.hear.demo import DemoConfig
from auralm.recipes.imagine.demo import DemoConfig as ImagineDemoConfig
from auralm.recipes.sound.demo import SoundDemoConfig

# preset name -> the config class it is read with; a new preset must be added here
CLASSES = {
    "demo": DemoConfig, "tiny-demo": DemoConfig, "demo-mix": DemoConfig,
    "hear-demo-stage1": TrainConfig, "hear-demo-stage2": TrainConfig, "hear-demo-mix-stage1": TrainConfig,
    "hear-tiny-demo-stage1": TrainConfig, "hear-tiny-demo-stage2": TrainConfig,
    "hear-tiny": TrainConfig, "hear-tiny-cross": TrainConfig,
    "sound-demo": SoundDemoConfig, "sound-tiny": SoundDemoConfig,
    "imagine-demo": ImagineDemoConfig, "imagine-tiny": ImagineDemoConfig,
    "chat-demo": ChatDemoConfig, "chat-tiny-demo": ChatDemoConfig,
    "chat-demo-stage1": ChatTrainConfig, "chat-demo-stage2": ChatTrainConfig, "chat-tiny": ChatTrainConfig,
    "caption-tiny": CaptionTrainConfig, "caption-demo": CaptionDemoConfig, "caption-study": CaptionDemoConfig,
    "caption-tiny-demo": CaptionDemoConfig,
}


def test_every_shipped_preset_has_a_config_class():
    assert set(preset_names()) == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_shipped_preset_loads_and_validates(name):
    cfg = CLASSES[name].from_dict(load_preset(name))
    assert isinstance(cfg, CLASSES[name])


def test_demo_config_defaults_are_the_demo_preset():
    assert DemoConfig.from_dict(load_preset("demo")) == DemoConfig()


@pytest.mark.parametrize("demo", ["demo", "tiny-demo", "demo-mix"])
def test_demo_stage_presets_are_stages_one_and_two_with_one_encoder(demo):
    cfg = DemoConfig.from_dict(load_preset(demo))
    one, two = config_from_preset(cfg.stage1_preset), config_from_preset(cfg.stage2_preset)
    assert (one.stage, two.stage) == (1, 2) and one.model.lora.r == 0 < two.model.lora.r
    assert one.model.encoder == two.model.encoder and one.model.connector == two.model.connector
    assert one.model.ctc_weight > 0 and one.model.lm_weight == 0 and two.model.feed == "ctc_soft"
    # stage 2 builds stage 1's phone head (its weights and lexicon load into it); the demo rescores a head it has
    phone = lambda m: (m.phone_weight, m.phone_hidden, m.phone_rnn_layers)  # noqa: E731
    assert phone(one.model) == phone(two.model)
    assert (one.model.phone_weight if cfg.rescore_head == "phones" else one.model.ctc_weight) > 0


def test_demo_stage_lengths_are_the_measured_run():
    one, two = config_from_preset("hear-demo-stage1"), config_from_preset("hear-demo-stage2")
    assert (one.optim.max_steps, two.optim.max_steps) == (2000, 160)
    assert (one.optim.max_minutes, two.optim.max_minutes) == (15.0, 11.0)  # guards, not the run's length
    assert one.model.ctc_negatives == two.model.ctc_negatives == 2048 and two.optim.connector_lr_scale == 0


def test_demo_refuses_stage_presets_in_the_wrong_order(tmp_path):
    from auralm.core.errors import ConfigError
    from auralm.recipes.hear.demo import _stage_configs

    cfg = DemoConfig(stage1_preset="hear-demo-stage2", stage2_preset="hear-demo-stage1")
    with pytest.raises(ConfigError, match="stage-2 preset"):
        _stage_configs(cfg, tmp_path)
    stages = _stage_configs(DemoConfig(stage2_preset=""), tmp_path)
    assert len(stages) == 1 and stages[0].data.manifest == str(tmp_path / "corpus" / "manifest.jsonl")
    assert stages[0].out == str(tmp_path / "stage1") and stages[0].data.cache_dir == str(tmp_path / "embeddings")


def test_chat_demo_stages_share_encoders_and_projector_shapes():
    from auralm.recipes.chat.config import config_from_preset as chat_preset

    demo = ChatDemoConfig.from_dict(load_preset("chat-demo"))
    one, two = chat_preset(demo.stage1_preset), chat_preset(demo.stage2_preset)
    assert (one.stage, two.stage) == (1, 2) and one.model.lora.r == 0 < two.model.lora.r
    assert one.model.replace(lora=two.model.lora) == two.model  # stage 2 loads stage 1's weights into the same shapes


def test_demo_corpus_settings_build_the_synth_config():
    from auralm.data.synth import WIDE_VOICES, match_voices

    demo = DemoConfig.from_dict(load_preset("demo-mix"))
    cfg = demo.synth_config("x")
    assert cfg.voices == WIDE_VOICES and cfg.n == demo.n_clips == 10000 and cfg.flite_share == 0.3
    held = {v for pattern in cfg.eval_voices for v in match_voices(pattern, cfg.voices)}
    assert len(held) == 20 + 8 - 1 + 1 and "flite:rms" in held and "espeak-ng:en-us+steph" in held
    assert set(cfg.sources) == {"fortunes", "wordnet-examples", "gcide-quotes", "wordnet-definitions"}
    with pytest.raises(ConfigError, match="unknown text source"):
        DemoConfig(sources={"novels": 1.0})


def test_the_mix_demo_is_the_demo_with_another_corpus_and_a_longer_stage_one():
    demo, mix = DemoConfig(), DemoConfig.from_dict(load_preset("demo-mix"))
    same = ("seed", "test_frac", "valid_frac", "stage2_preset", "copy_bias", "max_eval_clips")
    assert all(getattr(demo, k) == getattr(mix, k) for k in same)
    one, mix_one = config_from_preset(demo.stage1_preset), config_from_preset(mix.stage1_preset)
    assert mix_one.optim.max_steps == 2 * one.optim.max_steps
    assert mix_one.replace(optim=one.optim, out=one.out) == one
    plain = DemoConfig().synth_config("x")
    assert plain.sources == {"fortunes": 1.0} and not plain.eval_voices and len(plain.voices) == 17
