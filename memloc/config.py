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


@dataclass(frozen=True)
class GradientsConfig:
    accounting: bool = opt(True, "during training, per epoch and layer group: clean, noisy and total gradient norms (tables gradients, gradient_tensors)")
    example_epochs: tuple = opt((), "checkpoints at which stage example_gradients computes every example's gradient norm per group; "
                                "empty = the epoch where the lr peaks, the middle and the last")
    chunk_size: int = opt(256, "examples per batched pass of per-example gradient norms (bounds memory)")

    def validate(self) -> None:
        ok = all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.example_epochs)
        _check(ok, "gradients.example_epochs", "a list of epochs (integers >= 0), e.g. [10, 25, 50]", list(self.example_epochs))
        _check(self.chunk_size >= 1, "gradients.chunk_size", "an integer >= 1", self.chunk_size)

    def epochs_for(self, train: TrainConfig) -> list[int]:
        """The checkpoints of the per-example gradient norms, sorted, each once."""
        auto = (round(train.peak_epoch), (train.epochs + 1) // 2, train.epochs)
        return sorted(set(self.example_epochs or auto))


@dataclass(frozen=True)
class FlipConfig:
    n_noisy: int = opt(100, "memorized noisy examples to flip (seeded choice); -1 = all, 0 = none")
    n_clean: int = opt(100, "correctly predicted clean examples to flip (seeded choice); -1 = all, 0 = none")
    example_ids: tuple = opt((), "flip exactly these training example ids instead of n_noisy / n_clean")
    batch_size: int = opt(512, "reference batch size |B| of the objective J, target included (paper: 512)")
    cap: int = opt(200, "most units zeroed per example; not flipped by then = recorded as not flipped")
    robust: bool = opt(False, "average logits over noisy input copies for J and the flip test")
    noise_draws: int = opt(5, "noisy copies per input in the robust variant")
    noise_rel: float = opt(0.01, "L2 norm of the robust variant's noise relative to the input's")
    eval_train: int = opt(2000, "training examples of the collateral-accuracy subset (seeded); 0 = all")
    eval_test: int = opt(2000, "test examples of the collateral-accuracy subset (seeded); 0 = all")
    seed: int = opt(0, "seed of target choice, reference batches, noise, evaluation subset, random controls")
    targets_per_step: int = opt(32, "targets flipped at once, each with its own unit masks (more fills a GPU)")
    chunk_rows: int = opt(4096, "most forward rows (targets x batch items) per pass; bounds memory")
    save_every: int = opt(200, "targets between saved progress of the flip stage (resume point)")

    def validate(self) -> None:
        _check(self.n_noisy >= -1, "flip.n_noisy", "-1 (all) or a count >= 0", self.n_noisy)
        _check(self.n_clean >= -1, "flip.n_clean", "-1 (all) or a count >= 0", self.n_clean)
        ok = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.example_ids)
        _check(ok, "flip.example_ids", "a list of training example ids (integers >= 0)", list(self.example_ids))
        _check(self.batch_size >= 2, "flip.batch_size", "an integer >= 2 (the target and at least one other)", self.batch_size)
        _check(self.cap >= 1, "flip.cap", "an integer >= 1", self.cap)
        _check(self.noise_draws >= 1, "flip.noise_draws", "an integer >= 1", self.noise_draws)
        _check(self.noise_rel >= 0 and math.isfinite(self.noise_rel), "flip.noise_rel", "a number >= 0", self.noise_rel)
        _check(self.eval_train >= 0, "flip.eval_train", "0 (all) or a positive count", self.eval_train)
        _check(self.eval_test >= 0, "flip.eval_test", "0 (all) or a positive count", self.eval_test)
        _check(self.targets_per_step >= 1, "flip.targets_per_step", "an integer >= 1", self.targets_per_step)
        _check(self.chunk_rows >= 1, "flip.chunk_rows", "an integer >= 1", self.chunk_rows)
        _check(self.save_every >= 1, "flip.save_every", "an integer >= 1", self.save_every)


