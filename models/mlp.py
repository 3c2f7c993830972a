"""MLP: the natural small case of the paper's question.

The image is flattened and passed through hidden fully connected layers with ReLU, then a
linear classifier:

    x (B, C, H, W) -> flatten (B, C*H*W) -> fc1 -> ReLU -> ... -> fcN -> ReLU -> out (B, K)

Each linear layer is its own layer group (`fc1`, ..., `fcN`, `out`); the units are the output
neurons of the hidden layers `fc1` ... `fcN`.

With the option `example_tied_dropout` (PAPER.md section 5; see `models.example_tied_dropout`)
an example-tied dropout layer follows the ReLU of each chosen hidden layer (default: all), and
the forward pass takes the batch's example ids in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import example_tied_dropout as etd
from models.base import check_input, check_range, options_of


@dataclass(frozen=True)
class MLPConfig:
    hidden: tuple[int, ...] = (512, 512)  # neurons per hidden layer, input to output; () = linear; at most 8 of 1..8192
    example_tied_dropout: etd.DropoutOptions | dict | None = None  # p_gen, p_mem, seed, after: [fc1, ...]; None = off

    def __post_init__(self):
        if not isinstance(self.hidden, (list, tuple)) or len(self.hidden) > 8:
            raise ValueError(f"mlp: hidden: a list of at most 8 layer widths, got {self.hidden!r}")
        hidden = tuple(self.hidden)
        for h in hidden:
            check_range("mlp: hidden", h, 1, 8192, integer=True)  # 8 x 8192: 495M parameters
        object.__setattr__(self, "hidden", hidden)  # accept a list, e.g. from JSON


class MLP(nn.Module):
    arch = "mlp"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: MLPConfig = MLPConfig()):
        super().__init__()
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        self.options = options_of(config)

        c, h, w = self.input_shape
        sizes = (c * h * w, *config.hidden)
        self.hidden_names = tuple(f"fc{i}" for i in range(1, len(sizes)))
        for name, fan_in, fan_out in zip(self.hidden_names, sizes, sizes[1:]):
            self.add_module(name, nn.Linear(fan_in, fan_out))
        self.out = nn.Linear(sizes[-1], num_classes)
        dropout = etd.parse_options(self.arch, config.example_tied_dropout, self.hidden_names)
        self.dropout = etd.make_layers(dropout, self.hidden_names, dict(zip(self.hidden_names, sizes[1:])))
        self.takes_example_ids = dropout is not None
        self.options["example_tied_dropout"] = dropout and dropout.to_dict()

        self.layer_groups = {name: (name,) for name in (*self.hidden_names, "out")}
        self.unit_layers = self.hidden_names

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        for name in self.hidden_names:
            x = torch.relu(getattr(self, name)(x))  # (B, hidden)
            if name in self.dropout:
                x = self.dropout[name](x, example_ids)  # (B, hidden)
        return self.out(x)  # (B, K)
