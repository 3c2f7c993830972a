"""ResNet-9: the paper authors' network for CIFAR-10, MNIST and SVHN.

Every block is conv -> BatchNorm -> ReLU (conv without bias); channel counts at `width` 1:

    prep     C -> 64,    3x3, pad 1
    layer1   64 -> 128,  5x5, stride 2, pad 2
    res1     x + res1.1(res1.0(x)),  res1.0, res1.1: 128 -> 128, 3x3, pad 1
    layer2   128 -> 256, 3x3, pad 1, then max-pool 2
    res2     x + res2.1(res2.0(x)),  res2.0, res2.1: 256 -> 256, 3x3, pad 1
    layer3   256 -> 128, 3x3, pad 0
    global max-pool, fc: linear 128 -> K without bias, logits = 0.2 * fc(features)

`width` multiplies every channel count (rounded, at least 1). The layer groups are the nine
blocks in that order (prep, layer1, res1.0, res1.1, layer2, res2.0, res2.1, layer3, fc), the
numbering of the paper's per-layer plots; the units are the output channels of every conv.

28x28 and 32x32 inputs get exactly this network. Small inputs would leave an empty map, so two
adaptations apply only there: the max-pool is skipped when the map before it is smaller than
2x2, and `layer3` uses pad 1 when the map before it is smaller than 3x3. For 8x8 inputs
(`digits`) the map is 4x4 after layer1 and 2x2 after the max-pool, so `layer3` has pad 1.

With the option `example_tied_dropout` (PAPER.md section 5; see `models.example_tied_dropout`)
an example-tied dropout layer follows each chosen block, as the authors intended: `prep`,
`layer1`, `res1` (after the residual sum), `layer2` (after the max-pool), `res2`, `layer3`
(default: all six); the forward pass takes the batch's example ids in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import example_tied_dropout as etd
from models.base import check_input, check_range, options_of, scaled

#: Where example-tied dropout may follow a block (the residual stages count as one block each).
DROPOUT_PLACES = ("prep", "layer1", "res1", "layer2", "res2", "layer3")


@dataclass(frozen=True)
class ResNet9Config:
    width: float = 1.0  # multiplier of every channel count (64, 128, 256); in (0, 8] (8: 144M parameters)
    example_tied_dropout: etd.DropoutOptions | dict | None = None  # p_gen, p_mem, seed, after: [prep, ...]; None = off

    def __post_init__(self):
        check_range("resnet9: width", self.width, 0, 8, open_lo=True)
        object.__setattr__(self, "width", float(self.width))


class ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ResNet9(nn.Module):
    arch = "resnet9"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: ResNet9Config = ResNet9Config()):
        super().__init__()
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        self.options = options_of(config)

        c, h, w = self.input_shape
        c64, c128, c256 = (scaled(n, config.width) for n in (64, 128, 256))
        self.prep = ConvBN(c, c64)
        self.layer1 = ConvBN(c64, c128, kernel_size=5, stride=2, padding=2)
        self.res1 = nn.Sequential(ConvBN(c128, c128), ConvBN(c128, c128))
        self.layer2 = ConvBN(c128, c256)
        size = min(h, w)
        size = (size - 1) // 2 + 1  # after layer1 (5x5, stride 2, pad 2)
        self.pool = nn.MaxPool2d(2) if size >= 2 else nn.Identity()
        size = size // 2 if size >= 2 else size
        self.res2 = nn.Sequential(ConvBN(c256, c256), ConvBN(c256, c256))
        self.layer3 = ConvBN(c256, c128, padding=0 if size >= 3 else 1)
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(c128, num_classes, bias=False)
        dropout = etd.parse_options(self.arch, config.example_tied_dropout, DROPOUT_PLACES)
        channels = dict(zip(DROPOUT_PLACES, (c64, c128, c128, c256, c256, c128)))
        self.dropout = etd.make_layers(dropout, DROPOUT_PLACES, channels)
        self.takes_example_ids = dropout is not None
        self.options["example_tied_dropout"] = dropout and dropout.to_dict()

        blocks = ("prep", "layer1", "res1.0", "res1.1", "layer2", "res2.0", "res2.1", "layer3")
        self.layer_groups = {name: (name,) for name in (*blocks, "fc")}
        self.unit_layers = tuple(f"{name}.conv" for name in blocks)

    def _drop(self, place: str, x: torch.Tensor, example_ids: torch.Tensor | None) -> torch.Tensor:
        return self.dropout[place](x, example_ids) if place in self.dropout else x

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self._drop("prep", self.prep(x), example_ids)  # (B, 64, H, W)
        x = self._drop("layer1", self.layer1(x), example_ids)  # (B, 128, H/2, W/2)
        x = self._drop("res1", x + self.res1(x), example_ids)
        x = self._drop("layer2", self.pool(self.layer2(x)), example_ids)  # (B, 256, H/4, W/4)
        x = self._drop("res2", x + self.res2(x), example_ids)
        x = self._drop("layer3", self.layer3(x), example_ids)  # (B, 128, H/4 - 2, W/4 - 2)
        x = self.global_pool(x).flatten(1)  # (B, 128)
        return 0.2 * self.fc(x)  # (B, K)
