"""The memloc model zoo: `build(name, input_shape, num_classes, **options)`.

Every built model is an `nn.Module` mapping images (B, C, H, W) to logits (B, num_classes) and
carrying the attributes the rest of memloc relies on: `layer_groups` (ordered module-name
prefixes that partition all parameters and buffers), `unit_layers` (the conv / linear layers
whose output channels / neurons are units; never the classifier), `arch`, `options` (resolved,
JSON-serializable), `input_shape` and `num_classes`; see `models.base`.

An architecture's module (and with it torch) is imported when its model is first built:
`import models` and `models.base` import no torch, so a run's configuration is checked
without it (`memloc.lazy`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from models.base import group_members, group_of, in_group, make_config

if TYPE_CHECKING:
    from torch import nn

#: Architecture -> its module, model class and config dataclass.
_ARCHITECTURES = {
    "mlp": ("models.mlp", "MLP", "MLPConfig"),
    "cnn": ("models.cnn", "CNN", "CNNConfig"),
    "resnet9": ("models.resnet9", "ResNet9", "ResNet9Config"),
    "resnet50": ("models.resnet50", "ResNet50", "ResNet50Config"),
    "vit": ("models.vit", "ViT", "ViTConfig"),
}
NAMES = tuple(_ARCHITECTURES)


def _classes(name: str) -> tuple[type, type]:
    """The model class and config dataclass of architecture `name`, importing its module."""
    module, model_cls, config_cls = _ARCHITECTURES[name]
    module = importlib.import_module(module)
    return getattr(module, model_cls), getattr(module, config_cls)


def __getattr__(name: str) -> Any:
    if name == "CONFIGS":  # each architecture's config dataclass: its fields are the options `build` takes
        return {arch: _classes(arch)[1] for arch in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build(name: str, input_shape: tuple[int, int, int], num_classes: int,
          **options: Any) -> nn.Module:
    """Build model `name` for images of `input_shape` (C, H, W) and `num_classes` classes.

    `options` are the fields of the model's config dataclass (e.g. `width=0.25` for resnet9);
    unknown options raise TypeError naming the allowed ones, bad values raise ValueError.
    Weights use PyTorch's default init, so they are determined by `torch.manual_seed`.

    Convolution weights are kept in channels-last order (`torch.channels_last`; the values and
    their state-dict order are the same): oneDNN's CPU convolutions run 1.2-1.4x faster on it,
    and the activations follow the weights from the first convolution on (BENCHMARKS.md,
    "Every stage of fashion-mnist"). `Module.to(device)` keeps the order.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    import torch

    model_cls, config_cls = _classes(name)
    return model_cls(input_shape, num_classes, make_config(name, config_cls, options)).to(memory_format=torch.channels_last)


__all__ = ["NAMES", "CONFIGS", "build", "group_members", "group_of", "in_group"]
