"""Temporary edits of a model: the one way memloc changes a model for a while.

Every edit is a scope (a `with` block) that hands the model back as it found it: parameters and
buffers bitwise, `requires_grad` flags, the train/eval flag of every module, and no hook left
behind, also when the block raises. precompute, the explorer and the tests all edit models
through these scopes:

- `eval_mode(model)`: eval mode for the block (BatchNorm uses its running statistics, dropout
  is off), e.g. to predict.
- `frozen(model, groups)`: every layer group except `groups` frozen for the block: its
  parameters have `requires_grad=False` and its modules stay in eval mode, so training inside
  the block (PAPER.md section 3, retraining) moves only `groups`; the trained values are undone
  afterwards. `frozen(model)` freezes everything: eval mode without weight gradients.
- `unit_masks(model)`: a batched mask on the units' outputs. The forward batch is T equal
  blocks of rows and block k is multiplied by row k of a (T, U) mask over all U units, so T
  different edits run in one forward pass (greedy flipping's per-target masks, PAPER.md
  section 4); `ZeroUnits` is the case T = 1.
- `intervene(model, [Rewind, ZeroUnits, ...], checkpoint)`: edits described by values.
  `Rewind(group, epoch)` gives one layer group (and, by default, its BatchNorm running
  statistics) its state of an earlier checkpoint (section 2); `ZeroUnits(units)` multiplies the
  outputs of the given units by 0 (section 4). The values are frozen, hashable and
  JSON-serializable, so the explorer can cache on them and put them in a URL.

Units are addressed as `layer_path[index]` (a conv layer's output channel, a linear layer's
output neuron, in one of `model.unit_layers`); `UnitIndex` numbers all of a model's units in
one global order. Hooks return a masked copy of an activation and never edit it in place, so
gradient passes (greedy flipping's, Captum's) run through them correctly.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from memloc.lazy import lazy
from models import in_group

torch = lazy("torch")
nn = lazy("torch.nn")
etd = lazy("models.example_tied_dropout")

_UNIT = re.compile(r"^(?P<layer>[A-Za-z_][\w.]*)\[(?P<index>\d+)\]$")


# ---------------------------------------------------------------------- the unit address space
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
    """Number of units of a unit layer: output channels of a conv, output neurons of a linear,
    the channels of an example-tied dropout layer (the units of its ground truth,
    `memloc.localization`)."""
    if isinstance(module, etd.ExampleTiedDropout):
        return module.channels
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise TypeError(f"{type(module).__name__} has no units (only Conv2d and Linear layers do)")


def unit_axis(module: nn.Module) -> int:
    """The activation axis that indexes units: channels (1) for a conv and an example-tied
    dropout layer, the last for a linear."""
    return 1 if isinstance(module, (nn.Conv2d, etd.ExampleTiedDropout)) else -1


class UnitIndex:
    """The fixed global order of a model's units: layer by layer (`model.unit_layers` order,
    or the given `layers`, e.g. a dropout model's dropout layers), each layer's units by index.
    Global index `g` <-> address `layer_path[index]`."""

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None):
        modules = dict(model.named_modules())
        self.layers: tuple[str, ...] = tuple(model.unit_layers if layers is None else layers)
        self.modules = tuple(modules[layer] for layer in self.layers)
        self.sizes = tuple(unit_count(m) for m in self.modules)
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.sizes[:-1]))
        self.total = int(sum(self.sizes))

    def locate(self, g: int) -> tuple[int, int]:
        """Global index -> (position of its layer in `layers`, index within the layer)."""
        pos = int(np.searchsorted(self.offsets, g, side="right")) - 1
        return pos, g - self.offsets[pos]

    def name(self, g: int) -> str:
        pos, index = self.locate(g)
        return unit_name(self.layers[pos], index)

    def names(self, units: Sequence[int]) -> list[str]:
        return [self.name(g) for g in units]

    def index_of(self, unit: str) -> int:
        """Address `layer_path[index]` -> global index (ValueError naming the unit layers)."""
        layer, i = parse_unit(unit)
        if layer not in self.layers:
            raise ValueError(f"{layer!r} is not a unit layer of this model; unit layers: {', '.join(self.layers)}")
        size = self.sizes[self.layers.index(layer)]
        if i >= size:
            raise ValueError(f"{layer} has {size} units (0..{size - 1}); got index {i}")
        return self.offsets[self.layers.index(layer)] + i

    def masks(self, unit_sets: Sequence[Sequence[int]], like: torch.Tensor) -> torch.Tensor:
        """Masks (E, U) with 0 at each set's units and 1 elsewhere, dtype/device of `like`."""
        masks = torch.ones(len(unit_sets), self.total, dtype=like.dtype, device=like.device)
        for row, units in enumerate(unit_sets):
            if len(units):
                masks[row, list(units)] = 0.0
        return masks


