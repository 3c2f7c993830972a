"""Run configuration: frozen dataclasses, presets, and validated overrides.

A run is described by one `RunConfig`, made of sections (`data`, `model`, `train`, ...).
Every field has a default, a type and a help text (shown by `python -m precompute --help`).
Presets are named sets of overrides on top of the defaults; users override them key by key
(`--set train.epochs=30`) or from a TOML file. Every unknown key, wrong type or out-of-range
value raises `ConfigError` naming the key and what is allowed, before anything runs.

The defaults are PAPER.md's training setting: SGD with momentum 0.9, weight decay 5e-4,
batch size 512, 50 epochs, one-cycle learning rate peaking at 0.1 at epoch 10, 10% label noise.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
from dataclasses import dataclass, field
from typing import Any

from memloc.data import DATASETS


class ConfigError(ValueError):
    """A configuration problem; the message names the key and the allowed values."""


def opt(default: Any, help: str) -> Any:
    """A config field with its help text (immutable defaults only)."""
    return field(default=default, metadata={"help": help})


def _check(ok: bool, key: str, allowed: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: {allowed}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    name: str = opt("digits", f"data set, one of {', '.join(DATASETS)}")
    root: str = opt("", "data root; empty = $MEMLOC_DATA or ./data")
    download: bool = opt(False, "allow torchvision to download the data set (needs internet)")
    train_size: int = opt(0, "use a seeded random subset of this many training examples; 0 = all")
    test_size: int = opt(0, "use a seeded random subset of this many test examples; 0 = all")
    subset_seed: int = opt(0, "seed of the train/test subsets")
    noise_frac: float = opt(0.1, "share of training labels flipped to a wrong class, in [0, 1)")
    noise_seed: int = opt(0, "seed of the label noise (independent of the model seed)")
    augment: bool = opt(False, "random crop + flip of training batches")

    def validate(self) -> None:
        _check(self.name in DATASETS, "data.name", f"one of {', '.join(DATASETS)}", self.name)
        _check(0.0 <= self.noise_frac < 1.0, "data.noise_frac", "a fraction in [0, 1)", self.noise_frac)
        _check(self.train_size >= 0, "data.train_size", "0 (all) or a positive count", self.train_size)
        _check(self.test_size >= 0, "data.test_size", "0 (all) or a positive count", self.test_size)


@dataclass(frozen=True)
class ModelConfig:
    name: str = opt("mlp", "architecture from the model zoo (mlp, cnn, resnet9, resnet50, vit)")
    options: dict = field(
        default_factory=lambda: types.MappingProxyType({}),  # read-only: configs are values
        metadata={"help": "architecture options, e.g. model.options.width=0.25 (resnet9, cnn) or "
                  "model.options.hidden=[256,256] (mlp); checked by building the model"},
    )

    def validate(self) -> None:
        import models

        _check(self.name in models.NAMES, "model.name", f"one of {', '.join(models.NAMES)}", self.name)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = opt(50, "training epochs (a checkpoint is kept after each; epoch 0 = init)")
    batch_size: int = opt(512, "training batch size")
    lr: float = opt(0.1, "peak learning rate of the one-cycle schedule")
    peak_epoch: float = opt(10.0, "epoch at which the learning rate peaks (rises linearly from 0)")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-4, "SGD weight decay")
    seed: int = opt(0, "seed of model initialization and batch order")
    eval_batch_size: int = opt(4096, "batch size of evaluation passes")

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        _check(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _check(self.eval_batch_size >= 1, "train.eval_batch_size", "an integer >= 1", self.eval_batch_size)
        _check(self.lr > 0 and math.isfinite(self.lr), "train.lr", "a positive number", self.lr)
        _check(0 < self.peak_epoch <= self.epochs, "train.peak_epoch", f"in (0, train.epochs={self.epochs}]", self.peak_epoch)
        _check(0 <= self.momentum < 1, "train.momentum", "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)


#: Stages of `precompute run`, in the order they run. Later stages read what earlier ones wrote.
STAGES: tuple[str, ...] = ("train",)


@dataclass(frozen=True)
class RunConfig:
    stages: tuple = opt(STAGES, f"stages to run, a subset of {', '.join(STAGES)}")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        _check(not bad and len(self.stages) > 0, "stages", f"a non-empty list from {', '.join(STAGES)}", list(self.stages))
        for section in SECTIONS:
            getattr(self, section).validate()
        _check_model_options(self)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def _check_model_options(cfg: RunConfig) -> None:
    """Build the model once on the CPU so bad architecture options fail before anything runs."""
    import models

    from memloc.data import INPUT_SHAPES

    try:
        models.build(cfg.model.name, INPUT_SHAPES[cfg.data.name], 10, **dict(cfg.model.options))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.options: {e}") from None


def _plain(value: Any) -> Any:
    """JSON-friendly copy: dataclasses and mapping proxies become dicts, tuples lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


