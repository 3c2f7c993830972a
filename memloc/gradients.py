"""Gradient accounting during training (PAPER.md section 1), fast path.

Per batch of size B with clean examples C and noisy examples N, PAPER.md splits the ordinary
batch gradient into

    g_clean = grad of (1/B) * sum_{i in C} CE_i      (= (b_c/B) * mean CE over the clean ones)
    g_noisy = grad of (1/B) * sum_{i in N} CE_i
    g_total = g_clean + g_noisy = grad of the mean CE over the batch (what the optimizer uses)

and sums each over the epoch's batches, per parameter tensor: `G_clean`, `G_noisy`, `G_total`.
Per parameter tensor p the *normalized norm* is `||G_p|| / sqrt(numel(p))`; a layer group's norm
is the sum of its tensors' normalized norms, and its cosine is the mean over its tensors of
`cos(G_clean_p, G_noisy_p)`. The gradient is the loss gradient only (SGD adds weight decay in
its step, after this).

`GradientAccounting` is a backward strategy for `memloc.train.train_epoch`: it computes
`g_total` with the very same `loss.mean().backward()` as plain training (so the optimizer step,
and therefore the trained model, is bitwise the same with accounting on or off) plus exactly
one more gradient, and keeps the epoch sums on the device (one host copy per epoch):

- strategy `"clean"`, models whose layers couple the examples of a batch (BatchNorm in train
  mode, dropout, or any layer type not known to treat examples independently): after the
  ordinary backward (graph retained), `g_clean` by `torch.autograd.grad` through the whole
  batch's graph; `g_noisy = g_total - g_clean`. Two backward passes instead of the naive three.
- Models whose layers all treat examples independently: then the loss of the noisy examples
  depends on the noisy examples alone, and `g_noisy` comes from them (the same function, so
  the same gradient up to float rounding); `g_clean = g_total - g_noisy`.
  - strategy `"layers"` (the MLP, the CNN): every parameter belongs to a Linear, Conv2d or
    LayerNorm layer called once per forward. Hooks keep each layer's input and read its output
    gradient during the ordinary backward; the noisy rows of the two give the layer's noisy
    gradient (Linear: `g_N^T a_N`; Conv2d: the weight gradient of the noisy rows; LayerNorm:
    `sum g_N * xhat_N`). No extra forward or backward pass.
  - strategy `"noisy"` (the ViT, whose `cls_token` and `pos_embed` belong to no layer): a
    forward and backward pass over just the batch's noisy examples (~10% of the batch), from
    the batch input that a forward pre-hook keeps a reference to.

Hooks are removed by `close()` (or leaving the `with` block).

The naive reference (three backward passes per batch, host copies) is
`memloc.gradients_reference.ReferenceAccounting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import models
from memloc.lazy import lazy
from memloc.settings import MAX_COUNT, epoch_list, in_range, setting
from memloc.train import TrainSettings

pd = lazy("pandas")
torch = lazy("torch")
F = lazy("torch.nn.functional")
nn = lazy("torch.nn")


@dataclass(frozen=True)
class GradientsSettings:
    """The `gradients` section of a run: accounting during training, per-example norms after."""

    accounting: bool = setting(True, "during training, per epoch and layer group: clean, noisy and total gradient norms (tables gradients, gradient_tensors)")
    example_epochs: tuple = setting((), "checkpoints at which stage example_gradients computes every example's gradient norm per group; "
                                    "empty = the epoch where the lr peaks, the middle and the last")
    chunk_size: int = setting(256, f"examples per batched pass of per-example gradient norms (bounds memory), in [1, {MAX_COUNT}]")

    def __post_init__(self):
        epoch_list(self.example_epochs, "example_epochs", "[10, 25, 50]")
        in_range("chunk_size", self.chunk_size, 1, MAX_COUNT, integer=True)

    def epochs_for(self, train: TrainSettings) -> list[int]:
        """The checkpoints of the per-example gradient norms, sorted, each once (auto: the epoch
        where the lr peaks, the middle and the last, each the nearest checkpoint kept)."""
        if self.example_epochs:
            return sorted(set(self.example_epochs))
        kept = train.kept_epochs()
        auto = (round(train.peak_epoch), (train.epochs + 1) // 2, train.epochs)
        return sorted({min(kept, key=lambda k: (abs(k - e), k)) for e in auto})

#: Layer types that process each example on its own in train mode (no batch statistics, no
#: random masks). A model whose every leaf module is one of these (and whose own forward code
#: mixes no examples, as in every model of the zoo) lets the noisy gradient come from the noisy
#: examples alone. Names of `torch.nn` classes (a tuple of the classes would import torch with
#: this module: `memloc.lazy`).
INDEPENDENT_LAYERS: tuple[str, ...] = (
    "Linear", "Conv1d", "Conv2d", "Conv3d", "LayerNorm", "GroupNorm", "Embedding",
    "Identity", "Flatten", "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "LeakyReLU",
    "Softmax", "MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d",
)
_CONTAINERS = ("ModuleDict", "ModuleList", "Sequential")


def examples_independent(model: nn.Module, extra: tuple[type, ...] = ()) -> bool:
    """Whether every leaf module of `model` is a layer type known to treat examples separately
    (`extra`: more such types; containers, e.g. an empty ModuleDict, are not layers)."""
    independent = tuple(getattr(nn, name) for name in INDEPENDENT_LAYERS) + extra
    containers = tuple(getattr(nn, name) for name in _CONTAINERS)
    return all(isinstance(m, independent) for m in model.modules()
               if not list(m.children()) and not isinstance(m, containers))


def parameter_groups(model: nn.Module) -> list[tuple[str, str, nn.Parameter]]:
    """(group, parameter name, parameter) for every trainable parameter, in layer-group order."""
    params = dict(model.named_parameters())
    return [(group, name, params[name]) for group, names in models.group_members(model).items()
            for name in names if name in params and params[name].requires_grad]


def _noisy_linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    a, g = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])  # (rows, d_in), (rows, d_out)
    out = {"weight": g.T @ a}  # (d_out, d_in)
    if m.bias is not None:
        out["bias"] = g.sum(0)
    return out


def _noisy_conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"weight": torch.nn.grad.conv2d_weight(a, m.weight.shape, g, m.stride, m.padding, m.dilation, m.groups)}
    if m.bias is not None:
        out["bias"] = g.sum((0, 2, 3))
    return out


def _noisy_layer_norm(m: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    dims = tuple(range(a.dim() - len(m.normalized_shape), a.dim()))
    xhat = (a - a.mean(dims, keepdim=True)) / torch.sqrt(a.var(dims, unbiased=False, keepdim=True) + m.eps)
    rows = tuple(range(a.dim() - len(m.normalized_shape)))  # examples and tokens
    out = {}
    if m.weight is not None:
        out["weight"] = (g * xhat).sum(rows)
    if m.bias is not None:
        out["bias"] = g.sum(rows)
    return out


def _noisy_rule(m: nn.Module):
    """The rule giving layer `m`'s gradient from the noisy rows of its input and output gradient."""
    if type(m) is nn.Linear:
        return _noisy_linear
    if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return _noisy_conv2d
    if type(m) is nn.LayerNorm:
        return _noisy_layer_norm
    return None


