"""Invariants of the scoped interventions on the smoke run's model."""

from __future__ import annotations

import json

import pytest
import torch

from memloc.evaluate import predict
from memloc.interventions import Rewind, ZeroUnits, from_json, intervene, parse_unit
from memloc.runs import open_run


@pytest.fixture(scope="module")
def opened(smoke_run):
    return open_run(smoke_run)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rewinding_every_group_to_epoch_k_reproduces_checkpoint_k(opened):
    model, x = opened.model(), opened.data.train_x
    ckpt = opened.checkpoint
    for k in (0, 1):
        items = [Rewind(group, k) for group in model.layer_groups]
        with intervene(model, items, ckpt):
            rewound = predict(model, x)
        assert torch.equal(rewound, predict(opened.model(k), x))


def test_rewinding_to_the_last_epoch_is_the_identity(opened):
    model, x = opened.model(), opened.data.train_x
    last = opened.run.checkpoint_epochs()[-1]
    before = predict(model, x)
    with intervene(model, [Rewind(g, last) for g in model.layer_groups], opened.run.read_checkpoint):
        assert torch.equal(predict(model, x), before)


def test_model_is_bitwise_restored_and_hook_free_even_when_the_body_raises(opened):
    model = opened.model()
    before = _state(model)
    layer = model.unit_layers[0]
    items = [Rewind(next(iter(model.layer_groups)), 0), ZeroUnits((f"{layer}[0]", f"{layer}[3]"))]
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(model, items, opened.run.read_checkpoint):
            assert not _same(_state(model), before)
            raise RuntimeError("boom")
    assert _same(_state(model), before)
    assert all(not m._forward_hooks for m in model.modules())


def test_zeroing_no_units_is_the_identity(opened):
    model, x = opened.model(), opened.data.train_x
    with intervene(model, [ZeroUnits(())]):
        assert torch.equal(predict(model, x), predict(opened.model(), x))


def test_zeroing_a_unit_by_mask_equals_zeroing_its_weights_and_bias(opened):
    model, x = opened.model(), opened.data.train_x
    layer = model.unit_layers[0]
    with intervene(model, [ZeroUnits((f"{layer}[5]",))]):
        masked = predict(model, x)
    edited = opened.model()
    module = dict(edited.named_modules())[layer]
    with torch.no_grad():
        module.weight[5] = 0
        module.bias[5] = 0
    assert torch.allclose(masked, predict(edited, x), atol=1e-6)


def test_interventions_are_hashable_json_values():
    items = [Rewind("fc1", 3, include_buffers=False), ZeroUnits(["fc2[1]", "fc1[0]"])]
    assert len({*items, *items}) == 2
    assert [from_json(json.loads(json.dumps(i.to_json()))) for i in items] == items


def test_bad_addresses_name_what_is_valid(opened):
    model = opened.model()
    with pytest.raises(ValueError, match="not one of fc1"):
        with intervene(model, [Rewind("nope", 0)], opened.run.read_checkpoint):
            pass
    with pytest.raises(ValueError, match="unit layers: fc1"):
        with intervene(model, [ZeroUnits(("out[0]",))]):
            pass
    with pytest.raises(ValueError, match="has 64 units"):
        with intervene(model, [ZeroUnits(("fc1[64]",))]):
            pass
    with pytest.raises(ValueError, match="expected layer_path"):
        parse_unit("fc1-3")