@dataclass(frozen=True)
class DropoutConfig:
    p_gen: float = opt(0.2, "share of each dropout layer's units that are generalization units (always on), in (0, 1)")
    p_mem: float = opt(0.1, "probability that an example keeps a given memorization unit, in (0, 1)")
    seed: int = opt(0, "seed of the example-tied masks (a mask is a function of example id, layer, seed)")
    after: tuple = opt((), "blocks / hidden layers followed by example-tied dropout; empty = all the model offers")
    epochs: int = opt(0, "training epochs of the dropout model; 0 = train.epochs (the same schedule)")

    def validate(self) -> None:
        _check(0 < self.p_gen < 1, "dropout.p_gen", "a fraction in (0, 1)", self.p_gen)
        _check(0 < self.p_mem < 1, "dropout.p_mem", "a fraction in (0, 1)", self.p_mem)
        _check(self.epochs >= 0, "dropout.epochs", "0 (= train.epochs) or an integer >= 1", self.epochs)

    def model_option(self) -> dict[str, Any]:
        """The zoo's `example_tied_dropout` model option for these settings."""
        option = {"p_gen": self.p_gen, "p_mem": self.p_mem, "seed": self.seed}
        return {**option, "after": list(self.after)} if self.after else option


def _check_dropout(cfg: "RunConfig") -> None:
    """The dropout model must be buildable, and the main model must not carry the dropout itself."""
    import models

    from memloc.data import INPUT_SHAPES

    own = dict(cfg.model.options).get("example_tied_dropout")
    _check(own is None, "model.options.example_tied_dropout",
           "unset (the `dropout` stage trains its own model; configure it with dropout.*)", own)
    if "dropout" not in cfg.stages:
        return
    epochs = cfg.dropout.epochs or cfg.train.epochs
    _check(cfg.train.peak_epoch <= epochs, "dropout.epochs", f"at least train.peak_epoch={cfg.train.peak_epoch}", epochs)
    options = {**dict(cfg.model.options), "example_tied_dropout": cfg.dropout.model_option()}
    try:
        models.build(cfg.model.name, INPUT_SHAPES[cfg.data.name], 10, **options)
    except TypeError:
        raise ConfigError(f"dropout: model {cfg.model.name!r} has no example-tied dropout (mlp, cnn and resnet9 do); "
                          "leave `dropout` out of stages") from None
    except ValueError as e:
        raise ConfigError(f"dropout: {e}") from None


@dataclass(frozen=True)
class RewindConfig:
    epochs: tuple = opt((), "checkpoints each layer group is rewound to; empty = 0, 1, 2, 4, 6, ... and the last epoch")
    include_buffers: bool = opt(True, "rewind BatchNorm running statistics with the parameters (false: parameters only, the authors' variant)")
    cache_mb: int = opt(1024, "memory (MiB) for the activations in front of the rewound group, computed once per group; more data runs in chunks")

    def validate(self) -> None:
        ok = all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in self.epochs)
        _check(ok, "rewind.epochs", "a list of epochs (integers >= 0), e.g. [0, 5, 10]", list(self.epochs))
        _check(self.cache_mb >= 0, "rewind.cache_mb", "an integer >= 0", self.cache_mb)

    def epochs_for(self, train: TrainConfig) -> list[int]:
        """The rewind epochs, sorted, each once (auto: 0, 1, 2, 4, 6, ... and the last)."""
        auto = {0, 1, *range(2, train.epochs, 2), train.epochs}
        return sorted(set(self.epochs) if self.epochs else auto)


