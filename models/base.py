"""Shared pieces of the model zoo: input checks, options, and the layer-group partition.

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
from itertools import chain
from typing import Any

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
