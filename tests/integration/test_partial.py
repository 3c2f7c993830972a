"""Prefix reuse (`memloc.partial`): the cut forward pass is the model's forward pass, for every
zoo model and every layer group, also after the group was edited."""

from __future__ import annotations

import pytest
import torch

import models
from memloc.partial import group_paths, split, trace

ZOO = [
    ("mlp", (1, 8, 8), {"hidden": [16, 16]}),
    ("cnn", (1, 8, 8), {"width": 0.25}),
    ("resnet9", (1, 28, 28), {"width": 0.125}),
    ("vit", (1, 8, 8), {"dim": 16, "depth": 2, "heads": 2, "patch": 4}),
]  # resnet50 traces and splits the same way (torchvision's bottlenecks as group calls); too slow here


def _group_state(model, group):
    prefixes = model.layer_groups[group]
    return {n: t for n, t in model.state_dict().items() if any(n == p or n.startswith(p + ".") for p in prefixes)}


@pytest.mark.parametrize("name,shape,options", ZOO, ids=[z[0] for z in ZOO])
def test_suffix_of_prefix_is_the_model_and_sees_edits_of_the_group(name, shape, options):
    torch.manual_seed(0)
    model = models.build(name, shape, 10, **options).eval()
    x = torch.randn(3, *shape)
    graph = trace(model)
    with torch.no_grad():
        full = model(x)
        for group in model.layer_groups:
            part = split(model, group_paths(model, [group]), graph)
            frontier = part.prefix(x)
            assert torch.equal(part.suffix(*frontier), full), group
            # Edit the group in place (parameters and buffers): the old frontier stays valid.
            saved = {n: t.clone() for n, t in _group_state(model, group).items()}
            for tensor in _group_state(model, group).values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor) * 0.1)
            assert torch.equal(part.suffix(*frontier), model(x)), group
            for n, t in _group_state(model, group).items():
                t.copy_(saved[n])


def test_a_residual_block_cut_carries_its_skip_connection():
    model = models.build("resnet9", (1, 28, 28), 10, width=0.125).eval()
    part = split(model, group_paths(model, ["res1.1"]))
    frontier = part.prefix(torch.randn(2, 1, 28, 28))
    assert len(frontier) == 2  # the block's input (the skip) and res1.0's output
    first = split(model, group_paths(model, ["prep"]))
    assert len(first.prefix(torch.randn(2, 1, 28, 28))) == 1  # the input itself


def test_unknown_group_names_the_valid_ones():
    model = models.build("mlp", (1, 8, 8), 10, hidden=[4])
    with pytest.raises(ValueError, match="not one of fc1, out"):
        group_paths(model, ["fc9"])
