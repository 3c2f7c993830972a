"""CNN: a small LeNet-style convolutional network.

    x (B, C, H, W)
    conv1  C -> 32, 3x3, pad 1, ReLU, max-pool 2
    conv2  32 -> 64, 3x3, pad 1, ReLU, max-pool 2
    flatten
    fc1    -> 128, ReLU
    out    128 -> K

`width` multiplies every hidden width (32, 64 and 128; rounded, at least 1). A max-pool is
skipped when it would shrink the map below 2x2, so even tiny inputs keep a spatial map (for
8x8, 28x28 and 32x32 inputs both pools are kept). Layer groups: `conv1`, `conv2`, `fc1`, `out`;
the units are the output channels of the convs and the output neurons of `fc1`.

With the option `example_tied_dropout` (PAPER.md section 5; see `models.example_tied_dropout`)
an example-tied dropout layer follows each chosen layer's ReLU (and pool): `conv1`, `conv2`,
`fc1` (default: all); the forward pass takes the batch's example ids in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import example_tied_dropout as etd
from models.base import check_input, check_range, options_of, scaled

#: Where example-tied dropout may follow a layer.
DROPOUT_PLACES = ("conv1", "conv2", "fc1")


@dataclass(frozen=True)
class CNNConfig:
    width: float = 1.0  # multiplier of the hidden widths 32, 64, 128; in (0, 16] (16: 139M parameters on 32x32)
    example_tied_dropout: etd.DropoutOptions | dict | None = None  # p_gen, p_mem, seed, after: [conv1, ...]; None = off

    def __post_init__(self):
        check_range("cnn: width", self.width, 0, 16, open_lo=True)
        object.__setattr__(self, "width", float(self.width))


def _pool_or_identity(h: int, w: int) -> tuple[nn.Module, int, int]:
    """A 2x2 max-pool and the map size after it, or Identity if the map would drop below 2."""
    if min(h, w) // 2 < 2:
        return nn.Identity(), h, w
    return nn.MaxPool2d(2), h // 2, w // 2


class CNN(nn.Module):
    arch = "cnn"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: CNNConfig = CNNConfig()):
        super().__init__()
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        self.options = options_of(config)

        c, h, w = self.input_shape
        c1, c2, hidden = (scaled(n, config.width) for n in (32, 64, 128))
        self.conv1 = nn.Conv2d(c, c1, kernel_size=3, padding=1)
        self.pool1, h, w = _pool_or_identity(h, w)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, padding=1)
        self.pool2, h, w = _pool_or_identity(h, w)
        self.fc1 = nn.Linear(c2 * h * w, hidden)
        self.out = nn.Linear(hidden, num_classes)
        dropout = etd.parse_options(self.arch, config.example_tied_dropout, DROPOUT_PLACES)
        self.dropout = etd.make_layers(dropout, DROPOUT_PLACES, dict(zip(DROPOUT_PLACES, (c1, c2, hidden))))
        self.takes_example_ids = dropout is not None
        self.options["example_tied_dropout"] = dropout and dropout.to_dict()

        self.layer_groups = {name: (name,) for name in ("conv1", "conv2", "fc1", "out")}
        self.unit_layers = ("conv1", "conv2", "fc1")

    def _drop(self, place: str, x: torch.Tensor, example_ids: torch.Tensor | None) -> torch.Tensor:
        return self.dropout[place](x, example_ids) if place in self.dropout else x

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self._drop("conv1", self.pool1(torch.relu(self.conv1(x))), example_ids)  # (B, c1, H/2, W/2)
        x = self._drop("conv2", self.pool2(torch.relu(self.conv2(x))), example_ids)  # (B, c2, H/4, W/4)
        x = self._drop("fc1", torch.relu(self.fc1(x.flatten(1))), example_ids)  # (B, hidden)
        return self.out(x)  # (B, K)
