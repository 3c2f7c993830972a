"""Per-example gradient norms per layer group (PAPER.md section 1, memloc's per-example view).

For a training example i with its training label y_i, its gradient is the gradient of its own
cross-entropy `CE(model(x_i), y_i)` (not divided by a batch size), with BatchNorm in eval mode:
in train mode an example's loss would depend on the other examples of its batch, so "its own
gradient" would not be defined by the example alone. The norm per layer group is

    grad_norm(i, group) = sqrt( sum over the group's parameter tensors p of ||grad_i(p)||^2 )

i.e. the L2 norm of the example's gradient restricted to the group's parameters.

Fast path ("ghost norms", as in differentially private training): one batched forward and
backward per chunk of examples, with hooks that read each layer's input `a` and output gradient
`g` and give the per-example squared norms without forming per-example gradients:

- Linear on (n, d) inputs: `||g_i||^2 * ||a_i||^2` for the weight, `||g_i||^2` for the bias.
- Linear on token inputs (n, T, d) and Conv2d (unfolded input (n, C_in*k*k, L)): the weight
  gradient of example i is `G_i^T A_i`; its squared norm is `<A_i A_i^T, G_i G_i^T>` (Gram
  form, T x T or L x L) or is formed directly, whichever needs fewer operations.
- LayerNorm, and BatchNorm in eval mode: weight `sum over positions of g * xhat`, bias `sum of g`.

The backward pass only asks for the gradient of the input images, so no weight gradient is
computed at all. Everything else falls back to an exact method: parameters of other layer
types, of grouped or non-zero-padded convolutions, of layers called more than once, and
parameters used outside a layer (the ViT's `cls_token`, `pos_embed`) get per-example gradients
from `torch.func` (`vmap` of `grad`, in sub-chunks sized to a memory budget). A model with a
layer type not known to treat examples independently gets all its parameters that way, since
`torch.func` runs every example on its own. Memory stays bounded: examples go in chunks of
`chunk_size`, and unfolded inputs, Gram matrices and fallback gradients in sub-chunks of at
most `BUDGET` elements.

The naive reference (one backward pass per example) is
`memloc.gradients_reference.reference_example_norms`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from memloc.gradients import examples_independent, parameter_groups
from memloc.interventions import eval_mode

#: Most elements of one temporary (unfolded input, Gram matrices, fallback gradients): 128 MiB.
BUDGET = 2**25

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _sub_chunks(n: int, per_example: int) -> list[slice]:
    """Slices of range(n) so that a temporary of `per_example` elements each fits in BUDGET."""
    step = max(1, BUDGET // max(1, per_example))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _weight_sq(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-example ||g_i^T a_i||_F^2 for a (n, T, d_in), g (n, T, d_out) -> (n,)."""
    n, t, d_in = a.shape
    d_out = g.shape[2]
    out = a.new_empty(n)
    if t == 1:
        return a.square().sum((1, 2)) * g.square().sum((1, 2))
    gram = t * t * (d_in + d_out) < t * d_in * d_out  # fewer multiply-adds in the Gram form
    for s in _sub_chunks(n, t * t if gram else d_in * d_out):
        if gram:
            aa = a[s] @ a[s].transpose(1, 2)  # (n', T, T)
            gg = g[s] @ g[s].transpose(1, 2)  # (n', T, T)
            out[s] = (aa * gg).sum((1, 2))
        else:
            out[s] = (g[s].transpose(1, 2) @ a[s]).square().sum((1, 2))  # (n', d_out, d_in)
    return out


def _linear(m: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    a, g = a.reshape(a.shape[0], -1, a.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])  # (n, T, d)
    out = {"weight": _weight_sq(a, g)}
    if m.bias is not None:
        out["bias"] = g.sum(1).square().sum(1)
    return out