class GradientAccounting:
    """Backward strategy that trains as usual and accumulates the clean/noisy split per epoch.

    Use as `backward=` of `train_epoch`/`train_run`; after each epoch `epoch_values()` returns
    the per-tensor numbers and restarts the sums. A context manager: leaving it removes its hooks.
    """

    def __init__(self, model: nn.Module, train_labels: torch.Tensor, is_noisy: torch.Tensor):
        self.model = model
        self.train_labels = train_labels  # (N,) int64 on the device
        self.is_noisy = is_noisy  # (N,) bool on the device
        entries = parameter_groups(model)
        self.groups = [g for g, _, _ in entries]
        self.names = [n for _, n, _ in entries]
        self.params = [p for _, _, p in entries]
        self._part_sum = [torch.zeros_like(p) for p in self.params]  # G_clean, or G_noisy (see `part`)
        self._total_sum = [torch.zeros_like(p) for p in self.params]
        self._handles: list = []
        self._x: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None  # the batch's noisy rows, while its backward runs
        self._calls: dict[nn.Module, int] = {}  # layer -> calls in the latest forward
        slot = {id(p): i for i, p in enumerate(self.params)}
        layers = {m: _noisy_rule(m) for m in model.modules() if list(m.parameters(recurse=False))}
        covered = all(rule is not None for rule in layers.values())
        if not examples_independent(model):
            self.strategy = "clean"
        elif covered:
            self.strategy = "layers"
            self._handles.append(model.register_forward_pre_hook(lambda module, args: self._calls.clear()))
            for m in layers:
                own = [(name, slot[id(p)]) for name, p in m.named_parameters(recurse=False) if id(p) in slot]
                self._handles.append(m.register_forward_hook(self._layer_hook(own)))
        else:
            self.strategy = "noisy"
            self._handles.append(model.register_forward_pre_hook(self._keep_input))

    @property
    def part(self) -> str:
        """Which part the second gradient is: "clean" or "noisy" (the other is total - part)."""
        return "clean" if self.strategy == "clean" else "noisy"

    def _keep_input(self, module: nn.Module, args: tuple) -> None:
        if module.training and torch.is_grad_enabled():
            self._x = args[0]  # a reference to the batch (B, ...), no copy

    def _layer_hook(self, own: list[tuple[str, int]]):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if not (module.training and torch.is_grad_enabled() and output.requires_grad):
                return
            self._calls[module] = self._calls.get(module, 0) + 1
            # The input is saved for the weight gradient anyway (autograd refuses a backward
            # if it was changed in place since), so keeping a reference costs no memory.
            a = inputs[0].detach()

            def on_grad(g: torch.Tensor) -> None:
                if self._rows is None or len(self._rows) == 0:
                    return
                rows = self._rows
                parts = _noisy_rule(module)(module, a.index_select(0, rows), g.detach().index_select(0, rows))
                for name, i in own:
                    self._part_sum[i].add_(parts[name])
            output.register_hook(on_grad)
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "GradientAccounting":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, loss: torch.Tensor, batch_ids: torch.Tensor) -> None:
        b = loss.shape[0]
        noisy = self.is_noisy[batch_ids]  # (B,) bool
        if self.strategy == "layers" and any(c != 1 for c in self._calls.values()):
            # A layer ran twice in the forward (shared weights): its gradient sums two calls the
            # per-call rule cannot tell apart. Seen at the first batch, while the sums are still
            # zero, so switching to the second backward through the whole graph is consistent.
            self.close()
            self.strategy = "clean"
        part = None
        if self.strategy == "clean":
            # The ordinary batch gradient first (keeping the graph changes no arithmetic), then
            # the clean part; this order lets the second pass free the graph as it goes.
            loss.mean().backward(retain_graph=True)
            clean_sum = (loss * (~noisy).to(loss.dtype)).sum() / b  # (b_c / B) * mean clean CE
            part = torch.autograd.grad(clean_sum, self.params, materialize_grads=True)
        elif self.strategy == "layers":
            self._rows = noisy.nonzero().squeeze(1)  # (b_n,)
            try:
                loss.mean().backward()  # the ordinary batch gradient; the layer hooks add the noisy part
            finally:
                self._rows = None
        else:
            loss.mean().backward()  # the ordinary batch gradient, exactly as plain training
            x_noisy = self._x[noisy]  # (b_n, ...)
            if x_noisy.shape[0] > 0:
                y_noisy = self.train_labels[batch_ids][noisy]  # (b_n,)
                noisy_sum = F.cross_entropy(self.model(x_noisy), y_noisy, reduction="sum") / b
                part = torch.autograd.grad(noisy_sum, self.params, materialize_grads=True)
        if part is not None:
            torch._foreach_add_(self._part_sum, list(part))
        torch._foreach_add_(self._total_sum, [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])

    def epoch_values(self) -> np.ndarray:
        """(P, 4) float64 per parameter tensor: clean, noisy, total normalized norm, cosine.

        Reduces the epoch sums on the device (one host copy), then zeroes them for the next epoch.
        """
        total = self._total_sum
        other = torch._foreach_sub(total, self._part_sum)  # total - part
        clean, noisy = (self._part_sum, other) if self.part == "clean" else (other, self._part_sum)
        rows = torch.stack([torch.stack([c.norm(), n.norm(), t.norm(), (c * n).sum()])
                            for c, n, t in zip(clean, noisy, total)]).double().cpu().numpy()  # (P, 4)
        for s in (*self._part_sum, *total):
            s.zero_()
        return finish_values(rows, [p.numel() for p in self.params])