#: The sections of a run config; a stage with settings adds its dataclass here and to RunConfig.
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"name": "digits", "train_size": 400, "test_size": 200},
        "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
        "train": {"epochs": 3, "batch_size": 128, "peak_epoch": 1.0},
    },
    "demo": {
        "data": {"name": "digits"},
        "model": {"name": "mlp", "options": {"hidden": [512, 512]}},
        # The paper's optimizer on a small MLP; batch 64 so 1,437 images give enough steps to
        # memorize every noisy label (about epoch 37) within 60 epochs (peak at 20%, as 10/50).
        "train": {"epochs": 60, "batch_size": 64, "peak_epoch": 12.0},
    },
    "fashion-mnist": {
        "data": {"name": "fashion-mnist", "train_size": 5000, "test_size": 2000},
        "model": {"name": "resnet9", "options": {"width": 0.25}},
        "train": {"epochs": 30, "batch_size": 512, "peak_epoch": 6.0},
    },
    "paper-cifar10-resnet9": {
        "data": {"name": "cifar10"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
    "paper-mnist-resnet9": {
        "data": {"name": "mnist"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
    "paper-svhn-resnet9": {
        "data": {"name": "svhn"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
}
DEFAULT_PRESET = "demo"


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, value); the value is read as TOML, else taken as a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.epochs=30")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: not valid TOML ({e})") from None


def resolve(preset: str = DEFAULT_PRESET, *layers: dict[str, Any], overrides: list[str] = ()) -> RunConfig:
    """Defaults <- preset <- each layer (e.g. a TOML file) <- `key=value` overrides, validated."""
    if preset not in PRESETS:
        raise ConfigError(f"--preset: one of {', '.join(PRESETS)}, got {preset!r}")
    merged: dict[str, Any] = {}
    for layer in (PRESETS[preset], *layers):
        _merge(merged, _flatten(layer))
    _merge(merged, dict(parse_override(text) for text in overrides))
    cfg = _build(merged)
    cfg.validate()
    return cfg


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Rebuild a config stored in a manifest (validated like any other)."""
    cfg = _build(_flatten(d))
    cfg.validate()
    return cfg


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.startswith("model.options."):
            if key == "model.options":
                out.update({f"{key}.{ok}": ov for ok, ov in v.items()})
                if not v:
                    out[key] = {}
            else:
                out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    new_arch = "model.name" in layer and layer["model.name"] != into.get("model.name")
    if new_arch or any(k.startswith("model.options") for k in layer):
        # A layer that sets model options, or another architecture, replaces the whole options
        # table: options of one architecture rarely make sense for another.
        for k in [k for k in into if k.startswith("model.options")]:
            del into[k]
    into.update(layer)


def _build(flat: dict[str, Any]) -> RunConfig:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    top: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in flat.items():
        if key.startswith("model.options."):
            options[key.removeprefix("model.options.")] = _plain(value)
            continue
        if key == "model.options":
            _check(isinstance(value, dict), key, "a table of architecture options", value)
            options.update(_plain(value))
            continue
        section, _, name = key.partition(".")
        if not name:
            section, name = "", section
        cls = SECTIONS.get(section, RunConfig if not section else None)
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
        if name not in fields or (cls is RunConfig and name in SECTIONS):
            raise ConfigError(f"unknown key {key!r}; known keys: {', '.join(known_keys())}")
        typed = _coerce(key, value, fields[name].default)
        (top if cls is RunConfig else sections[section])[name] = typed
    built = {name: cls(**sections[name]) for name, cls in SECTIONS.items()}
    built["model"] = dataclasses.replace(built["model"], options=types.MappingProxyType(options))
    return RunConfig(**top, **built)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the type of the field's default; ints are accepted as floats."""
    kind = type(default)
    if kind is bool:
        _check(isinstance(value, bool), key, "true or false", value)
    elif kind is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
    elif kind is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number", value)
        value = float(value)
    elif kind is str:
        _check(isinstance(value, str), key, "a string", value)
    elif kind is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, (list, tuple)), key, "a list, e.g. [\"train\"]", value)
        value = tuple(value)
    return value


def known_keys() -> list[str]:
    keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS]
    for section, cls in SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def describe_keys() -> str:
    """Every key with its default and help text, for `--help`."""
    lines = []
    defaults = RunConfig()
    for key in known_keys():
        section, _, name = key.partition(".")
        owner = getattr(defaults, section) if name else defaults
        fname = name or section
        f = next(f for f in dataclasses.fields(owner) if f.name == fname)
        default = _plain(getattr(owner, fname))
        lines.append(f"  {key:<22} {f.metadata['help']} (default: {default!r})")
    return "\n".join(lines)


__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "RunConfig", "STAGES", "PRESETS",
    "DEFAULT_PRESET", "resolve", "from_dict", "load_toml", "parse_override", "known_keys",
    "describe_keys",
]