def _conv2d(m: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    n = a.shape[0]
    g = g.flatten(2)  # (n, C_out, L)
    c_in_kk = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
    length = g.shape[2]
    weight = a.new_empty(n)
    for s in _sub_chunks(n, c_in_kk * length):
        if m.kernel_size == (1, 1) and m.padding == (0, 0):
            u = a[s][:, :, ::m.stride[0], ::m.stride[1]].flatten(2)  # (n', C_in, L): a 1x1 unfold is a view
        else:
            u = F.unfold(a[s], m.kernel_size, m.dilation, m.padding, m.stride)  # (n', C_in*k*k, L)
        weight[s] = _weight_sq(u.transpose(1, 2), g[s].transpose(1, 2))
    out = {"weight": weight}
    if m.bias is not None:
        out["bias"] = g.sum(2).square().sum(1)
    return out


def _layer_norm(m: nn.LayerNorm, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    k = len(m.normalized_shape)
    a = a.reshape(a.shape[0], -1, *a.shape[a.dim() - k:])  # (n, T, *normalized_shape)
    g = g.reshape(a.shape)
    dims = tuple(range(2, a.dim()))
    xhat = (a - a.mean(dims, keepdim=True)) / torch.sqrt(a.var(dims, unbiased=False, keepdim=True) + m.eps)
    out = {}
    if m.weight is not None:
        out["weight"] = (g * xhat).sum(1).flatten(1).square().sum(1)  # sum over tokens, then ||.||^2
    if m.bias is not None:
        out["bias"] = g.sum(1).flatten(1).square().sum(1)
    return out


def _batch_norm(m: nn.modules.batchnorm._BatchNorm, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    a = a.reshape(a.shape[0], a.shape[1], -1)  # (n, C, positions)
    g = g.reshape(a.shape)
    xhat = (a - m.running_mean[:, None]) / torch.sqrt(m.running_var[:, None] + m.eps)  # eval-mode statistics
    out = {}
    if m.weight is not None:
        out["weight"] = (g * xhat).sum(2).square().sum(1)
    if m.bias is not None:
        out["bias"] = g.sum(2).square().sum(1)
    return out


def _rule(m: nn.Module) -> Callable | None:
    """The ghost-norm rule for layer `m` (eval mode), or None if it has no exact one here."""
    if type(m) is nn.Linear:
        return _linear
    if type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        return _conv2d
    if type(m) is nn.LayerNorm:
        return _layer_norm
    if isinstance(m, _BATCHNORMS) and m.track_running_stats and m.running_mean is not None:
        return _batch_norm
    return None


class _Plan:
    """The layers whose parameters get ghost norms; every other trainable parameter (in `named`)
    gets the torch.func fallback."""

    def __init__(self, model: nn.Module, probe: torch.Tensor):
        named = dict(model.named_parameters())
        calls: dict[str, int] = {}
        candidates = {}
        if examples_independent(model, _BATCHNORMS):
            for path, m in model.named_modules():
                own = dict(m.named_parameters(recurse=False))
                if own and _rule(m) is not None:
                    candidates[path] = m
        # Count calls of each candidate on one example: a layer used twice sums two
        # contributions to its gradient, which the per-call rules cannot combine.
        handles = [m.register_forward_hook(lambda mod, i, o, p=path: calls.__setitem__(p, calls.get(p, 0) + 1))
                   for path, m in candidates.items()]
        try:
            with torch.no_grad():
                model(probe[:1])
        finally:
            for h in handles:
                h.remove()
        self.layers = {path: m for path, m in candidates.items() if calls.get(path) == 1}
        self.named = {n: p for n, p in named.items() if p.requires_grad}


def _fallback_sq(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example squared norms of `params` by torch.func, each example on its own."""

    def loss_one(p, xi, yi):
        return F.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    detached = {k: v.detach() for k, v in params.items()}
    out = {k: x.new_empty(x.shape[0]) for k in params}
    for s in _sub_chunks(x.shape[0], sum(v.numel() for v in params.values())):
        with torch.no_grad():  # no graph for the outer autograd; torch.func.grad still differentiates
            grads = per_example(detached, x[s], y[s])  # name -> (n', *shape)
        for k, gk in grads.items():
            out[k][s] = gk.flatten(1).square().sum(1)
    return out


def example_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 256,
                           progress: Callable[[int], None] | None = None) -> tuple[list[str], torch.Tensor]:
    """Per-example gradient norm per layer group: (group names, (N, G) float32 on the device).

    `x` (N, C, H, W) and `y` (N,) are the examples and their training labels. The model is in
    `eval_mode` for the computation (and restored afterwards); no `.grad` is written. `progress(n)` is called with the number of examples done per chunk.
    """
    entries = parameter_groups(model)
    groups = list(dict.fromkeys(g for g, _, _ in entries))
    column = {name: groups.index(g) for g, name, _ in entries}
    out = x.new_zeros(x.shape[0], len(groups))
    with eval_mode(model):
        plan = _Plan(model, x)
        for start in range(0, x.shape[0], chunk_size):
            xc, yc = x[start:start + chunk_size], y[start:start + chunk_size]
            sq: dict[str, torch.Tensor] = _ghost_sq(model, plan, xc, yc) if plan.layers else {}
            missing = {n: p for n, p in plan.named.items() if n not in sq}  # fallback, and layers left out
            if missing:
                sq.update(_fallback_sq(model, missing, xc, yc))
            block = out[start:start + len(xc)]  # (n, G) view
            for name, values in sq.items():
                block[:, column[name]] += values
            if progress is not None:
                progress(len(xc))
    return groups, out.sqrt_()


def _ghost_sq(model: nn.Module, plan: _Plan, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Squared per-example norms of the ghost-norm layers' parameters, from one batched pass.

    Each layer's output gets a tensor hook when it is made; the hook fires with the output's
    gradient (a tensor hook registered before an in-place op on that tensor, e.g. a following
    ReLU(inplace=True), still receives the gradient of the value it was registered on). A layer
    whose hook does not fire, or whose saved input was changed in place afterwards, is left out
    of the result, and the caller computes its parameters by the fallback.
    """
    sq: dict[str, torch.Tensor] = {}

    def on_forward(path: str, m: nn.Module):
        def hook(module, inputs, output):
            a = inputs[0].detach()
            version = a._version  # shared with the input; changes if the input is edited in place

            def on_grad(g):
                if a._version == version:
                    for pname, values in _rule(m)(m, a, g.detach()).items():
                        sq[f"{path}.{pname}" if path else pname] = values
            output.register_hook(on_grad)
        return hook

    handles = [m.register_forward_hook(on_forward(path, m)) for path, m in plan.layers.items()]
    try:
        xg = x.detach().requires_grad_(True)
        # Sum of per-example losses: with examples independent, the output gradient of row i is
        # the gradient of example i's own loss.
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)  # drives the backward through every layer; no weight gradients
    finally:
        for h in handles:
            h.remove()
    return sq


#: Columns of the `example_gradients` table (one row per checkpoint, example and layer group).
COLUMNS = ["example_id", "epoch", "group", "grad_norm"]


def example_table(epoch: int, groups: list[str], norms: torch.Tensor) -> pd.DataFrame:
    """The `example_gradients` rows of checkpoint `epoch` from the norms (N, G) of
    `example_gradient_norms`: example by example, the groups in order."""
    n, g = norms.shape
    return pd.DataFrame({
        "example_id": np.repeat(np.arange(n, dtype=np.int64), g),
        "epoch": np.full(n * g, epoch, dtype=np.int64),
        "group": np.tile(np.asarray(groups, dtype=object), n),
        "grad_norm": norms.cpu().numpy().reshape(-1),
    })


__all__ = ["example_gradient_norms", "BUDGET", "COLUMNS", "example_table"]