def finish_values(raw: np.ndarray, numels: list[int]) -> np.ndarray:
    """(P, 4) [||C||, ||N||, ||T||, C.N] -> [normalized clean, noisy, total norm, cosine].

    The cosine is NaN where the clean or noisy sum is zero (e.g. no noisy examples).
    """
    out = np.empty_like(raw)
    scale = np.sqrt(np.asarray(numels, dtype=np.float64))
    out[:, :3] = raw[:, :3] / scale[:, None]
    denom = raw[:, 0] * raw[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 3] = np.where(denom > 0, raw[:, 3] / denom, np.nan)
    return out


#: Columns of the `gradient_tensors` table (one row per epoch and parameter tensor).
TENSOR_COLUMNS = ["epoch", "group", "tensor", "numel", "clean_norm", "noisy_norm", "total_norm", "cosine"]
#: Columns of the `gradients` table (one row per epoch and layer group).
COLUMNS = ["epoch", "group", "group_index", "clean_norm", "noisy_norm", "total_norm", "cosine"]


def tensor_table(epochs: list[int], values: np.ndarray, groups: list[str], names: list[str],
                 numels: list[int]) -> pd.DataFrame:
    """The `gradient_tensors` table from per-epoch (E, P, 4) values."""
    e, p = len(epochs), len(names)
    return pd.DataFrame({
        "epoch": np.repeat(np.asarray(epochs, dtype=np.int64), p),
        "group": np.tile(np.asarray(groups, dtype=object), e),
        "tensor": np.tile(np.asarray(names, dtype=object), e),
        "numel": np.tile(np.asarray(numels, dtype=np.int64), e),
        "clean_norm": values[..., 0].reshape(-1),
        "noisy_norm": values[..., 1].reshape(-1),
        "total_norm": values[..., 2].reshape(-1),
        "cosine": values[..., 3].reshape(-1),
    })


