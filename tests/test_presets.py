"""Every shipped preset loads and validates with its config class; the demo's defaults are its preset."""

from __future__ import annotations

import pytest

from auralm.core.config import load_preset, preset_names
from auralm.recipes.caption.config import TrainConfig as CaptionTrainConfig
from auralm.recipes.caption.demo import CaptionDemoConfig
from auralm.recipes.hear.config import TrainConfig, config_from_preset
from auralm.recipes.hear.demo import DemoConfig
from auralm.recipes.sound.demo import SoundDemoConfig

# preset name -> the config class it is read with; a new preset must be added here
CLASSES = {
    "demo": DemoConfig, "tiny-demo": DemoConfig,
    "hear-demo-stage1": TrainConfig, "hear-demo-stage2": TrainConfig,
    "hear-tiny-demo-stage1": TrainConfig, "hear-tiny-demo-stage2": TrainConfig,
    "hear-tiny": TrainConfig, "hear-tiny-cross": TrainConfig,
    "sound-demo": SoundDemoConfig, "sound-tiny": SoundDemoConfig,
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


@pytest.mark.parametrize("demo", ["demo", "tiny-demo"])
def test_demo_stage_presets_are_stages_one_and_two_with_one_encoder(demo):
    cfg = DemoConfig.from_dict(load_preset(demo))
    one, two = config_from_preset(cfg.stage1_preset), config_from_preset(cfg.stage2_preset)
    assert (one.stage, two.stage) == (1, 2) and one.model.lora.r == 0 < two.model.lora.r
    assert one.model.encoder == two.model.encoder and one.model.connector == two.model.connector
    assert one.model.ctc_weight > 0 and one.model.lm_weight == 0 and two.model.feed == "ctc_soft"


def test_demo_stage_lengths_are_the_measured_run():
    one, two = config_from_preset("hear-demo-stage1"), config_from_preset("hear-demo-stage2")
    assert (one.optim.max_steps, two.optim.max_steps) == (2000, 160)
    assert (one.optim.max_minutes, two.optim.max_minutes) == (10.0, 11.0)  # guards, not the run's length
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
