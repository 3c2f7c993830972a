"""The grid of a sweep: a preset, fixed overrides, axes and paired values, and its points.

    Grid("demo", fixed={"train.epochs": 30}, axes={"train.seed": [0, 1, 2], "data.noise_frac": [0.1, 0.2]})

A point is one value per varying key: the product of the axes, times each entry of `paired`
(combinations listed instead of multiplied, e.g. model name and width together). Each point is
named from its values, `noise_frac=0.2,seed=1`: a key is shortened to its last part unless
two keys share it, so names are readable, unique and stable; they are the point's directory.
A point's configuration is `resolve(preset, fixed, point values)` (`memloc.overrides`).
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from memloc.settings import ConfigError


def format_value(value: Any) -> str:
    """A value as it appears in a point's name: `0.2`, `true`, `64-64` for a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "+".join(f"{k}-{format_value(v)}" for k, v in value.items()) or "none"
    return re.sub(r"[^\w.+\-]", "_", str(value))


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's last part (`train.seed` -> `seed`), or the whole key where two would collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_name(values: dict[str, Any], keys: list[str]) -> str:
    """The name of a point (or of a setting: a point without its seed axes); `default` if none."""
    names = short_names(keys)
    return ",".join(f"{names[k]}={format_value(values[k])}" for k in keys if k in values) or "default"


def seed_axes(keys: list[str]) -> list[str]:
    """The keys whose last part names a seed (`train.seed`, `data.noise_seed`): what a summary
    folds to give a setting's mean and spread."""
    return [k for k in keys if k.rsplit(".", 1)[-1].endswith("seed")]


@dataclass(frozen=True)
class Grid:
    preset: str
    fixed: dict[str, Any] = field(default_factory=dict)  # key -> value for every point
    axes: dict[str, list] = field(default_factory=dict)  # key -> values, multiplied
    paired: list[dict[str, Any]] = field(default_factory=list)  # combinations, each times the axes

    def __post_init__(self):
        for key, values in self.axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid {key}: a non-empty list of values, got {values!r}")
        if not all(isinstance(p, dict) and p for p in self.paired):
            raise ConfigError(f"points: a list of tables of key = value, got {self.paired!r}")
        overlap = sorted(set(self.axes) & {k for p in self.paired for k in p})
        if overlap:
            raise ConfigError(f"grid and points both set {', '.join(overlap)}; set each key in one of them")

    @property
    def keys(self) -> list[str]:
        """The keys that vary between points: the axes, then the paired keys, in order."""
        paired = list(dict.fromkeys(k for p in self.paired for k in p))
        return [*self.axes, *paired]

    def points(self) -> list[dict[str, Any]]:
        """Each point's values by key, in a fixed order (the paired entries outermost)."""
        product = [dict(zip(self.axes, combo)) for combo in itertools.product(*self.axes.values())]
        return [{**pair, **combo} for pair in (self.paired or [{}]) for combo in product]

    def to_json(self) -> dict[str, Any]:
        return {"preset": self.preset, "fixed": self.fixed, "axes": self.axes, "paired": self.paired}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Grid":
        return cls(d["preset"], dict(d.get("fixed", {})), dict(d.get("axes", {})), list(d.get("paired", [])))

    def same_as(self, other: "Grid") -> bool:
        """Whether two grids give the same points (compared as JSON, as recorded)."""
        return json.dumps(self.to_json(), sort_keys=True) == json.dumps(other.to_json(), sort_keys=True)


__all__ = ["format_value", "short_names", "point_name", "seed_axes", "Grid"]
