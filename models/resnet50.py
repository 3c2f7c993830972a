"""ResNet-50: torchvision's ResNet-50 adapted to small images, as in the paper.

torchvision's `resnet50(weights=None, num_classes=K)` (bottleneck blocks 3, 4, 6, 3 in
`layer1` ... `layer4`, global average pool, linear `fc`), with the ImageNet stem made fit for
8x8 to 32x32 inputs: `conv1` is a 3x3 conv with stride 1 and pad 1 from C input channels
(instead of 7x7 stride 2 from 3 channels), and the stem max-pool is removed (Identity).

`width` multiplies every channel count (the stem's 64, each stage's 64, 128, 256, 512 and its
4x expansion; rounded, at least 1), as ResNet-9's does; at 1/8 the network keeps its 16 blocks
and their shapes with 1/64 of the parameters, which lets the small presets train it in
seconds.

Layer groups: `stem` (conv1, bn1), then each bottleneck block `layer1.0` ... `layer4.2`
(16 groups), then `fc`. The units are the output channels of every conv: the stem conv, the
three convs of each block and the downsample convs of the first block of each stage.

With the option `example_tied_dropout` (PAPER.md section 5; see `models.example_tied_dropout`)
an example-tied dropout layer follows each chosen bottleneck block, on its output (after the
residual sum and ReLU), whose channels are those of the block's `conv3`. Its places are named
`layer1_0` ... `layer4_2` (block `layer1.0` ...; module names cannot hold a dot), default all 16;
the forward pass takes the batch's example ids in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from models import example_tied_dropout as etd
from models.base import check_input, check_range, options_of, scaled

BLOCKS_PER_STAGE = (3, 4, 6, 3)
#: The bottleneck blocks, input to output, and the dropout place after each.
BLOCKS = tuple(f"layer{stage}.{i}" for stage, count in enumerate(BLOCKS_PER_STAGE, start=1) for i in range(count))
DROPOUT_PLACES = tuple(block.replace(".", "_") for block in BLOCKS)


@dataclass(frozen=True)
class ResNet50Config:
    width: float = 1.0  # multiplier of every channel count; in (0, 4] (1 = torchvision's ResNet-50)
    example_tied_dropout: etd.DropoutOptions | dict | None = None  # p_gen, p_mem, seed, after: [layer1_0, ...]; None = off

    def __post_init__(self):
        check_range("resnet50: width", self.width, 0, 4, open_lo=True)
        object.__setattr__(self, "width", float(self.width))


class ResNet50(ResNet):
    arch = "resnet50"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: ResNet50Config = ResNet50Config()):
        input_shape = check_input(input_shape, num_classes)
        super().__init__(Bottleneck, list(BLOCKS_PER_STAGE), num_classes=num_classes)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.options = options_of(config)

        stem = scaled(64, config.width)
        if config.width != 1.0:  # torchvision's widths are fixed: build the stages again, scaled
            self.inplanes = stem
            self.bn1 = nn.BatchNorm2d(stem)
            for stage, count in enumerate(BLOCKS_PER_STAGE, start=1):
                planes = scaled(64 * 2 ** (stage - 1), config.width)
                setattr(self, f"layer{stage}", self._make_layer(Bottleneck, planes, count, stride=1 if stage == 1 else 2))
            self.fc = nn.Linear(self.inplanes, num_classes)
        self.conv1 = nn.Conv2d(self.input_shape[0], stem, kernel_size=3, stride=1, padding=1,
                               bias=False)
        # the init torchvision gives every conv of the network (BatchNorm: weight 1, bias 0)
        convs = [self.conv1] if config.width == 1.0 else [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

        self.layer_groups = {"stem": ("conv1", "bn1"), **{b: (b,) for b in BLOCKS},
                             "fc": ("fc",)}
        self.unit_layers = tuple(name for name, module in self.named_modules()
                                 if isinstance(module, nn.Conv2d))
        dropout = etd.parse_options(self.arch, config.example_tied_dropout, DROPOUT_PLACES)
        channels = {place: self.get_submodule(block).conv3.out_channels for place, block in zip(DROPOUT_PLACES, BLOCKS)}
        self.dropout = etd.make_layers(dropout, DROPOUT_PLACES, channels)
        self.takes_example_ids = dropout is not None
        self.options["example_tied_dropout"] = dropout and dropout.to_dict()

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H, W); maxpool is Identity
        for block, place in zip(BLOCKS, DROPOUT_PLACES):
            x = self.get_submodule(block)(x)  # (B, 4 * planes, H', W')
            if place in self.dropout:
                x = self.dropout[place](x, example_ids)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, K)
