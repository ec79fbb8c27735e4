"""Config machinery: validation on construction, unknown keys, overrides, YAML round trip, presets."""

from __future__ import annotations

import dataclasses

import pytest

from auralm.core.config import (
    Config,
    ConfigError,
    apply_overrides,
    help_field,
    load_preset,
    preset_names,
    save_config,
)


@dataclasses.dataclass
class Optim(Config):
    lr: float = help_field(1e-3, "learning rate")
    betas: list = help_field([0.9, 0.99], "Adam betas")

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")


@dataclasses.dataclass
class Run(Config):
    name: str = "run"
    steps: int = 10
    cpu: bool = True
    optim: Optim = dataclasses.field(default_factory=Optim)


def test_validates_on_construction():
    with pytest.raises(ConfigError, match="optim.lr must be positive"):
        Optim(lr=-1.0)


def test_unknown_key_names_valid_ones():
    with pytest.raises(ConfigError) as info:
        Run.from_dict({"name": "x", "stepz": 3})
    assert "'stepz'" in str(info.value) and "steps" in str(info.value) and "optim" in str(info.value)


def test_nested_unknown_key_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"optim\.beta"):
        Run.from_dict({"optim": {"beta": 1}})


def test_overrides_parse_yaml_scalars_and_nested_keys():
    cfg = apply_overrides(Run(), ["optim.lr=3e-4", "steps=5", "cpu=false", "name=hello world", "optim.betas=[0.5, 0.6]"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.steps == 5 and cfg.cpu is False and cfg.name == "hello world"
    assert cfg.optim.betas == [0.5, 0.6]


@pytest.mark.parametrize(
    "override, message",
    [("optim.lrr=1", "optim has keys lr, betas"), ("steps", "key=value"), ("steps.x=1", "is a value"),
     ("optim.lr=-2", "must be positive"), ("steps=abc", "expected a number"), ("cpu=3", "true or false")],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Run(), [override])


def test_int_is_accepted_for_float_and_mutable_defaults_are_not_shared():
    assert Optim(lr=1).lr == 1.0 and isinstance(Optim(lr=1).lr, float)
    a, b = Optim(), Optim()
    a.betas.append(1.0)
    assert b.betas == [0.9, 0.99]


def test_yaml_round_trip_is_atomic_file(tmp_path):
    cfg = apply_overrides(Run(), ["optim.lr=0.5"])
    path = save_config(cfg, tmp_path / "out")
    assert path.read_text().startswith("name: run")
    assert Run.from_yaml(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left behind


def test_every_shipped_preset_loads():
    names = preset_names()
    assert names, "no presets shipped"
    for name in names:
        assert isinstance(load_preset(name), dict)
    with pytest.raises(ConfigError, match="known presets"):
        load_preset("no-such-preset")


def test_comma_list_strips_items_and_drops_empty_ones():
    from auralm.core.config import comma_list

    assert comma_list(" cross, sound,,") == ["cross", "sound"]
    assert comma_list("") == []
