"""Shared pieces of the model zoo: input checks, options (the example-tied dropout's
`DropoutOptions` of `models.example_tied_dropout`), and the layer-group partition.

Every model built by `models.build` declares

- `layer_groups`: ordered (input to output) mapping group name -> module-name prefixes. A
  parameter, buffer or module named `n` belongs to group `g` iff `in_group(n, prefixes of g)`:
  some prefix `p` has `n == p` or `n.startswith(p + ".")`. The groups partition all parameters
  and buffers (BatchNorm running statistics included), so rewinding or retraining a group
  moves a well-defined state.
- `unit_layers`: paths of the `nn.Conv2d` / `nn.Linear` modules whose output channels / output
  neurons are *units* that analyses may zero; the final classifier is never one of them.
- `arch` and `options`: the model name and its resolved, JSON-serializable options, so that
  `build(model.arch, model.input_shape, model.num_classes, **model.options)` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from itertools import chain
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: this module imports no torch, so configs are checked without it
    from torch import nn


def check_input(input_shape: tuple[int, int, int], num_classes: int) -> tuple[int, int, int]:
    """Return `input_shape` as a tuple after checking it is (C, H, W) and `num_classes >= 2`."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return shape


def check_range(key: str, value: Any, lo: float, hi: float, *, integer: bool = False,
                open_lo: bool = False, open_hi: bool = False) -> None:
    """Raise ValueError("key: a number in (lo, hi], got value") unless `value` is a finite number
    (an integer if `integer`; never a bool) from `lo` to `hi`, each end included unless open.

    The one range check of memloc's settings and the zoo's options (`memloc.settings.in_range`
    is this one raising ConfigError): numbers that are too large allocate forever or train a
    NaN model long before anything says so."""
    number = isinstance(value, int) or (isinstance(value, float) and not integer)
    ok = number and not isinstance(value, bool) and (isinstance(value, int) or math.isfinite(value))
    ok = ok and (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi)
    if not ok:
        span = f"{'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"
        raise ValueError(f"{key}: {'an integer' if integer else 'a number'} in {span}, got {value!r}")


def scaled(channels: int, width: float) -> int:
    """Channel count `channels` multiplied by `width`, rounded, at least 1."""
    return max(1, round(channels * width))


def make_config(arch: str, config_cls: type, options: dict[str, Any]):
    """Build `config_cls(**options)`, naming the allowed options if any is unknown."""
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for model {arch!r}; "
            f"allowed options: {allowed if allowed else 'none'}"
        )
    return config_cls(**options)


def options_of(config) -> dict[str, Any]:
    """The config as a JSON-native dict (tuples become lists), for `model.options`."""
    options = dataclasses.asdict(config)
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in options.items()}


@dataclass(frozen=True)
class DropoutOptions:
    """The example-tied dropout of one model: the zoo's `example_tied_dropout` option.

    The one declaration of these settings: memloc's `dropout` config section
    (`memloc.dropout.DropoutSettings`) extends this class, so `--help` prints these texts.
    Values are checked when the options are built (ValueError naming the field).
    """

    p_gen: float = field(default=0.2, metadata={"help": "share of each dropout layer's units that are generalization units (always on), in (0, 1)"})
    p_mem: float = field(default=0.1, metadata={"help": "probability that an example keeps a given memorization unit, in (0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the example-tied masks (a mask is a function of example id, layer, seed), in [0, 4294967295]"})
    after: tuple = field(default=(), metadata={"help": "blocks / hidden layers followed by example-tied dropout; empty = all the model offers"})

    def __post_init__(self):
        for name in ("p_gen", "p_mem"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
                raise ValueError(f"{name}: a fraction in (0, 1), got {p!r}")
        check_range("seed", self.seed, 0, 2**32 - 1, integer=True)
        if isinstance(self.after, str) or not all(isinstance(a, str) for a in self.after):
            raise ValueError(f"after: a list of block names, got {self.after!r}")
        object.__setattr__(self, "after", tuple(self.after))  # accept a list, e.g. from JSON

    def at(self, places: tuple[str, ...]) -> "DropoutOptions":
        """These options for a model whose dropout may follow `places`: only the option fields
        (a subclass's extra settings are dropped), `after` resolved (empty = every place) and
        put in input-to-output order."""
        after = self.after or places
        bad = [a for a in after if a not in places]
        if bad or len(set(after)) != len(after):
            raise ValueError(f"after: distinct names from {list(places)}, got {list(self.after)!r}")
        return DropoutOptions(float(self.p_gen), float(self.p_mem), self.seed, tuple(p for p in places if p in after))

    def to_dict(self) -> dict[str, Any]:
        return {"p_gen": self.p_gen, "p_mem": self.p_mem, "seed": self.seed, "after": list(self.after)}


def parse_options(arch: str, value: Any, places: tuple[str, ...]) -> DropoutOptions | None:
    """A model's `example_tied_dropout` option: None (no dropout), `DropoutOptions` or a dict of
    its fields (from JSON or TOML), resolved for the model's `places`. Raises ValueError naming
    the model and what is allowed."""
    if value is None:
        return None
    if isinstance(value, dict):
        allowed = [f.name for f in fields(DropoutOptions)]
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise ValueError(f"{arch}: unknown example_tied_dropout key(s) {unknown}; allowed: {allowed}")
    elif not isinstance(value, DropoutOptions):
        raise ValueError(f"{arch}: example_tied_dropout must be a table like "
                         f"{{p_gen = 0.2, p_mem = 0.1, seed = 0}}, got {value!r}")
    try:
        return (DropoutOptions(**value) if isinstance(value, dict) else value).at(places)
    except ValueError as e:
        raise ValueError(f"{arch}: example_tied_dropout.{e}") from None


def in_group(name: str, prefixes) -> bool:
    """Whether the parameter, buffer or module `name` lies under one of the module `prefixes`
    (a layer group's), i.e. is the prefix itself or inside it."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def group_of(model: nn.Module, name: str) -> str:
    """The layer group of the parameter or buffer `name`; ValueError unless exactly one."""
    groups = [group for group, prefixes in model.layer_groups.items() if in_group(name, prefixes)]
    if len(groups) != 1:
        raise ValueError(
            f"{name!r} is in {len(groups)} layer groups of {type(model).__name__} "
            f"({groups}); expected exactly one"
        )
    return groups[0]


def group_members(model: nn.Module) -> dict[str, list[str]]:
    """Group -> names of its parameters and buffers, in `layer_groups` order.

    Raises ValueError if the groups do not partition the parameters and buffers: a name in no
    group or in several, or a group without members.
    """
    members: dict[str, list[str]] = {group: [] for group in model.layer_groups}
    for name, _ in chain(model.named_parameters(), model.named_buffers()):
        members[group_of(model, name)].append(name)
    empty = [group for group, names in members.items() if not names]
    if empty:
        raise ValueError(
            f"layer groups {empty} of {type(model).__name__} hold no parameters or buffers"
        )
    return members
