"""Layer retraining: the fast path equals the naive reference; freezing is real (frozen parameters
and buffers bitwise unchanged, only the group optimized) and the model is the final model again
afterwards; noisy examples are never trained on; the stopping rule; the `retrain` stage's table
on the smoke run."""

from __future__ import annotations

import pytest
import torch

import models
from memloc import overrides
from memloc.data import Labels
from memloc.interventions import group_state_names
from memloc.retraining import COLUMNS, RetrainData, RetrainSettings, retrain_group, retrain_reference, retrained
from memloc.runs import open_run

SHORT = RetrainSettings(max_epochs=3, peak_epoch=1.0)


@pytest.fixture(scope="module")
def opened(smoke_run):
    return open_run(smoke_run)


def _smoke_data(opened) -> RetrainData:
    return RetrainData(opened.data.train_x, opened.labels, opened.data.test_x, opened.data.test_labels)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0], ids=["cached", "whole-model"])
def test_fast_path_equals_the_reference_on_the_smoke_run(opened, cache_bytes):
    model, init, data = opened.model(), opened.checkpoint(0), _smoke_data(opened)
    for group in model.layer_groups:
        fast = retrain_group(model, init, group, data, SHORT, 64, 0, 4096, cache_bytes)
        assert fast == retrain_reference(model, init, group, data, SHORT, 64, 0)[0]
        assert [row["epoch"] for row in fast] == [0, 1, 2, 3]


def _bn_model_and_data():
    """A tiny ResNet-9 (BatchNorm in every group), its 'final' and 'initial' states, random data."""
    torch.manual_seed(2)
    init = models.build("resnet9", (1, 8, 8), 4, width=0.125).state_dict()
    model = models.build("resnet9", (1, 8, 8), 4, width=0.125)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "running_var")):
                tensor.copy_(torch.rand_like(tensor) + (0.5 if name.endswith("var") else -0.5))
    x = torch.randn(48, 1, 8, 8)
    true = torch.randint(0, 4, (48,))
    is_noisy = torch.arange(48) % 6 == 0
    labels = Labels(true, torch.where(is_noisy, (true + 1) % 4, true), is_noisy)
    return model, init, RetrainData(x, labels, torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,)))


@pytest.mark.parametrize("group", ["prep", "res1.1", "fc"])
def test_fast_path_equals_the_reference_with_batchnorm(group):
    model, init, data = _bn_model_and_data()
    fast = retrain_group(model, init, group, data, SHORT, 16, 0, 16)
    slow, _ = retrain_reference(model, init, group, data, SHORT, 16, 0, 16)
    for a, b in zip(fast, slow, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("group", ["layer1", "res2.0"])
def test_frozen_parameters_and_buffers_stay_bitwise_and_only_the_group_is_optimized(group):
    model, init, data = _bn_model_and_data()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    trained = set(group_state_names(model, group, include_buffers=True))
    with retrained(model, init, group, data, SHORT, 16, 0):
        after = {k: v.clone() for k, v in model.state_dict().items()}
    for name, value in final.items():
        if name not in trained:
            assert torch.equal(after[name], value), name
    # The group did train: its parameters left the initialization, its BatchNorm statistics moved.
    assert not torch.equal(after[f"{group}.conv.weight"], init[f"{group}.conv.weight"])
    assert not torch.equal(after[f"{group}.bn.running_mean"], init[f"{group}.bn.running_mean"])
    # ... and once the scope ends the model is the final model again, bitwise, in its modes.
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())
    assert all(p.requires_grad for p in model.parameters()) and [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_noisy_examples_never_reach_the_optimizer(opened, path):
    """Data spy: noisy inputs are poisoned with NaN. A single one in a training batch would make
    the loss, the gradient and so the trained parameters NaN."""
    model, init = opened.model(), opened.checkpoint(0)
    x = opened.data.train_x.clone()
    x[opened.labels.is_noisy] = float("nan")
    data = RetrainData(x, opened.labels, opened.data.test_x, opened.data.test_labels)
    if path == "fast":
        with retrained(model, init, "fc1", data, SHORT, 64, 0):
            weight = model.fc1.weight.clone()
    else:
        weight = retrain_reference(model, init, "fc1", data, SHORT, 64, 0)[1].fc1.weight
    assert torch.isfinite(weight).all() and not torch.equal(weight, init["fc1.weight"])
    # The poison is real: the same spy with the noisy examples in the training set does go NaN.
    poisoned = Labels(opened.labels.true_labels, opened.labels.train_labels, torch.zeros_like(opened.labels.is_noisy))
    with retrained(model, init, "fc1", RetrainData(x, poisoned, data.test_x, data.test_labels), SHORT, 64, 0):
        assert torch.isnan(model.fc1.weight).all()


def test_stops_after_patience_epochs_at_full_clean_accuracy():
    """Two separable blobs: retraining the classifier reaches 100% clean accuracy fast."""
    torch.manual_seed(3)
    true = torch.arange(40) % 2
    x = (true.float() * 4 - 2).view(-1, 1, 1, 1) + 0.1 * torch.randn(40, 1, 2, 2)
    is_noisy = torch.zeros(40, dtype=torch.bool)
    is_noisy[:4] = True
    labels = Labels(true, torch.where(is_noisy, 1 - true, true), is_noisy)
    init = models.build("mlp", (1, 2, 2), 2, hidden=[8]).state_dict()
    model = models.build("mlp", (1, 2, 2), 2, hidden=[8])
    cfg = RetrainSettings(lr=0.5, peak_epoch=1.0, max_epochs=20, patience=2)
    rows = retrain_group(model, init, "out", RetrainData(x, labels, x[:8], true[:8]), cfg, 8, 0)
    full = [row["epoch"] for row in rows[1:] if row["clean_acc"] == 1.0]
    assert len(full) == 2 and rows[-1]["epoch"] == full[-1] < 20


def test_smoke_run_retraining_table(smoke_run):
    cfg = overrides.from_dict(smoke_run.manifest()["config"])
    table = smoke_run.read_table("retraining")
    assert list(table.columns) == COLUMNS == ["group", "group_index", "epoch", "clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"]
    control = table[table["group"] == "none"]
    assert control[["group_index", "epoch"]].values.tolist() == [[-1, 0]]
    last = smoke_run.read_table("training").iloc[-1]
    for key in ("clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"):
        assert control[key].item() == pytest.approx(last[key])
    groups = table[table["group"] != "none"]
    assert groups["group"].unique().tolist() == ["fc1", "fc2", "out"]
    assert groups["group_index"].unique().tolist() == [0, 1, 2]
    for _, rows in groups.groupby("group"):
        assert rows["epoch"].tolist() == list(range(len(rows))) and len(rows) <= cfg.retrain.max_epochs + 1
    assert not smoke_run.has_state("retrain")
