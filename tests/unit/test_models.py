"""The model zoo's contract: shapes, layer-group partition, unit layers, rebuild, seeding."""

from __future__ import annotations

import functools
import json
from collections import Counter
from itertools import chain

import pytest
import torch
from torch import nn

import models

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 32, 32), (3, 28, 28)]
SMALL = {  # small widths keep the whole file fast on 2 cores
    "mlp": {"hidden": (32, 32)},
    "cnn": {"width": 0.25},
    "resnet9": {"width": 0.125},
    "resnet50": {},
    "vit": {"dim": 32, "depth": 2, "heads": 2},
}
CASES = [(name, shape) for name in models.NAMES for shape in SHAPES
         if name != "resnet50" or shape in [(3, 32, 32), (1, 8, 8)]]
K = 7  # number of classes; distinct from every channel count


def build_small(name, shape, seed=0):
    torch.manual_seed(seed)
    return models.build(name, shape, K, **SMALL[name])


@functools.cache
def built(name, shape):
    """One shared model per case, for tests that only read it."""
    return build_small(name, shape)


def owners(model, name):
    """Groups whose prefixes cover `name`, written independently of models.group_of."""
    return [group for group, prefixes in model.layer_groups.items()
            for p in prefixes if name == p or name.startswith(p + ".")]


def test_names_cover_the_zoo():
    assert set(models.NAMES) == set(SMALL)


@pytest.mark.parametrize("name,shape", CASES)
def test_logits_shape_in_train_and_eval_mode(name, shape):
    model = built(name, shape)
    x = torch.randn(3, *shape)
    for train in (True, False):
        model.train(train)
        assert model(x).shape == (3, K)


@pytest.mark.parametrize("name,shape", CASES)
def test_groups_partition_parameters_and_buffers(name, shape):
    model = built(name, shape)
    state = list(chain(model.named_parameters(), model.named_buffers()))
    memberships = Counter()
    per_group = Counter()
    for tensor_name, _ in state:
        groups = owners(model, tensor_name)
        assert len(groups) == 1, f"{tensor_name} is in groups {groups}"
        memberships[tensor_name] += 1
        per_group[groups[0]] += 1
    assert len(memberships) == len(state)
    assert set(per_group) == set(model.layer_groups), "every group holds some tensor"
    if name in ("resnet9", "resnet50"):
        assert any(n.endswith("running_mean") for n, _ in model.named_buffers())

    members = models.group_members(model)
    assert list(members) == list(model.layer_groups)
    assert sorted(chain.from_iterable(members.values())) == sorted(n for n, _ in state)
    for group, names in members.items():
        assert all(models.group_of(model, n) == group for n in names)


@pytest.mark.parametrize("name,shape", CASES)
def test_groups_are_ordered_input_to_output(name, shape):
    """The groups of the modules, in the order the forward pass calls them, never go back."""
    model = built(name, shape)
    order = list(model.layer_groups)
    called = []
    hooks = [module.register_forward_hook(
                 lambda m, i, o, n=module_name: called.append(n))
             for module_name, module in model.named_modules()
             if module_name and any(True for _ in module.parameters(recurse=False))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(2, *shape))
    finally:
        for hook in hooks:
            hook.remove()
    indices = [order.index(owners(model, n)[0]) for n in called]
    assert indices == sorted(indices)
    assert set(indices) == set(range(len(order))), "every group computes something"