# ---------------------------------------------------------------------- restoring a model
def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its `state_dict` name (the tensors themselves, not copies)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _hook_dicts(model: nn.Module) -> Iterator[dict]:
    for module in model.modules():
        yield module._forward_hooks
        yield module._forward_pre_hooks
        yield module._backward_hooks
        yield module._backward_pre_hooks


class _Snapshot:
    """What a scope gives back: tensor values, `requires_grad` flags, train/eval flags, hooks."""

    def __init__(self, model: nn.Module):
        self.tensors = state_tensors(model)
        self.values = {name: t.detach().clone() for name, t in self.tensors.items()}
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]
        self.hooks = [(hooks, set(hooks)) for hooks in _hook_dicts(model)]

    def restore(self) -> None:
        for hooks, known in self.hooks:
            for key in [k for k in hooks if k not in known]:
                del hooks[key]
        with torch.no_grad():
            for name, value in self.values.items():
                self.tensors[name].copy_(value)
        for p, flag in self.flags:
            p.requires_grad_(flag)
        for m, training in self.modes:
            m.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block; restored afterwards (see the module docstring)."""
    snapshot = _Snapshot(model)
    try:
        model.eval()
        yield model
    finally:
        snapshot.restore()


class Frozen:
    """The part of a model left trainable inside `frozen`: its parameters and its modules."""

    def __init__(self, model: nn.Module, groups: Sequence[str]):
        prefixes = [p for g in groups for p in _group_prefixes(model, g)]
        self.model = model
        self.parameters = [p for name, p in model.named_parameters() if in_group(name, prefixes)]
        self.modules = [m for name, m in model.named_modules() if in_group(name, prefixes)]

    def train(self) -> None:
        """Train mode in the trainable groups' modules, eval mode everywhere else."""
        self.model.eval()
        for module in self.modules:
            module.train()

    def eval(self) -> None:
        """Eval mode everywhere (to evaluate the model)."""
        self.model.eval()


@contextlib.contextmanager
def frozen(model: nn.Module, groups: Sequence[str] = ()) -> Iterator[Frozen]:
    """Every layer group except `groups` frozen for the block; restored afterwards.

    Inside, the frozen parameters have `requires_grad=False` and the model is in eval mode;
    the yielded `Frozen` holds the trainable parameters (the only ones to give an optimizer)
    and switches the trainable groups' modules to train mode (`.train()`) and back (`.eval()`).
    Whatever the block trains, the model afterwards is bitwise what it was before.
    """
    snapshot = _Snapshot(model)
    try:
        part = Frozen(model, groups)
        trainable = {id(p) for p in part.parameters}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)
        model.eval()
        yield part
    finally:
        snapshot.restore()