@dataclass(frozen=True)
class RetrainConfig:
    lr: float = opt(0.01, "peak learning rate of the triangle schedule")
    peak_epoch: float = opt(10.0, "epoch at which the learning rate peaks (rises linearly from 0, falls to 0 at max_epochs)")
    max_epochs: int = opt(20, "most retraining epochs per layer group")
    patience: int = opt(3, "stop after this many epochs ended at 100% clean accuracy")
    batch_size: int = opt(0, "batch size of retraining; 0 = train.batch_size")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-4, "SGD weight decay")
    cache_mb: int = opt(1024, "memory (MiB) for the frozen activations in front of the group, computed once; larger runs the whole model per batch")

    def validate(self) -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), "retrain.lr", "a positive number", self.lr)
        _check(self.max_epochs >= 1, "retrain.max_epochs", "an integer >= 1", self.max_epochs)
        _check(0 < self.peak_epoch <= self.max_epochs, "retrain.peak_epoch", f"in (0, retrain.max_epochs={self.max_epochs}]", self.peak_epoch)
        _check(self.patience >= 1, "retrain.patience", "an integer >= 1", self.patience)
        _check(self.batch_size >= 0, "retrain.batch_size", "0 (= train.batch_size) or an integer >= 1", self.batch_size)
        _check(0 <= self.momentum < 1, "retrain.momentum", "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "retrain.weight_decay", "a number >= 0", self.weight_decay)
        _check(self.cache_mb >= 0, "retrain.cache_mb", "an integer >= 0", self.cache_mb)


#: Stages of `precompute run`, in the order they run. Later stages read what earlier ones wrote.
STAGES: tuple[str, ...] = ("train", "example_gradients", "rewind", "retrain", "flip", "dropout")


@dataclass(frozen=True)
class RunConfig:
    stages: tuple = opt(STAGES, f"stages to run, a subset of {', '.join(STAGES)}")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gradients: GradientsConfig = field(default_factory=GradientsConfig)
    flip: FlipConfig = field(default_factory=FlipConfig)
    dropout: DropoutConfig = field(default_factory=DropoutConfig)
    rewind: RewindConfig = field(default_factory=RewindConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        _check(not bad and len(self.stages) > 0, "stages", f"a non-empty list from {', '.join(STAGES)}", list(self.stages))
        for section in SECTIONS:
            getattr(self, section).validate()
        _check_model_options(self)
        late = [e for e in self.gradients.example_epochs if e > self.train.epochs]
        _check(not late, "gradients.example_epochs", f"epochs in 0..train.epochs={self.train.epochs}", list(self.gradients.example_epochs))
        _check_dropout(self)
        late = [e for e in self.rewind.epochs if e > self.train.epochs]
        _check(not late, "rewind.epochs", f"epochs in 0..train.epochs={self.train.epochs}", list(self.rewind.epochs))

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
SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "gradients": GradientsConfig, "flip": FlipConfig, "dropout": DropoutConfig,
                             "rewind": RewindConfig, "retrain": RetrainConfig}


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"name": "digits", "train_size": 400, "test_size": 200},
        "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
        "train": {"epochs": 3, "batch_size": 128, "peak_epoch": 1.0},
        "flip": {"n_noisy": 4, "n_clean": 4, "batch_size": 32, "cap": 20, "eval_train": 100, "eval_test": 100, "save_every": 4},
        "retrain": {"max_epochs": 3, "peak_epoch": 1.0},
    },
    "demo": {
        "data": {"name": "digits"},
        "model": {"name": "mlp", "options": {"hidden": [512, 512]}},
        # The paper's optimizer on a small MLP; batch 64 so 1,437 images give enough steps to
        # memorize every noisy label (about epoch 37) within 60 epochs (peak at 20%, as 10/50).
        "train": {"epochs": 60, "batch_size": 64, "peak_epoch": 12.0},
        # 100 noisy + 100 clean examples with the paper's batch of 512 and cap of 200; the
        # evaluation subset is the whole of digits (fewer than 2,000 examples per split).
        "flip": {"n_noisy": 100, "n_clean": 100},
    },
    "fashion-mnist": {
        "data": {"name": "fashion-mnist", "train_size": 5000, "test_size": 2000},
        "model": {"name": "resnet9", "options": {"width": 0.25}},
        "train": {"epochs": 30, "batch_size": 512, "peak_epoch": 6.0},
        # Greedy flipping of a ResNet-9 costs a forward and backward pass of |B| images per unit
        # zeroed: on a CPU 50 + 50 examples with |B| = 256 and a 1,000 + 1,000 evaluation subset
        # keep the stage to minutes; chunks of 1,024 rows keep its memory near 1 GB.
        "flip": {"n_noisy": 50, "n_clean": 50, "batch_size": 256, "eval_train": 1000, "eval_test": 1000, "chunk_rows": 1024},
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
        if isinstance(value, str):  # `--set rewind.epochs=0,5`: each item read like a value
            value = [parse_override(f"v={v}")[1] for v in value.split(",") if v.strip()]
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
    "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "GradientsConfig", "FlipConfig", "DropoutConfig", "RewindConfig", "RetrainConfig", "RunConfig", "STAGES", "PRESETS",
    "DEFAULT_PRESET", "resolve", "from_dict", "load_toml", "parse_override", "known_keys",
    "describe_keys",
]
