"""Example-tied dropout layer (PAPER.md section 5): masks, modes, memory, and the zoo's placement."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import models
from models import example_tied_dropout as etd

P_GEN, P_MEM = 0.2, 0.1


def layer(channels=40, seed=0, index=0, p_gen=P_GEN, p_mem=P_MEM):
    return etd.ExampleTiedDropout(channels, p_gen, p_mem, seed, index)


def test_masks_match_the_literal_per_example_definition():
    """The vectorized masks equal `uniform_reference(i, c) < p_mem` computed one example and one
    unit at a time with Python integers, also for ids beyond int32 (wrapping arithmetic)."""
    lay = layer(channels=37)  # not a multiple of the 4 units per hash
    ids = torch.tensor([0, 1, 2, 73_256, 2**31 + 5, 10**12, 3])
    expected = torch.tensor([[c < lay.n_gen or etd.uniform_reference(i, c, 37, lay.key) < P_MEM
                              for c in range(37)] for i in ids.tolist()])
    assert torch.equal(lay.keep(ids), expected)


def test_masks_do_not_depend_on_batch_order_composition_or_instance():
    ids = torch.arange(5000)
    full = layer().keep(ids)
    perm = torch.randperm(5000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer().keep(ids[perm]), full[perm])  # a fresh layer, another order
    for batch in perm.split(97):  # other batch compositions and sizes
        assert torch.equal(layer().keep(batch), full[batch])
    assert torch.equal(layer().keep(ids[7:8]), full[7:8])  # a batch of one
    assert not torch.equal(layer(index=1).keep(ids), full)  # each layer draws its own masks
    assert not torch.equal(layer(seed=1).keep(ids), full)  # and each seed


def test_kept_share_is_p_mem_and_units_are_independent():
    lay = layer(channels=256)
    keep = lay.keep(torch.arange(20_000))  # (N, C)
    assert keep[:, : lay.n_gen].all(), "generalization units are always on"
    mem = keep[:, lay.n_gen :].float()  # (N, C_mem)
    n = mem.numel()
    assert abs(mem.mean().item() - P_MEM) < 4 * (P_MEM * (1 - P_MEM) / n) ** 0.5
    per_unit = mem.mean(0)  # every memorization unit is kept by about p_mem of the examples
    assert (per_unit - P_MEM).abs().max() < 5 * (P_MEM * (1 - P_MEM) / len(mem)) ** 0.5
    # Neighbouring examples and neighbouring units (which share a hash) are uncorrelated.
    centred = mem - P_MEM
    for a, b in [(centred[:-1], centred[1:]), (centred[:, :-1], centred[:, 1:])]:
        corr = (a * b).mean() / (P_MEM * (1 - P_MEM))
        assert abs(corr.item()) < 0.02
    # Two layers' masks of the same example are independent too.
    other = layer(channels=256, index=1).keep(torch.arange(20_000))[:, lay.n_gen :].float()
    assert abs(((other - P_MEM) * centred).mean().item() / (P_MEM * (1 - P_MEM))) < 0.02


def test_test_and_drop_modes_on_a_hand_made_activation():
    lay = layer(channels=10).eval()  # 2 generalization units, 8 memorization units
    assert lay.n_gen == 2
    x = torch.arange(1.0, 21.0).view(2, 10)  # (B, C)
    etd.set_mode(lay, "test")
    expected_test = x.clone()
    expected_test[:, 2:] *= P_MEM  # memorization units scaled by p_mem
    torch.testing.assert_close(lay(x), expected_test)
    etd.set_mode(lay, "drop")
    expected_drop = torch.zeros_like(x)
    expected_drop[:, :2] = x[:, :2] * (P_GEN + P_MEM) / P_GEN  # generalization units scaled by 1.5
    torch.testing.assert_close(lay(x), expected_drop)
    # Convolutional maps (B, C, H, W): the same per channel at every position.
    maps = torch.randn(3, 10, 4, 5)
    torch.testing.assert_close(lay(maps), maps * expected_drop[0].div(x[0]).view(1, 10, 1, 1))


def test_train_mode_multiplies_by_the_examples_own_mask():
    lay = layer(channels=12)
    x = torch.randn(4, 12, 3, 3)
    ids = torch.tensor([5, 9, 5, 100])
    out = lay.train()(x, ids)
    keep = lay.keep(ids).float()
    torch.testing.assert_close(out, x * keep[:, :, None, None])
    assert torch.equal(keep[0], keep[2])  # the same id in one batch: the same mask
    etd.set_mode(lay, "train")
    torch.testing.assert_close(lay.eval()(x, ids), out)  # eval mode "train": the model as trained


def test_mode_is_explicit():
    lay = layer().eval()
    with pytest.raises(RuntimeError, match="needs a chosen mode"):
        lay(torch.randn(2, 40))
    with pytest.raises(ValueError, match="needs example_ids"):
        lay.train()(torch.randn(2, 40))
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        lay.train()(torch.randn(2, 40), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="one of train, test, drop"):
        etd.set_mode(lay, "eval")
    with pytest.raises(ValueError, match="no example-tied dropout"):
        etd.set_mode(torch.nn.Linear(2, 2), "test")
    etd.set_mode(lay, "drop")
    with etd.dropout_mode(lay, "test"):
        assert lay.mode == "test"
    assert lay.mode == "drop"


def test_memory_does_not_grow_with_the_number_of_examples():
    """Outside the training loop's mask table the layer has no parameters, buffers or
    per-example state; what it caches is a function of the channel count only, whatever ids
    it has seen."""
    lay = layer(channels=256)
    assert not list(lay.parameters()) and not list(lay.buffers()) and not lay.state_dict()

    def held_bytes():
        return sum(t.numel() * t.element_size() for pair in lay._constants.values() for t in pair)

    lay.keep(torch.arange(100))
    small = held_bytes()
    for start in (0, 73_257, 10**9):  # SVHN's size and far beyond
        lay.keep(torch.arange(start, start + 50_000))
    assert held_bytes() == small == 64 * 8 + 256 * 4  # 64 hash offsets (int64), 256 thresholds (float32)


def test_the_mask_table_gives_the_hash_masks_and_holds_n_times_c_bits():
    """Inside `mask_table` the masks come from one table of ceil(C/8) bytes per example and
    layer (the issue allows at most N x C bits; rows are rounded up to whole bytes), equal to
    the hash's masks in any batch order; it is not state, and outside the block the hash is used."""
    model = torch.nn.Sequential(layer(channels=40), layer(channels=13, index=1), layer(channels=24, index=2)).train()
    n = 1000
    ids = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    expected = [lay.mask(ids) for lay in model]
    with etd.mask_table(model, n, torch.device("cpu")):
        assert all(lay.reads_table for lay in model)
        table = model[0]._table
        assert table.bits.dtype == torch.uint8 and table.bits.shape == (n, 5 + 2 + 3)
        for lay, mask in zip(model, expected):
            assert lay._table is table
            assert torch.equal(lay.mask(ids), mask)
            assert torch.equal(lay.mask(ids[:1]), mask[:1])
        batch = ids[:10].clone()
        first = model[1].mask(batch)
        batch[0] = ids[10]  # the same tensor changed in place: its masks are not reused
        assert torch.equal(model[1].mask(batch)[0], expected[1][10]) and not torch.equal(first, model[1].mask(batch))
        with pytest.raises(IndexError):  # an id that is no row of the table is an error, never a wrong mask
            model[0].mask(torch.tensor([n]))
    assert not any(lay.reads_table for lay in model) and not model.state_dict()
    assert torch.equal(model[0].mask(ids), expected[0])
    with etd.mask_table(model, n, torch.device("cpu")):  # kept for the next epoch, not rebuilt
        assert all(lay._table is table for lay in model)
    with etd.mask_table(model, n + 1, torch.device("cpu")):  # another training set: a new table
        assert model[0]._table is not table and torch.equal(model[2].mask(ids), expected[2])


