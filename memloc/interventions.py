"""Interventions: values that describe an edit of a model, applied in a scope that undoes it.

- `Rewind(group, epoch)`: the parameters of one layer group (and, by default, its BatchNorm
  running statistics) take their values from an earlier checkpoint (PAPER.md section 2).
- `ZeroUnits(units)`: the outputs of the given units (a conv layer's output channel, a linear
  layer's output neuron, addressed as `layer_path[index]`) are multiplied by 0 (section 4).

Interventions are frozen, hashable and JSON-serializable, so the explorer can cache on them and
put them in a URL. `intervene(model, [...], checkpoint)` applies any number of them; when the
block ends, also by an exception, the model is bitwise what it was and no hook is left behind.
Hooks return a masked copy of the activation and never edit it in place, so gradient passes
(e.g. Captum's) run through them correctly.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Union

import torch
from torch import nn

_UNIT = re.compile(r"^(?P<layer>[A-Za-z_][\w.]*)\[(?P<index>\d+)\]$")


def unit_name(layer: str, index: int) -> str:
    """The address of a unit, e.g. `res1.0.conv[17]`."""
    return f"{layer}[{index}]"


def parse_unit(unit: str) -> tuple[str, int]:
    """`"res1.0.conv[17]"` -> `("res1.0.conv", 17)`."""
    match = _UNIT.match(unit)
    if match is None:
        raise ValueError(f"unit {unit!r}: expected layer_path[index], e.g. res1.0.conv[17]")
    return match["layer"], int(match["index"])


def unit_count(module: nn.Module) -> int:
    """Number of units of a unit layer: output channels of a conv, output neurons of a linear."""
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise TypeError(f"{type(module).__name__} has no units (only Conv2d and Linear layers do)")


def unit_axis(module: nn.Module) -> int:
    """The activation axis that indexes units: channels (1) for a conv, the last for a linear."""
    return 1 if isinstance(module, nn.Conv2d) else -1


@dataclass(frozen=True)
class Rewind:
    """Replace one layer group's state by its value at checkpoint `epoch`."""

    group: str
    epoch: int
    include_buffers: bool = True  # BatchNorm running statistics rewound with the parameters

    def to_json(self) -> dict:
        return {"kind": "rewind", "group": self.group, "epoch": self.epoch, "include_buffers": self.include_buffers}


@dataclass(frozen=True)
class ZeroUnits:
    """Multiply the outputs of these units by 0 (a mask on the layer's output)."""

    units: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(self.units))
        for unit in self.units:
            parse_unit(unit)

    def by_layer(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for unit in self.units:
            layer, index = parse_unit(unit)
            out.setdefault(layer, []).append(index)
        return out

    def to_json(self) -> dict:
        return {"kind": "zero_units", "units": list(self.units)}


Intervention = Union[Rewind, ZeroUnits]


def from_json(d: dict) -> Intervention:
    kind = d.get("kind")
    if kind == "rewind":
        return Rewind(d["group"], int(d["epoch"]), bool(d.get("include_buffers", True)))
    if kind == "zero_units":
        return ZeroUnits(tuple(d["units"]))
    raise ValueError(f"unknown intervention kind {kind!r}; expected 'rewind' or 'zero_units'")


def group_state_names(model: nn.Module, group: str, include_buffers: bool = True) -> list[str]:
    """Names (as in `state_dict`) of the parameters, and optionally buffers, of a layer group."""
    prefixes = model.layer_groups.get(group)
    if prefixes is None:
        raise ValueError(f"layer group {group!r} is not one of {', '.join(model.layer_groups)}")
    names = [n for n, _ in model.named_parameters()]
    if include_buffers:
        names += [n for n, _ in model.named_buffers()]
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def validate(model: nn.Module, interventions: Iterable[Intervention]) -> None:
    """Raise ValueError naming the valid groups / layers for an intervention this model lacks."""
    modules = dict(model.named_modules())
    for item in interventions:
        if isinstance(item, Rewind):
            group_state_names(model, item.group)
        elif isinstance(item, ZeroUnits):
            for layer, indices in item.by_layer().items():
                if layer not in model.unit_layers:
                    raise ValueError(f"{layer!r} is not a unit layer of this model; unit layers: {', '.join(model.unit_layers)}")
                n = unit_count(modules[layer])
                bad = [i for i in indices if i >= n]
                if bad:
                    raise ValueError(f"{layer} has {n} units (0..{n - 1}); got index {bad[0]}")
        else:
            raise TypeError(f"not an intervention: {item!r}")


def _mask_hook(axis: int, mask: torch.Tensor) -> Callable:
    def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        shape = [1] * output.dim()
        shape[axis] = -1
        return output * mask.view(shape).to(output.dtype)  # a masked copy, never in place

    return hook


@contextlib.contextmanager
def intervene(
    model: nn.Module,
    interventions: Iterable[Intervention],
    checkpoint: Callable[[int], dict[str, torch.Tensor]] | None = None,
) -> Iterator[nn.Module]:
    """Apply `interventions` to `model` for the duration of the block.

    `checkpoint(epoch)` returns a state dict (needed by `Rewind`, e.g. `run.read_checkpoint`).
    Rewinds are applied in order (a later one wins on the same group); all `ZeroUnits` masks
    are multiplied together.
    """
    interventions = list(interventions)
    validate(model, interventions)
    tensors = _state_tensors(model)
    saved: dict[str, torch.Tensor] = {}
    handles = []
    try:
        with torch.no_grad():
            for item in (i for i in interventions if isinstance(i, Rewind)):
                if checkpoint is None:
                    raise ValueError("Rewind needs a checkpoint loader: intervene(model, items, checkpoint=...)")
                state = checkpoint(item.epoch)
                for name in group_state_names(model, item.group, item.include_buffers):
                    if name not in saved:
                        saved[name] = tensors[name].detach().clone()
                    tensors[name].copy_(state[name].to(tensors[name].device))
        masks: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        for item in (i for i in interventions if isinstance(i, ZeroUnits)):
            for layer, indices in item.by_layer().items():
                module = modules[layer]
                device = next(module.parameters()).device
                mask = masks.setdefault(layer, torch.ones(unit_count(module), device=device))
                mask[indices] = 0.0
        for layer, mask in masks.items():
            module = modules[layer]
            handles.append(module.register_forward_hook(_mask_hook(unit_axis(module), mask)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for name, value in saved.items():
                tensors[name].copy_(value)
