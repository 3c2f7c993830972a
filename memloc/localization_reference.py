"""The naive reference of `memloc.localization`'s methods, one target and one unit at a time,
literally as their definitions say (for the tests: the fast paths must give the same scores).

For a plain model whose unit layers are `nn.Linear` or `nn.Conv2d` (`model.unit_layers`):

- zero-out: a copy of the model with the unit's incoming weights and bias set to 0;
- activations: a forward hook keeps the layer's output; the outgoing weights are the next
  layer's, given by the caller (`readers`);
- integrated gradients: a forward hook scales the layer's output by alpha, and the gradient of
  the logit with respect to the scaled output is summed over Gauss-Legendre nodes on [0, 1]
  (Captum's default rule), times the activation: a hand-written integral;
- Slimming and HardConcrete: one mask tensor per layer multiplied onto its output by a forward
  hook, trained with the same Adam steps for one target alone;
- UnitMem: each unit's mean rectified activation over the views and over the other examples.

Greedy flipping's reference is `memloc.flipping_reference`.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memloc.flipping import seeded_generator
from memloc.localization import _GATES, _GAMMA, _ZETA, LocalizeSettings


def _output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    kept = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: kept.setdefault("out", o))
    try:
        model(x)
    finally:
        handle.remove()
    return kept["out"]


def _spatial_mean(out: torch.Tensor) -> torch.Tensor:
    return out.mean((2, 3)) if out.dim() == 4 else out


def zero_out(model: nn.Module, x: torch.Tensor, label: int) -> torch.Tensor:
    """Rise of the loss of one image (1, C, H, W) when each unit's weights and bias are zeroed."""
    y = torch.tensor([label])
    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
        scores = []
        for layer in model.unit_layers:
            for unit in range(model.get_submodule(layer).weight.shape[0]):
                edited = copy.deepcopy(model)
                module = edited.get_submodule(layer)
                module.weight[unit] = 0
                if module.bias is not None:
                    module.bias[unit] = 0
                scores.append(float(F.cross_entropy(edited(x), y) - base))
    return torch.tensor(scores)


def activations(model: nn.Module, x: torch.Tensor, readers: dict[str, str]) -> torch.Tensor:
    """|mean activation| x the norm of the column (input channel) of the reading layer."""
    scores = []
    with torch.no_grad():
        for layer in model.unit_layers:
            act = _spatial_mean(_output(model, layer, x))[0].abs()
            weight = model.get_submodule(readers[layer]).weight
            for unit in range(len(act)):
                scores.append(float(act[unit] * weight[:, unit].norm()))
    return torch.tensor(scores)


def integrated_gradients(model: nn.Module, x: torch.Tensor, label: int, steps: int) -> torch.Tensor:
    """IG of the logit of `label` to each unit, zero-activation baseline, Gauss-Legendre nodes."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = (nodes + 1) / 2, weights / 2  # on [0, 1]
    scores = []
    for layer in model.unit_layers:
        module = model.get_submodule(layer)
        total = None
        for alpha, weight in zip(alphas, weights):
            kept = {}

            def scale(m, i, o, alpha=alpha):
                kept["act"] = o.detach()
                scaled = o.detach() * float(alpha)
                scaled.requires_grad_(True)
                kept["scaled"] = scaled
                return scaled

            handle = module.register_forward_hook(scale)
            try:
                logit = model(x)[0, label]
                grad = torch.autograd.grad(logit, kept["scaled"])[0]
            finally:
                handle.remove()
            term = float(weight) * grad * kept["act"]
            total = term if total is None else total + term
        per_unit = total.sum((2, 3)) if total.dim() == 4 else total
        scores += per_unit[0].tolist()
    return torch.tensor(scores)


def _masked_loss(model: nn.Module, x: torch.Tensor, label: int, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    handles = []
    for layer, mask in masks.items():
        def hook(m, i, o, mask=mask):
            return o * (mask.view(1, -1, 1, 1) if o.dim() == 4 else mask)
        handles.append(model.get_submodule(layer).register_forward_hook(hook))
    try:
        return F.cross_entropy(model(x), torch.tensor([label]))
    finally:
        for handle in handles:
            handle.remove()


def _sizes(model: nn.Module) -> dict[str, int]:
    return {layer: model.get_submodule(layer).weight.shape[0] for layer in model.unit_layers}


def slimming(model: nn.Module, x: torch.Tensor, label: int, settings: LocalizeSettings) -> torch.Tensor:
    """Masks in [0, 1] trained with Adam on the loss + lambda x mean over all units."""
    for p in model.parameters():
        p.requires_grad_(False)
    masks = {layer: torch.ones(size, requires_grad=True) for layer, size in _sizes(model).items()}
    optimizer = torch.optim.Adam(list(masks.values()), lr=settings.slimming_lr)
    trail = {layer: torch.zeros_like(m) for layer, m in masks.items()}
    total = sum(m.numel() for m in masks.values())
    for _ in range(settings.slimming_steps):
        loss = _masked_loss(model, x, label, masks) + settings.slimming_lambda * sum(m.sum() for m in masks.values()) / total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for layer, m in masks.items():
                m.clamp_(0, 1)
                trail[layer] += m
    return torch.cat([masks[layer].detach() + 1e-6 * trail[layer] / settings.slimming_steps for layer in masks])


def hard_concrete(model: nn.Module, x: torch.Tensor, example_id: int, label: int, settings: LocalizeSettings) -> torch.Tensor:
    """L0 gates (Louizos et al. 2018) trained with Adam on the loss + lambda x expected L0 share."""
    for p in model.parameters():
        p.requires_grad_(False)
    sizes = _sizes(model)
    total = sum(sizes.values())
    log_alpha = torch.full((total,), 3.0, requires_grad=True)
    optimizer = torch.optim.Adam([log_alpha], lr=settings.hard_concrete_lr)
    g = seeded_generator(settings.seed, example_id, _GATES)
    beta = settings.hard_concrete_beta
    for _ in range(settings.hard_concrete_steps):
        u = torch.rand(total, generator=g).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log(1 - u) + log_alpha) / beta)
        z = torch.clamp(s * (_ZETA - _GAMMA) + _GAMMA, 0, 1)
        masks, start = {}, 0
        for layer, size in sizes.items():
            masks[layer] = z[start : start + size]
            start += size
        expected_l0 = torch.sigmoid(log_alpha - beta * np.log(-_GAMMA / _ZETA)).mean()
        loss = _masked_loss(model, x, label, masks) + settings.hard_concrete_lambda * expected_l0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return torch.sigmoid(log_alpha.detach())


def unitmem(model: nn.Module, views: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(mu_t - mu_o) / (mu_t + mu_o) per unit, from each row's mean of max(activation, 0)."""
    scores = []
    with torch.no_grad():
        for layer in model.unit_layers:
            on_views = [_spatial_mean(_output(model, layer, v[None]).clamp_min(0))[0] for v in views]
            on_others = [_spatial_mean(_output(model, layer, o[None]).clamp_min(0))[0] for o in others]
            for unit in range(len(on_views[0])):
                mu_t = sum(float(a[unit]) for a in on_views) / len(on_views)
                mu_o = sum(float(a[unit]) for a in on_others) / len(on_others)
                scores.append((mu_t - mu_o) / max(mu_t + mu_o, 1e-12))
    return torch.tensor(scores)