def test_training_with_bit_tables_equals_training_with_the_hash():
    """An epoch of `train_epoch` (which reads the mask table) gives bitwise the weights of the
    same epoch written out with the hash's masks."""
    from memloc.data import Dataset
    from memloc.schedule import one_cycle_lr
    from memloc.train import TrainSettings, epoch_generator, make_optimizer, train_epoch

    torch.manual_seed(0)
    model = models.build("mlp", (1, 4, 4), 3, hidden=[16, 16], example_tied_dropout={"p_mem": 0.3})
    gen = torch.Generator().manual_seed(0)
    data = Dataset("toy", torch.randn(50, 1, 4, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen),
                   torch.randn(5, 1, 4, 4, generator=gen), torch.randint(0, 3, (5,), generator=gen), ("a", "b", "c"))
    cfg = TrainSettings(epochs=2, batch_size=16, peak_epoch=1.0)
    by_hash = copy.deepcopy(model)
    train_epoch(model, make_optimizer(model.parameters(), cfg), data, data.true_labels, cfg, 1)
    assert all(lay._table is not None for lay in etd.dropout_layers(model))

    optimizer = make_optimizer(by_hash.parameters(), cfg)
    order = torch.randperm(50, generator=epoch_generator(cfg.seed, 1))
    for i, ids in enumerate(order.split(16)):
        for group in optimizer.param_groups:
            group["lr"] = one_cycle_lr(i, 4, cfg.epochs, cfg.peak_epoch, cfg.lr)
        loss = F.cross_entropy(by_hash(data.train_x[ids], example_ids=ids), data.true_labels[ids], reduction="none")
        optimizer.zero_grad(set_to_none=True)
        loss.mean().backward()
        optimizer.step()
    assert all(lay._table is None for lay in etd.dropout_layers(by_hash))
    for (name, a), b in zip(model.state_dict().items(), by_hash.state_dict().values()):
        assert torch.equal(a, b), name


