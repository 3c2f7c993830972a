"""ViT: a small vision transformer, written out so every unit is a plain module.

    x (B, C, H, W)
    patch_embed   conv C -> dim, kernel = stride = patch: one token per patch, N = HW / patch^2
    prepend the learned cls_token, add the learned pos_embed  -> (B, 1 + N, dim)
    blocks.0 ... blocks.{depth-1}, each pre-norm:
        x = x + attn(norm1(x))   multi-head self-attention: qkv linear, softmax, proj linear
        x = x + mlp(norm2(x))    fc1 dim -> mlp_ratio * dim, GELU, fc2 back to dim
    norm (LayerNorm), head: linear dim -> K on the cls token

`patch` must divide H and W (the default 4 divides 8, 28 and 32); otherwise building raises.
Layer groups: `embed` (patch_embed, cls_token, pos_embed), `blocks.0` ... `blocks.{depth-1}`,
`head` (final norm and head). The units are the output channels of `patch_embed` and the output
neurons of each block's attention output projection `attn.proj` and MLP hidden layer `mlp.fc1`.

With the option `example_tied_dropout` (PAPER.md section 5; see `models.example_tied_dropout`)
an example-tied dropout layer sits in each chosen block's MLP, on its hidden neurons (after the
GELU, before `fc2`), so that an example's memorization units are `mlp.fc1` units, the same for
every token of the example. Its places are named `blocks_0` ... (block `blocks.0` ...; module
names cannot hold a dot), default every block; the forward pass takes the batch's example ids
in train mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models import example_tied_dropout as etd
from models.base import check_input, check_range, options_of


@dataclass(frozen=True)
class ViTConfig:
    patch: int = 4  # patch side in pixels, in [1, 32]; must divide the image height and width
    dim: int = 192  # token width, in [1, 1024]
    depth: int = 6  # number of transformer blocks, in [1, 24]
    heads: int = 3  # attention heads, in [1, 1024]; must divide dim
    mlp_ratio: float = 2.0  # MLP hidden width as a multiple of dim, in (0, 8]
    example_tied_dropout: etd.DropoutOptions | dict | None = None  # p_gen, p_mem, seed, after: [blocks_0, ...]; None = off

    def __post_init__(self):
        # At the largest: 504M parameters (ViT-Large has 304M).
        for name, hi in (("patch", 32), ("dim", 1024), ("depth", 24), ("heads", 1024)):
            check_range(f"vit: {name}", getattr(self, name), 1, hi, integer=True)
        if self.dim % self.heads:
            raise ValueError(f"vit: heads ({self.heads}) must divide dim ({self.dim})")
        check_range("vit: mlp_ratio", self.mlp_ratio, 0, 8, open_lo=True)
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d)) v per head, then `proj`."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        scores = q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5  # (B, heads, N, N)
        out = scores.softmax(dim=-1) @ v  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))  # (B, N, dim)


class FeedForward(nn.Module):
    """fc1 -> GELU -> (example-tied dropout, if the model has it here) -> fc2."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, dropout: nn.Module | None = None, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        h = nn.functional.gelu(self.fc1(x))  # (B, N, hidden)
        if dropout is not None:  # over the hidden neurons (channels to dim 1 and back): one mask for all tokens
            h = dropout(h.transpose(1, 2), example_ids).transpose(1, 2)
        return self.fc2(h)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, dropout: nn.Module | None = None, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x), dropout, example_ids)


class ViT(nn.Module):
    arch = "vit"

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int,
                 config: ViTConfig = ViTConfig()):
        super().__init__()
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        self.options = options_of(config)

        c, h, w = self.input_shape
        if h % config.patch or w % config.patch:
            raise ValueError(f"vit: patch {config.patch} does not divide the input size {h}x{w}; "
                             f"choose a patch that divides both")
        num_patches = (h // config.patch) * (w // config.patch)
        self.patch_embed = nn.Conv2d(c, config.dim, kernel_size=config.patch,
                                     stride=config.patch)
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, config.dim),
                                                            std=0.02))
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(
            torch.empty(1, 1 + num_patches, config.dim), std=0.02))
        mlp_hidden = max(1, round(config.mlp_ratio * config.dim))
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, mlp_hidden)
                                    for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, num_classes)

        blocks = tuple(f"blocks.{i}" for i in range(config.depth))
        self.layer_groups = {"embed": ("patch_embed", "cls_token", "pos_embed"),
                             **{b: (b,) for b in blocks},
                             "head": ("norm", "head")}
        self.unit_layers = ("patch_embed", *(f"{b}.{layer}" for b in blocks
                                             for layer in ("attn.proj", "mlp.fc1")))
        self.places = tuple(b.replace(".", "_") for b in blocks)  # where example-tied dropout may be
        dropout = etd.parse_options(self.arch, config.example_tied_dropout, self.places)
        self.dropout = etd.make_layers(dropout, self.places, dict.fromkeys(self.places, mlp_hidden))
        self.takes_example_ids = dropout is not None
        self.options["example_tied_dropout"] = dropout and dropout.to_dict()

    def forward(self, x: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, dim)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 1 + N, dim)
        for place, block in zip(self.places, self.blocks):
            x = block(x, self.dropout[place] if place in self.dropout else None, example_ids)
        return self.head(self.norm(x[:, 0]))  # (B, K)
