"""ResNet-50: torchvision's ResNet-50 adapted to small images, as in the paper.

torchvision's `resnet50(weights=None, num_classes=K)` (bottleneck blocks 3, 4, 6, 3 in
`layer1` ... `layer4`, global average pool, linear `fc`), with the ImageNet stem made fit for
8x8 to 32x32 inputs: `conv1` is a 3x3 conv with stride 1 and pad 1 from C input channels
(instead of 7x7 stride 2 from 3 channels), and the stem max-pool is removed (Identity).

Layer groups: `stem` (conv1, bn1), then each bottleneck block `layer1.0` ... `layer4.2`
(16 groups), then `fc`. The units are the output channels of every conv: the stem conv, the
three convs of each block and the downsample convs of the first block of each stage.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from models.base import check_input, options_of

BLOCKS_PER_STAGE = (3, 4, 6, 3)


@dataclass(frozen=True)
class ResNet50Config:
    """ResNet-50 has no options."""


class ResNet50(ResNet):
    arch = "resnet50"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: ResNet50Config = ResNet50Config()):
        input_shape = check_input(input_shape, num_classes)
        super().__init__(Bottleneck, list(BLOCKS_PER_STAGE), num_classes=num_classes)
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.options = options_of(config)

        self.conv1 = nn.Conv2d(self.input_shape[0], 64, kernel_size=3, stride=1, padding=1,
                               bias=False)
        # the same init torchvision gives every other conv of the network
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()

        blocks = tuple(f"layer{stage}.{i}"
                       for stage, count in enumerate(BLOCKS_PER_STAGE, start=1)
                       for i in range(count))
        self.layer_groups = {"stem": ("conv1", "bn1"), **{b: (b,) for b in blocks},
                             "fc": ("fc",)}
        self.unit_layers = tuple(name for name, module in self.named_modules()
                                 if isinstance(module, nn.Conv2d))
