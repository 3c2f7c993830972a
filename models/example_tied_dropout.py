"""Example-tied dropout (PAPER.md section 5), computed on the fly without a mask table.

At a chosen layer the C channels (units) are split into *generalization* units, the first
`round(p_gen * C)` (at least one, at most C - 1), which are always on, and *memorization*
units, the rest. Every training example `i` owns a fixed subset of the memorization units:
unit `c` is kept iff a uniform number `u(i, layer, c)` drawn by a counter-based generator
keyed by (seed, layer) at counter (i, c) is below `p_mem`. The masks are therefore

- a pure function of (example id, layer, seed): the same in every epoch, whatever the batch
  order or composition, on every device;
- computed for the batch with a few integer tensor ops (no Python loop over examples, no
  global generator), for any number of examples;
- not stored by default: the layer holds no per-example state, so its memory does not grow
  with the size of the training set (the authors' dense float table was (N, C, H, W), about
  15 GB for one 64x32x32 layer of CIFAR-10).

The training loop, whose ids are the rows 0..N-1 of the training set, lets the layers keep the
masks of those N examples as one bit table (`mask_table`, `MaskTable`): N x C bits per layer,
rounded up to whole bytes per example (0.4 MiB for that CIFAR-10 layer). A batch's masks at
all layers are then one gather and one byte-to-bits lookup instead of a dozen integer ops per
layer, which matters for small models whose step takes a millisecond. The table is filled
from the hash, so masks are the same with and without it.

The generator is SplitMix64 (Steele, Lea, Flood 2014): the counter `(i * J + j) * GAMMA + key`
(a distinct 64-bit state per example and hash index j < J = ceil(C / 4)) goes through the
MurmurHash3 64-bit finalizer, whose output bits are all well mixed; each 64-bit hash gives the
16-bit uniform numbers of four units (so `p_mem` counts in steps of 2^-16). The arithmetic is
modulo 2^64 on int64 tensors (PyTorch's integer ops wrap on CPU and CUDA alike); logical right
shifts are an arithmetic shift followed by a mask.

Modes (`set_mode`): while the model trains (`model.training`) the layer always multiplies by
the example's own mask. In eval mode it computes what the chosen mode says:

- `train`: the example's own mask (needs the example ids), i.e. the model as it was trained;
- `test`: generalization units as they are, memorization units scaled by `p_mem`;
- `drop`: memorization units set to 0, generalization units scaled by `(p_gen + p_mem) / p_gen`.

There is no default: evaluating without a chosen mode raises, because `test` and `drop` answer
different questions and a silent choice would mislabel results.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# The options are declared with the zoo's shared pieces, which import no torch: a run's
# configuration is checked without it (`memloc.lazy`).
from models.base import DropoutOptions, parse_options  # noqa: F401 (part of this module's interface)

MODES = ("train", "test", "drop")

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / golden ratio, odd
_M1 = 0xFF51AFD7ED558CCD  # MurmurHash3 fmix64 multipliers
_M2 = 0xC4CEB9FE1A85EC53
_FIELD_BITS = 16  # each unit's uniform number has 16 bits: p_mem has a resolution of 2^-16
_FIELDS = 64 // _FIELD_BITS  # units decided by one 64-bit hash


def _signed(value: int) -> int:
    """A 64-bit pattern as the int64 that holds it (tensor scalars must fit in int64)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def fmix64_int(x: int) -> int:
    """MurmurHash3's 64-bit finalizer on a Python int (the reference for `fmix64`)."""
    x &= _MASK64
    x ^= x >> 33
    x = (x * _M1) & _MASK64
    x ^= x >> 33
    x = (x * _M2) & _MASK64
    x ^= x >> 33
    return x


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (`>>` on int64 is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def fmix64(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 64-bit finalizer, elementwise on int64 bit patterns (wrapping multiply)."""
    x = x ^ _shr(x, 33)
    x = x * _signed(_M1)
    x = x ^ _shr(x, 33)
    x = x * _signed(_M2)
    return x ^ _shr(x, 33)


def layer_key(seed: int, layer: int) -> int:
    """The 64-bit key of one dropout layer of one model: a hash of (seed, layer)."""
    return fmix64_int(fmix64_int(seed * _GAMMA + 1) + layer * _GAMMA)


def uniform_reference(example_id: int, channel: int, channels: int, key: int) -> float:
    """`u(i, layer, c)` for one example and unit with Python integers: the literal definition
    that `ExampleTiedDropout.keep` vectorizes (used by tests and benchmarks)."""
    blocks = -(-channels // _FIELDS)
    state = ((example_id * blocks + channel // _FIELDS) * _GAMMA + key) & _MASK64
    field = (fmix64_int(state) >> (_FIELD_BITS * (channel % _FIELDS))) & 0xFFFF
    # The field read as a signed int16 (what the tensor view gives), shifted to [0, 2^16).
    return (field ^ 0x8000) / (1 << _FIELD_BITS)


def keep_threshold(p_mem: float) -> int:
    """Kept iff the unit's signed 16-bit field is <= this: a share round(p_mem * 2^16) / 2^16."""
    count = min((1 << _FIELD_BITS) - 1, max(1, round(p_mem * (1 << _FIELD_BITS))))
    return -(1 << (_FIELD_BITS - 1)) + count - 1


def generalization_units(channels: int, p_gen: float) -> int:
    """How many of the first channels are generalization units: round(p_gen * C), in [1, C-1]."""
    return min(channels - 1, max(1, round(p_gen * channels)))


class ExampleTiedDropout(nn.Module):
    """Example-tied dropout over the channels (dim 1) of (B, C) or (B, C, H, W) activations.

    `layer` numbers the dropout layers of one model (0, 1, ...) so that each layer draws its
    own masks. Holds no parameters, buffers or per-example state.
    """

    def __init__(self, channels: int, p_gen: float, p_mem: float, seed: int, layer: int):
        super().__init__()
        if channels < 2:
            raise ValueError(f"example-tied dropout needs at least 2 channels, got {channels}")
        self.channels, self.p_gen, self.p_mem, self.seed, self.layer = channels, p_gen, p_mem, seed, layer
        self.n_gen = generalization_units(channels, p_gen)
        self.key = layer_key(seed, layer)
        self.mode: str | None = None  # eval-mode behaviour, chosen with `set_mode`
        self.blocks = -(-channels // _FIELDS)  # 64-bit hashes per example
        # A unit is kept iff its signed 16-bit field is <= its threshold: int16 max (always)
        # for the generalization units, `keep_threshold(p_mem)` for the memorization units.
        self._thresholds = [(1 << (_FIELD_BITS - 1)) - 1] * self.n_gen + [keep_threshold(p_mem)] * (channels - self.n_gen)
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._table: MaskTable | None = None  # the masks of ids 0..N-1 as bits, see `mask_table`
        self._table_column = 0  # where this layer's units start in the table's unpacked rows
        self.reads_table = False  # True only inside `mask_table`: masks come from `_table`

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, generalization={self.n_gen}, p_gen={self.p_gen}, "
                f"p_mem={self.p_mem}, seed={self.seed}, layer={self.layer}, mode={self.mode}")

    def _device_constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-hash counter offsets `j * GAMMA + key` (blocks,) int64 and per-unit thresholds
        plus one (C,) float32, cached per device. Plain attributes, not buffers: they are
        functions of the constructor arguments, not state to checkpoint."""
        if device not in self._constants:
            offsets = [_signed(j * _GAMMA + self.key) for j in range(self.blocks)]
            self._constants[device] = (torch.tensor(offsets, dtype=torch.int64, device=device),
                                       torch.tensor(self._thresholds, dtype=torch.float32, device=device) + 1)
        return self._constants[device]

    def _fields(self, example_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """(B,) example ids -> (B, C) int16: each unit's 16-bit uniform number, signed."""
        ids = example_ids.to(torch.int64)
        # SplitMix64 state of (example i, hash j): (i * blocks + j) * GAMMA + key, modulo 2^64.
        state = (ids * _signed(self.blocks * _GAMMA))[:, None] + offsets  # (B, blocks)
        # Each 64-bit hash holds four 16-bit uniform fields, one per unit; viewing the int64
        # tensor as int16 splits them without arithmetic (little-endian, as on CPUs and GPUs).
        return fmix64(state).view(torch.int16)[:, : self.channels]  # (B, C)

    def keep(self, example_ids: torch.Tensor) -> torch.Tensor:
        """(B,) example ids -> (B, C) bool: which units each example keeps (its mask)."""
        offsets, thresholds_plus_one = self._device_constants(example_ids.device)
        return self._fields(example_ids, offsets) < thresholds_plus_one  # (B, C)

    def packed_keep(self, example_ids: torch.Tensor) -> torch.Tensor:
        """(B,) ids -> (B, ceil(C/8)) uint8: bit k of byte b is unit 8b + k of the mask."""
        width = -(-self.channels // 8)
        keep = torch.zeros(len(example_ids), width * 8, dtype=torch.uint8, device=example_ids.device)
        keep[:, : self.channels] = self.keep(example_ids)
        weights = torch.tensor([1 << k for k in range(8)], dtype=torch.uint8, device=example_ids.device)
        return (keep.view(len(example_ids), width, 8) * weights).sum(-1, dtype=torch.uint8)

    def mask(self, example_ids: torch.Tensor) -> torch.Tensor:
        """(B,) example ids -> (B, C) float32 mask of 1s and 0s, equal to `keep(ids).float()`.

        Inside `mask_table`, this layer's columns of the batch's masks at all layers
        (`MaskTable.masks`). Otherwise from the hash, as clamp(threshold + 1 - field, 0, 1):
        for integers that is 1 exactly when field <= threshold and 0 otherwise (on CPUs a
        comparison that makes a bool tensor, and its conversion to float, cost about three
        times this path).
        """
        if self.reads_table:
            return self._table.masks(example_ids)[:, self._table_column : self._table_column + self.channels]
        offsets, thresholds_plus_one = self._device_constants(example_ids.device)
        fields = self._fields(example_ids, offsets).to(torch.float32)  # (B, C), exact integers
        return (thresholds_plus_one - fields).clamp_(0.0, 1.0)  # (B, C)

    def scale(self, mode: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """(C,) expected mask of the eval modes `test` and `drop` (PAPER.md section 5)."""
        if mode == "test":
            values = [1.0] * self.n_gen + [self.p_mem] * (self.channels - self.n_gen)
        elif mode == "drop":
            values = [(self.p_gen + self.p_mem) / self.p_gen] * self.n_gen + [0.0] * (self.channels - self.n_gen)
        else:
            raise ValueError(f"no fixed scale in mode {mode!r}")
        return torch.tensor(values, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"example-tied dropout over {self.channels} channels got an input of shape {tuple(x.shape)}")
        mode = "train" if self.training else self.mode
        if mode is None:
            raise RuntimeError(
                "example-tied dropout in eval mode needs a chosen mode: "
                "models.example_tied_dropout.set_mode(model, 'test' | 'drop' | 'train')"
            )
        if mode == "train":
            if example_ids is None or example_ids.shape != (x.shape[0],):
                raise ValueError(
                    f"example-tied dropout in its train mode needs example_ids of shape ({x.shape[0]},), "
                    f"got {None if example_ids is None else tuple(example_ids.shape)}"
                )
            mask = self.mask(example_ids)  # (B, C) float32
            if mask.dtype != x.dtype:
                mask = mask.to(x.dtype)
        else:
            mask = self.scale(mode, x.dtype, x.device)[None, :]  # (1, C)
        if x.dim() > 2:
            mask = mask.view(*mask.shape, *([1] * (x.dim() - 2)))  # (B|1, C, 1, ...)
        return x * mask  # (B, C, ...)


_BYTE_BITS: dict[torch.device, torch.Tensor] = {}


def _byte_bits(device: torch.device) -> torch.Tensor:
    """(256, 8) float32: row b holds the bits of byte b, lowest first."""
    if device not in _BYTE_BITS:
        b = torch.arange(256, device=device)[:, None]
        _BYTE_BITS[device] = ((b >> torch.arange(8, device=device)) & 1).to(torch.float32)
    return _BYTE_BITS[device]


def dropout_layers(model: nn.Module) -> list[ExampleTiedDropout]:
    return [m for m in model.modules() if isinstance(m, ExampleTiedDropout)]


class MaskTable:
    """The masks of examples 0..N-1 at every example-tied dropout layer of a model, as bits.

    Row i holds example i's masks layer after layer, ceil(C/8) bytes per layer (bit k of a
    layer's byte b is its unit 8b + k): N x C bits per layer, rounded up to whole bytes, the
    most the issue allows a cache to hold. The rows are filled from the hash (`keep`), so the
    masks are the same as without the table. A batch's masks at all layers are one gather of
    its rows and one lookup of each byte's eight bits, done when the first layer asks; the
    other layers of the same forward pass get the same ids tensor and take their columns of
    that result.
    """

    def __init__(self, layers: list[ExampleTiedDropout], num_examples: int, device: torch.device):
        self.layers, self.num_examples, self.device = list(layers), num_examples, device
        widths = [-(-layer.channels // 8) for layer in self.layers]
        self.bits = torch.empty(num_examples, sum(widths), dtype=torch.uint8, device=device)
        for ids in torch.arange(num_examples, device=device).split(8192):
            self.bits[ids] = torch.cat([layer.packed_keep(ids) for layer in self.layers], 1)
        self.columns = [8 * sum(widths[:i]) for i in range(len(widths))]  # each layer's first unit
        self._batch: tuple[torch.Tensor, int, torch.Tensor] | None = None  # ids, their version, masks

    def serves(self, layers: list[ExampleTiedDropout], num_examples: int, device: torch.device) -> bool:
        return self.layers == layers and self.num_examples == num_examples and self.device == device

    def masks(self, example_ids: torch.Tensor) -> torch.Tensor:
        """(B,) ids -> (B, 8 x row bytes) float32 masks of all layers side by side."""
        if self._batch is None or self._batch[0] is not example_ids or self._batch[1] != example_ids._version:
            bytes_ = self.bits.index_select(0, example_ids).long()  # (B, row bytes)
            masks = F.embedding(bytes_, _byte_bits(example_ids.device)).flatten(1)  # (B, 8 x row bytes)
            self._batch = (example_ids, example_ids._version, masks)
        return self._batch[2]

    def forget_batch(self) -> None:
        self._batch = None


@contextlib.contextmanager
def mask_table(model: nn.Module, num_examples: int, device: torch.device) -> Iterator[nn.Module]:
    """While the block runs, `model`'s example-tied dropout layers read masks from a `MaskTable`.

    The caller promises that every example id it passes is a row 0..num_examples-1 (the
    training loop's ids index its training set); an id outside makes the gather raise (an
    IndexError on a CPU, a device-side assert on a GPU), it is never silently wrong. The table
    is built on first use and kept by the layers, so the epochs of one training build it once.
    """
    layers, device = dropout_layers(model), torch.device(device)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no example-tied dropout layers")
    table = layers[0]._table
    if table is None or not table.serves(layers, num_examples, device):
        table = MaskTable(layers, num_examples, device)
    for layer, column in zip(layers, table.columns):
        layer._table, layer._table_column, layer.reads_table = table, column, True
    try:
        yield model
    finally:
        table.forget_batch()
        for layer in layers:
            layer.reads_table = False


def set_mode(model: nn.Module, mode: str | None) -> nn.Module:
    """Choose the eval-mode behaviour of every example-tied dropout layer of `model`."""
    if mode is not None and mode not in MODES:
        raise ValueError(f"example-tied dropout mode must be one of {', '.join(MODES)}, got {mode!r}")
    layers = dropout_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no example-tied dropout layers")
    for layer in layers:
        layer.mode = mode
    return model


@contextlib.contextmanager
def dropout_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """`set_mode` for the duration of a block; the previous modes come back afterwards."""
    before = [layer.mode for layer in dropout_layers(model)]
    set_mode(model, mode)
    try:
        yield model
    finally:
        for layer, previous in zip(dropout_layers(model), before):
            layer.mode = previous


def dropout_units(model: nn.Module) -> tuple[str, ...]:
    """The module paths of a model's example-tied dropout layers, as unit layers: each channel a
    unit (`memloc.interventions.UnitIndex(model, dropout_units(model))`)."""
    return tuple(name for name, m in model.named_modules() if isinstance(m, ExampleTiedDropout))


def make_layers(options: DropoutOptions | None, places: tuple[str, ...], channels: dict[str, int]) -> nn.ModuleDict:
    """One `ExampleTiedDropout` per chosen place, keyed by place. A layer is numbered by its
    place among all of the model's `places`, so choosing fewer places keeps the others' masks."""
    if options is None:
        return nn.ModuleDict()
    return nn.ModuleDict({
        place: ExampleTiedDropout(channels[place], options.p_gen, options.p_mem, options.seed, places.index(place))
        for place in options.after
    })