def group_table(tensors: pd.DataFrame, group_order: list[str]) -> pd.DataFrame:
    """The `gradients` table: per epoch and group, the sums of the tensors' normalized norms
    and the mean of their cosines (over tensors where it is defined; NaN if none is)."""
    index = {g: i for i, g in enumerate(group_order)}
    out = (tensors.groupby(["epoch", "group"], sort=False)
           .agg(clean_norm=("clean_norm", "sum"), noisy_norm=("noisy_norm", "sum"),
                total_norm=("total_norm", "sum"), cosine=("cosine", "mean"))
           .reset_index())
    out.insert(2, "group_index", out["group"].map(index).astype(np.int64))
    return out.sort_values(["epoch", "group_index"], kind="stable").reset_index(drop=True)


def noisy_share(gradients: pd.DataFrame) -> pd.DataFrame:
    """The `gradients` table with `noisy_share = noisy_norm / (clean_norm + noisy_norm)`: how much
    of a group's gradient the noisy examples contribute."""
    out = gradients.copy()
    out["noisy_share"] = out["noisy_norm"] / (out["clean_norm"] + out["noisy_norm"])
    return out


__all__ = ["GradientsSettings", "GradientAccounting", "INDEPENDENT_LAYERS", "examples_independent", "parameter_groups",
           "finish_values", "TENSOR_COLUMNS", "COLUMNS", "tensor_table", "group_table", "noisy_share"]
