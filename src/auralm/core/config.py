"""Dataclass configs that validate themselves, YAML in and out, and `key.sub=value` overrides.

Every command's settings are a dataclass deriving from :class:`Config`. A config

* validates on construction (``__post_init__`` calls :meth:`Config.validate`),
* is built from plain dicts with :meth:`Config.from_dict`, where an unknown key is an error that
  names the valid ones (nested dataclasses are built recursively),
* takes command-line overrides such as ``train.lr=3e-4`` with :func:`apply_overrides`,
* is saved beside every output with :func:`save_config` (atomically), so a run can be repeated.

Field help lives in ``field(metadata={"help": ...})`` and doubles as CLI help.
This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from auralm.core.errors import ConfigError
from auralm.core.io import atomic_write_text

C = TypeVar("C", bound="Config")


def help_field(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with a help text (shown by ``auralm <cmd> --help`` and in docs)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


@dataclasses.dataclass
class Config:
    """Base class: subclasses are dataclasses; override :meth:`validate` to check invariants."""

    def __post_init__(self) -> None:
        self._coerce_types()
        self.validate()

    def validate(self) -> None:  # pragma: no cover - default accepts everything
        """Raise :class:`ConfigError` naming the field when a value is invalid."""

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, where: str = "") -> C:
        data = dict(data or {})
        valid = cls.field_names()
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(repr(where + k) for k in unknown)} for {cls.__name__}; "
                f"valid keys: {', '.join(valid)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            sub = _dataclass_type(hints.get(f.name))
            if sub is not None and isinstance(value, dict):
                value = sub.from_dict(value, where=f"{where}{f.name}.")
            kwargs[f.name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    # -- helpers ------------------------------------------------------------------------------
    def _coerce_types(self) -> None:
        """Accept ints for float fields and strings for Path-like str fields; reject the rest."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            hint = hints.get(f.name)
            if value is None or hint is None:
                continue
            if hint in (int, float) and isinstance(value, str):
                # YAML 1.1 reads "3e-4" (no dot) as a string; accept it as the number it spells
                try:
                    value = hint(value) if hint is int else float(value)
                except ValueError:
                    raise ConfigError(f"{type(self).__name__}.{f.name}: expected a number, got {value!r}") from None
                setattr(self, f.name, value)
            elif hint is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif hint is int and isinstance(value, float) and value.is_integer():
                setattr(self, f.name, int(value))
            elif hint in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"{type(self).__name__}.{f.name}: expected a number, got {value!r}")
            elif hint is bool and not isinstance(value, bool):
                raise ConfigError(f"{type(self).__name__}.{f.name}: expected true or false, got {value!r}")
            elif hint is str and not isinstance(value, str):
                raise ConfigError(f"{type(self).__name__}.{f.name}: expected a string, got {value!r}")


def recipe_field(name: str) -> Any:
    """The ``recipe`` field of a config saved beside a checkpoint: ``auralm.load()`` dispatches on it."""
    return dataclasses.field(default=name, metadata={"help": f"the recipe that reads this config (always {name!r}; "
                                                             "auralm.load() dispatches on it)"})


def check_recipe(cfg: Config, name: str) -> None:
    if getattr(cfg, "recipe", None) != name:
        raise ConfigError(f"{type(cfg).__name__}.recipe must be {name!r}, got {getattr(cfg, 'recipe', None)!r}")


def _dataclass_type(hint: Any) -> type[Config] | None:
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and issubclass(arg, Config):
                return arg
    return None


def comma_list(text: str) -> list[str]:
    """A command-line list: ``"a, b,,c"`` -> ``["a", "b", "c"]`` (items stripped, empty ones dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3). Values are parsed as YAML scalars (``true``, ``1e-3``, ``[1, 2]``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (for example train.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return a new config with ``key.sub=value`` overrides applied and validated."""
    data = cfg.to_dict()
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        cls: Any = type(cfg)
        for depth, part in enumerate(path):
            valid = cls.field_names() if cls else list(node)
            if part not in valid:
                where = ".".join(path[:depth]) or type(cfg).__name__
                raise ConfigError(f"unknown config key {'.'.join(path)!r}: {where} has keys {', '.join(valid)}")
            if depth == len(path) - 1:
                node[part] = value
            else:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"{'.'.join(path[: depth + 1])!r} is a value, not a section")
                cls = _dataclass_type(typing.get_type_hints(cls).get(part)) if cls else None
                node = node[part]
    return type(cfg).from_dict(data)


def _preset_files() -> dict[str, Any]:
    """Every packaged preset: ``recipes/<recipe>/presets/NAME.yaml`` -> {NAME: resource}."""
    found: dict[str, Any] = {}
    recipes = importlib.resources.files("auralm") / "recipes"
    for recipe in sorted(recipes.iterdir(), key=lambda r: r.name):
        folder = recipe / "presets"
        if recipe.is_dir() and folder.is_dir():
            for p in folder.iterdir():
                if p.name.endswith(".yaml"):
                    found[p.name[: -len(".yaml")]] = p
    return found


def preset_names() -> list[str]:
    return sorted(_preset_files())


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a packaged preset (``recipes/*/presets/NAME.yaml``) or of a YAML file path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        res = _preset_files().get(name)
        if res is None:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(preset_names())}")
        text = res.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name!r} is not a mapping")
    return data


def save_config(cfg: Config, folder: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs (atomically) and return its path."""
    path = Path(folder) / name
    atomic_write_text(path, cfg.to_yaml())
    return path