@pytest.mark.parametrize("name,shape", CASES)
def test_unit_layers(name, shape):
    model = built(name, shape)
    modules = dict(model.named_modules())
    classifier_group = list(model.layer_groups)[-1]
    classifiers = [n for n in modules if isinstance(modules[n], nn.Linear)
                   and owners(model, n + ".weight") == [classifier_group]]
    assert len(classifiers) == 1 and modules[classifiers[0]].out_features == K

    units = model.unit_layers
    assert len(set(units)) == len(units)
    assert all(isinstance(modules[u], (nn.Conv2d, nn.Linear)) for u in units)
    assert classifiers[0] not in units
    if name == "vit":
        expected = {"patch_embed"} | {f"blocks.{i}.{layer}" for i in range(2)
                                      for layer in ("attn.proj", "mlp.fc1")}
    else:  # every conv and every hidden linear layer
        expected = {n for n, m in modules.items()
                    if isinstance(m, (nn.Conv2d, nn.Linear))} - {classifiers[0]}
    assert set(units) == expected


@pytest.mark.parametrize("name,shape", CASES)
def test_rebuild_from_arch_and_json_options(name, shape):
    model = built(name, shape)
    options = json.loads(json.dumps(model.options))
    assert options == model.options
    assert model.arch == name and model.input_shape == shape and model.num_classes == K
    rebuilt = models.build(model.arch, model.input_shape, model.num_classes, **options)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.layer_groups == model.layer_groups
    assert rebuilt.unit_layers == model.unit_layers


@pytest.mark.parametrize("name,shape", CASES)
def test_same_seed_same_weights(name, shape):
    first, second = build_small(name, shape), build_small(name, shape)
    other = build_small(name, shape, seed=1)
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resnet9_parameter_count_matches_the_paper():
    model = models.build("resnet9", (3, 32, 32), 10)

    def conv_bn(c_in, c_out, k):  # conv weights (no bias) + BatchNorm weight and bias
        return c_in * c_out * k * k + 2 * c_out

    expected = (conv_bn(3, 64, 3)            # prep
                + conv_bn(64, 128, 5)        # layer1
                + 2 * conv_bn(128, 128, 3)   # res1.0, res1.1
                + conv_bn(128, 256, 3)       # layer2
                + 2 * conv_bn(256, 256, 3)   # res2.0, res2.1
                + conv_bn(256, 128, 3)       # layer3
                + 128 * 10)                  # fc, no bias
    assert expected == 2_274_880
    assert sum(p.numel() for p in model.parameters()) == expected
    assert list(model.layer_groups) == ["prep", "layer1", "res1.0", "res1.1", "layer2",
                                        "res2.0", "res2.1", "layer3", "fc"]


def test_resnet9_logits_are_a_fifth_of_fc_on_max_pooled_features():
    torch.manual_seed(0)
    model = models.build("resnet9", (3, 32, 32), 10).eval()
    seen = {}
    hook = model.layer3.register_forward_hook(lambda m, i, o: seen.update(maps=o))
    try:
        with torch.no_grad():
            logits = model(torch.randn(2, 3, 32, 32))
    finally:
        hook.remove()
    assert seen["maps"].shape == (2, 128, 6, 6)  # 32 -> 16 (layer1) -> 8 (max-pool) -> 6
    features = seen["maps"].amax(dim=(2, 3))
    torch.testing.assert_close(logits, 0.2 * features @ model.fc.weight.T)


@pytest.mark.parametrize("shape,map_side,padding", [((3, 32, 32), 6, 0), ((1, 28, 28), 5, 0),
                                                    ((1, 8, 8), 2, 1)])
def test_resnet9_small_input_adaptation(shape, map_side, padding):
    """28x28 and 32x32 get the exact network; 8x8 needs pad 1 in layer3 to keep a map."""
    model = built("resnet9", shape)
    assert model.layer3.conv.padding == (padding, padding)
    assert isinstance(model.pool, nn.MaxPool2d)
    seen = {}
    hook = model.layer3.register_forward_hook(lambda m, i, o: seen.update(maps=o))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, *shape))
    finally:
        hook.remove()
    assert seen["maps"].shape[-2:] == (map_side, map_side)


