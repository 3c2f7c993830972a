"""The memloc model zoo: `build(name, input_shape, num_classes, **options)`.

Every built model is an `nn.Module` mapping images (B, C, H, W) to logits (B, num_classes) and
carrying the attributes the rest of memloc relies on: `layer_groups` (ordered module-name
prefixes that partition all parameters and buffers), `unit_layers` (the conv / linear layers
whose output channels / neurons are units; never the classifier), `arch`, `options` (resolved,
JSON-serializable), `input_shape` and `num_classes`; see `models.base`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.base import group_members, group_of, in_group, make_config
from models.cnn import CNN, CNNConfig
from models.mlp import MLP, MLPConfig
from models.resnet9 import ResNet9, ResNet9Config
from models.resnet50 import ResNet50, ResNet50Config
from models.vit import ViT, ViTConfig

_ARCHITECTURES = {
    "mlp": (MLP, MLPConfig),
    "cnn": (CNN, CNNConfig),
    "resnet9": (ResNet9, ResNet9Config),
    "resnet50": (ResNet50, ResNet50Config),
    "vit": (ViT, ViTConfig),
}
NAMES = tuple(_ARCHITECTURES)
#: Each architecture's config dataclass: its fields are the options `build` takes.
CONFIGS: dict[str, type] = {name: config_cls for name, (_, config_cls) in _ARCHITECTURES.items()}


def build(name: str, input_shape: tuple[int, int, int], num_classes: int,
          **options: Any) -> nn.Module:
    """Build model `name` for images of `input_shape` (C, H, W) and `num_classes` classes.

    `options` are the fields of the model's config dataclass (e.g. `width=0.25` for resnet9);
    unknown options raise TypeError naming the allowed ones, bad values raise ValueError.
    Weights use PyTorch's default init, so they are determined by `torch.manual_seed`.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(NAMES)}")
    model_cls, config_cls = _ARCHITECTURES[name]
    return model_cls(input_shape, num_classes, make_config(name, config_cls, options))


__all__ = ["NAMES", "CONFIGS", "build", "group_members", "group_of", "in_group"]