def naive_dense_table(lay, n_examples):
    """The authors' layout, literally: a per-example mask table built one example at a time."""
    table = torch.zeros(n_examples, lay.channels)
    for i in range(n_examples):
        for c in range(lay.channels):
            table[i, c] = float(c < lay.n_gen or etd.uniform_reference(i, c, lay.channels, lay.key) < lay.p_mem)
    return table


@pytest.mark.parametrize("arch,shape,options,places", [
    ("mlp", (1, 8, 8), {"hidden": [16, 12]}, ["fc1", "fc2"]),
    ("cnn", (1, 8, 8), {"width": 0.25}, ["conv1", "conv2", "fc1"]),
    ("resnet9", (1, 8, 8), {"width": 0.0625}, ["prep", "layer1", "res1", "layer2", "res2", "layer3"]),
    ("vit", (1, 8, 8), {"dim": 8, "depth": 2, "heads": 2}, ["blocks_0", "blocks_1"]),
    ("resnet50", (1, 8, 8), {"width": 0.0625}, [f"layer{s}_{i}" for s, n in enumerate((3, 4, 6, 3), start=1) for i in range(n)]),
])
def test_zoo_places_the_layer_and_trains_through_it(arch, shape, options, places):
    torch.manual_seed(0)
    plain = models.build(arch, shape, 10, **options)
    torch.manual_seed(0)
    model = models.build(arch, shape, 10, **options, example_tied_dropout={"p_gen": P_GEN, "p_mem": P_MEM})
    assert list(model.dropout) == places and model.takes_example_ids and not plain.takes_example_ids
    # No new state: the same checkpoints layout and the same initial weights as the plain model.
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert json.loads(json.dumps(model.options)) == model.options
    assert model.options["example_tied_dropout"] == {"p_gen": P_GEN, "p_mem": P_MEM, "seed": 0, "after": places}
    rebuilt = models.build(arch, shape, 10, **model.options)
    assert list(rebuilt.dropout) == places

    x, ids = torch.randn(6, *shape), torch.arange(100, 106)
    model.eval()
    with pytest.raises(RuntimeError, match="needs a chosen mode"):
        model(x)
    with etd.dropout_mode(model, "test"):
        assert model(x).shape == (6, 10)
    model.train()
    with pytest.raises(ValueError, match="needs example_ids"):
        model(x)
    loss = F.cross_entropy(model(x, example_ids=ids), torch.arange(6))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_fast_model_equals_the_dense_table_reference():
    """A training forward pass of the zoo MLP with example-tied dropout equals the same MLP
    masked by a dense per-example table built one example at a time."""
    torch.manual_seed(0)
    model = models.build("mlp", (1, 8, 8), 10, hidden=[16, 12], example_tied_dropout={"p_gen": 0.25, "p_mem": 0.3})
    tables = {name: naive_dense_table(lay, 40) for name, lay in model.dropout.items()}
    x, ids = torch.randn(8, 1, 8, 8), torch.tensor([3, 39, 0, 17, 3, 22, 8, 11])
    h = x.flatten(1)
    for name in model.hidden_names:
        h = torch.relu(getattr(model, name)(h)) * tables[name][ids]
    torch.testing.assert_close(model.train()(x, example_ids=ids), model.out(h))