# ---------------------------------------------------------------------- batched unit masks
class UnitMasks:
    """Forward hooks that multiply each unit layer's output by a batched mask.

    `masks` is (T, U) in `UnitIndex` order (`set` replaces it); the forward input holds T equal
    blocks of consecutive rows, so a layer's output (T * rows, ...) is viewed as (T, rows, ...)
    and block k is multiplied by row k's slice for that layer. The hooks return a masked copy
    (never in place), so a backward pass reaches the masks (`dJ/dm`).
    """

    def __init__(self, index: UnitIndex, masks: torch.Tensor | None = None):
        self.index = index
        self.masks = masks

    def set(self, masks: torch.Tensor) -> None:
        self.masks = masks

    def hook(self, pos: int) -> Callable:
        """The forward hook of unit layer `pos` (its position in `index.layers`)."""
        module, offset, size = self.index.modules[pos], self.index.offsets[pos], self.index.sizes[pos]
        axis = unit_axis(module)

        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            t = self.masks.shape[0]
            grouped = output.view(t, -1, *output.shape[1:])  # (T, rows, ...)
            shape = [t, 1] + [1] * (output.dim() - 1)
            shape[axis + 1 if axis >= 0 else axis] = size  # the unit axis, shifted by the T axis
            mask = self.masks[:, offset : offset + size].reshape(shape).to(output.dtype)
            return (grouped * mask).view(output.shape)

        return hook


@contextlib.contextmanager
def unit_masks(model: nn.Module, masks: torch.Tensor | None = None, layers: Sequence[str] | None = None) -> Iterator[UnitMasks]:
    """`UnitMasks` hooks on every unit layer of `model` (or on `layers`, as `UnitIndex`) for the
    block (masks (T, U), or set later with `.set`); the hooks are removed afterwards, also when
    the block raises."""
    hooks = UnitMasks(UnitIndex(model, layers), masks)
    handles = []
    try:
        for pos, module in enumerate(hooks.index.modules):
            handles.append(module.register_forward_hook(hooks.hook(pos)))
        yield hooks
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------- interventions as values
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


def _group_prefixes(model: nn.Module, group: str) -> tuple[str, ...]:
    prefixes = model.layer_groups.get(group)
    if prefixes is None:
        raise ValueError(f"layer group {group!r} is not one of {', '.join(model.layer_groups)}")
    return prefixes


def group_state_names(model: nn.Module, group: str, include_buffers: bool = True) -> list[str]:
    """Names (as in `state_dict`) of the parameters, and optionally buffers, of a layer group."""
    prefixes = _group_prefixes(model, group)
    names = [n for n, _ in model.named_parameters()]
    if include_buffers:
        names += [n for n, _ in model.named_buffers()]
    return [n for n in names if in_group(n, prefixes)]


def validate(model: nn.Module, interventions: Iterable[Intervention]) -> None:
    """Raise ValueError naming the valid groups / layers for an intervention this model lacks."""
    index = UnitIndex(model)
    for item in interventions:
        if isinstance(item, Rewind):
            _group_prefixes(model, item.group)
        elif isinstance(item, ZeroUnits):
            for unit in item.units:
                index.index_of(unit)
        else:
            raise TypeError(f"not an intervention: {item!r}")


@contextlib.contextmanager
def intervene(
    model: nn.Module,
    interventions: Iterable[Intervention],
    checkpoint: Callable[[int], dict[str, torch.Tensor]] | None = None,
) -> Iterator[nn.Module]:
    """Apply `interventions` to `model` for the duration of the block.

    `checkpoint(epoch)` returns a state dict (needed by `Rewind`, e.g. `OpenRun.checkpoint`).
    Rewinds are applied in order (a later one wins on the same group); all `ZeroUnits` together
    are one mask of the batched mask hook (T = 1). Only the rewound tensors are saved and put
    back, so a rewind costs a copy of its group, not of the model.
    """
    interventions = list(interventions)
    validate(model, interventions)
    tensors = state_tensors(model)
    saved: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as scope:
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
            zeroed = [unit for item in interventions if isinstance(item, ZeroUnits) for unit in item.units]
            if zeroed:
                index = UnitIndex(model)
                device = next(model.parameters()).device
                masks = index.masks([[index.index_of(u) for u in zeroed]], torch.empty(0, device=device))  # (1, U)
                scope.enter_context(unit_masks(model, masks))
            yield model
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    tensors[name].copy_(value)


__all__ = [
    "unit_name", "parse_unit", "unit_count", "unit_axis", "UnitIndex", "state_tensors", "eval_mode", "Frozen",
    "frozen", "UnitMasks", "unit_masks", "Rewind", "ZeroUnits", "Intervention", "from_json", "group_state_names",
    "validate", "intervene",
]