def test_resnet50_groups_are_stem_blocks_fc():
    model = built("resnet50", (1, 8, 8))
    blocks = [f"layer{s}.{i}" for s, n in enumerate((3, 4, 6, 3), start=1) for i in range(n)]
    assert list(model.layer_groups) == ["stem", *blocks, "fc"]
    assert model.conv1.in_channels == 1 and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_resnet50_width_scales_every_channel_and_keeps_the_blocks():
    full, eighth = built("resnet50", (1, 8, 8)), models.build("resnet50", (1, 8, 8), 10, width=0.125)
    assert list(eighth.layer_groups) == list(full.layer_groups) and eighth.unit_layers == full.unit_layers
    for name, conv in full.named_modules():
        if isinstance(conv, nn.Conv2d):
            small = eighth.get_submodule(name)
            assert small.out_channels == max(1, round(conv.out_channels / 8)), name
            assert small.kernel_size == conv.kernel_size and small.stride == conv.stride, name
    assert eighth.fc.in_features == 256 and eighth(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    # torchvision's init of every conv (He normal, fan out): the spread of a 3x3 conv's weights
    conv = eighth.layer3[0].conv2
    expected = (2 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.15


def test_convolution_weights_are_channels_last():
    model = models.build("resnet9", (1, 28, 28), 10, width=0.25)
    assert model.prep.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 28, 28)  # an ordinary (contiguous) batch: the activations follow the weights
    assert model.prep(x).is_contiguous(memory_format=torch.channels_last)


def test_group_names_of_small_models():
    assert list(built("mlp", (1, 8, 8)).layer_groups) == ["fc1", "fc2", "out"]
    assert list(built("cnn", (1, 8, 8)).layer_groups) == ["conv1", "conv2", "fc1", "out"]
    assert list(built("vit", (1, 8, 8)).layer_groups) == ["embed", "blocks.0", "blocks.1",
                                                          "head"]


def test_unknown_model_name_lists_the_names():
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*mlp, cnn, resnet9"):
        models.build("resnet18", (3, 32, 32), 10)


@pytest.mark.parametrize("name,options,allowed", [
    ("mlp", {"width": 2.0}, "hidden"),
    ("resnet9", {"widht": 0.5}, "width"),
    ("vit", {"patch_size": 4}, "patch"),
    ("resnet50", {"depth": 18}, "width"),
])
def test_unknown_option_names_the_allowed_ones(name, options, allowed):
    with pytest.raises(TypeError, match=f"unknown option.*{name}.*allowed options:.*{allowed}"):
        models.build(name, (3, 32, 32), 10, **options)


@pytest.mark.parametrize("name,options", [
    ("mlp", {"hidden": (32, 0)}),
    ("cnn", {"width": 0}),
    ("resnet9", {"width": -1.0}),
    ("vit", {"dim": 30, "heads": 4}),
    ("vit", {"patch": 3}),  # does not divide 32
    ("resnet50", {"width": 0}),
    ("resnet50", {"width": 5}),
])
def test_bad_option_values_raise(name, options):
    with pytest.raises(ValueError, match=name):
        models.build(name, (3, 32, 32), 10, **options)


@pytest.mark.parametrize("shape,num_classes", [((32, 32), 10), ((3, 32, 32), 1)])
def test_bad_input_shape_or_class_count_raise(shape, num_classes):
    with pytest.raises(ValueError):
        models.build("mlp", shape, num_classes)


def test_broken_partition_raises():
    model = build_small("cnn", (1, 8, 8))
    model.layer_groups = {**model.layer_groups, "extra": ("conv1.weight",)}
    with pytest.raises(ValueError, match="conv1.weight"):
        models.group_members(model)
    model.layer_groups = {"conv1": ("conv1",), "rest": ("conv2", "fc1", "out"), "empty": ("x",)}
    with pytest.raises(ValueError, match="empty"):
        models.group_members(model)
    model.layer_groups = {"conv": ("conv1", "conv2")}
    with pytest.raises(ValueError, match="fc1.weight"):
        models.group_of(model, "fc1.weight")