def test_choosing_fewer_places_keeps_the_other_layers_masks():
    both = models.build("mlp", (1, 8, 8), 10, hidden=[16, 16], example_tied_dropout={})
    second = models.build("mlp", (1, 8, 8), 10, hidden=[16, 16], example_tied_dropout={"after": ["fc2"]})
    ids = torch.arange(50)
    assert list(second.dropout) == ["fc2"]
    assert torch.equal(both.dropout["fc2"].keep(ids), second.dropout["fc2"].keep(ids))


@pytest.mark.parametrize("option,fragment", [
    ({"p_gen": 0.0}, "example_tied_dropout.p_gen: a fraction in \\(0, 1\\), got 0.0"),
    ({"p_mem": 1.5}, "p_mem: a fraction in \\(0, 1\\)"),
    ({"seed": "a"}, "seed: an integer"),
    ({"after": ["fc9"]}, "after: distinct names from \\['fc1', 'fc2'\\]"),
    ({"after": ["fc1", "fc1"]}, "after: distinct names"),
    ({"p_keep": 0.1}, "unknown example_tied_dropout key"),
    ([0.2, 0.1], "must be a table"),
])
def test_bad_dropout_options_raise(option, fragment):
    with pytest.raises(ValueError, match=f"mlp: .*{fragment}"):
        models.build("mlp", (1, 8, 8), 10, hidden=[16, 16], example_tied_dropout=option)


def test_vit_masks_each_mlps_hidden_neurons_by_a_dense_table_reference():
    """ViT: each block's MLP hidden neurons (after the GELU) are masked per example, the same
    mask on every token; equal to the blocks run by hand with dense per-example tables."""
    torch.manual_seed(0)
    model = models.build("vit", (1, 8, 8), 10, dim=8, depth=2, heads=2, patch=4, example_tied_dropout={"p_mem": 0.4}).train()
    x, ids = torch.randn(5, 1, 8, 8), torch.tensor([3, 19, 0, 3, 7])
    h = model.patch_embed(x).flatten(2).transpose(1, 2)
    h = torch.cat([model.cls_token.expand(5, -1, -1), h], dim=1) + model.pos_embed
    for i, block in enumerate(model.blocks):
        h = h + block.attn(block.norm1(h))
        hidden = F.gelu(block.mlp.fc1(block.norm2(h))) * naive_dense_table(model.dropout[f"blocks_{i}"], 20)[ids][:, None, :]
        h = h + block.mlp.fc2(hidden)
    torch.testing.assert_close(model(x, example_ids=ids), model.head(model.norm(h[:, 0])))


def test_resnet50_masks_each_bottleneck_output_by_a_dense_table_reference():
    torch.manual_seed(0)
    model = models.build("resnet50", (1, 8, 8), 10, width=0.0625, example_tied_dropout={"after": ["layer2_0", "layer4_2"]})
    model.eval()  # BatchNorm with fixed statistics, so the reference sees the same numbers; dropout in its train mode
    for layer in model.dropout.values():
        layer.train()
    x, ids = torch.randn(4, 1, 8, 8), torch.tensor([1, 12, 5, 1])
    h = model.relu(model.bn1(model.conv1(x)))
    for block in [f"layer{stage}.{i}" for stage, count in enumerate((3, 4, 6, 3), start=1) for i in range(count)]:
        h = model.get_submodule(block)(h)
        if block.replace(".", "_") in model.dropout:
            h = h * naive_dense_table(model.dropout[block.replace(".", "_")], 20)[ids][:, :, None, None]
    torch.testing.assert_close(model(x, example_ids=ids), model.fc(torch.flatten(model.avgpool(h), 1)))
