"""Attributions: which input pixels (or which units of a layer) a prediction rests on.

A thin facade over Captum (https://captum.ai). It keeps Captum's own argument names
(`inputs`, `target`, `baselines`, `n_steps`, `internal_batch_size`, `sliding_window_shapes`,
`strides`, `n_samples`, `stdevs`) so Captum's documentation applies as it is; it adds only

- `METHODS`, a small table of the supported methods with a one-line reading guide each (the
  explorer lists it), their kind (input pixels or a layer's units) and memloc's defaults;
- one call, `attribute(model, algorithm, inputs, target, layer=...)`, that builds the Captum object
  for the model (and layer) and runs it inside `memloc.interventions.eval_mode`, which removes
  every hook added while it ran, also when the call raised, so a cached model never keeps a
  stray hook.

Explaining a memorized example: attribute it once to its *training* (noisy) label and once to
its *true* label, before and inside `intervene(model, [ZeroUnits(flip_set)])`; the flip set
found by greedy flipping (PAPER.md section 4) should remove what supported the noisy label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import GradientShap, IntegratedGradients, LayerConductance, LayerGradCam, Occlusion, Saliency
from torch import nn

from memloc.interventions import eval_mode


@dataclass(frozen=True)
class Method:
    """One supported Captum method."""

    name: str
    captum: type
    layer: bool  # True: attributes to a layer's units (needs `layer=`); False: to input pixels
    layer_types: tuple[type, ...]  # the module types a layer method accepts
    summary: str  # how to read it, one sentence
    defaults: dict[str, Any] = field(default_factory=dict)  # Captum keyword arguments memloc sets


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("IntegratedGradients", IntegratedGradients, False, (),
               "gradient integrated along the straight path from the baseline to the image; "
               "the pixel attributions sum to the change of the class score", {"n_steps": 32}),
        Method("Saliency", Saliency, False, (),
               "absolute gradient of the class score at the image: which pixels it is most sensitive to"),
        Method("GradientShap", GradientShap, False, (),
               "expected gradient x (image - baseline) over noisy points between baseline and image",
               {"n_samples": 16, "stdevs": 0.1}),
        Method("Occlusion", Occlusion, False, (),
               "drop of the class score when a patch of the image is replaced by the baseline",
               {"perturbations_per_eval": 64}),  # 64 occluded copies per forward pass, not one
        Method("LayerConductance", LayerConductance, True, (nn.Linear, nn.Conv2d),
               "integrated gradients flowing through each unit of the chosen layer: how much of the "
               "class score passes through that unit", {"n_steps": 32}),
        Method("LayerGradCam", LayerGradCam, True, (nn.Conv2d,),
               "Grad-CAM: the chosen conv layer's channels weighted by their mean gradient, as a "
               "map over the layer's positions (conv layers only)"),
    )
}


def methods_for(model: nn.Module) -> list[str]:
    """Names of the methods usable on `model`: input methods, and layer methods for which it has
    a unit layer of a supported type."""
    modules = dict(model.named_modules())
    out = []
    for m in METHODS.values():
        if not m.layer or any(isinstance(modules[p], m.layer_types) for p in model.unit_layers):
            out.append(m.name)
    return out


def layers_for(model: nn.Module, method: str) -> list[str]:
    """The unit layers of `model` that layer method `method` accepts."""
    m = METHODS[method]
    modules = dict(model.named_modules())
    return [p for p in model.unit_layers if isinstance(modules[p], m.layer_types)]


def default_window(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Occlusion's `sliding_window_shapes` default: all channels, a patch of about 1/8 of the side."""
    c, h, w = input_shape
    return (c, max(1, h // 8), max(1, w // 8))


def attribute(
    model: nn.Module,
    algorithm: str,
    inputs: torch.Tensor,
    target: int | torch.Tensor,
    *,
    layer: str | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Attributions of method `algorithm` (a key of `METHODS`) for `inputs` (B, C, H, W) and class
    `target` (named so that Captum's own `method=`, the integration rule, stays free).

    Input methods return (B, C, H, W); LayerConductance on a linear layer (B, units), on a conv
    layer (B, units, H', W'); LayerGradCam (B, 1, H', W'). `kwargs` are Captum's own
    (`baselines`, `n_steps`, `internal_batch_size`, `sliding_window_shapes`, ...) and override
    memloc's defaults. The model is evaluated in eval mode and restored afterwards.
    """
    if algorithm not in METHODS:
        raise ValueError(f"attribution method {algorithm!r}: one of {', '.join(METHODS)}")
    m = METHODS[algorithm]
    args = {**m.defaults, **kwargs}
    if m.layer:
        allowed = layers_for(model, algorithm)
        if layer not in allowed:
            raise ValueError(f"{algorithm} needs layer= one of {', '.join(allowed) or '(none in this model)'}; got {layer!r}")
        explainer = m.captum(model, dict(model.named_modules())[layer])
    else:
        if layer is not None:
            raise ValueError(f"{algorithm} attributes to input pixels; it takes no layer")
        explainer = m.captum(model)
    if m.captum is Occlusion:
        args.setdefault("sliding_window_shapes", default_window(tuple(inputs.shape[1:])))
    if m.captum is GradientShap and "baselines" not in args:
        args["baselines"] = torch.zeros_like(inputs)  # Captum requires baselines here; zeros as elsewhere
    with eval_mode(model):  # Captum's layer methods add hooks; the scope removes any left behind
        out = explainer.attribute(inputs, target=target, **args)
    return out.detach()


__all__ = ["Method", "METHODS", "methods_for", "layers_for", "default_window", "attribute"]
