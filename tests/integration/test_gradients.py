"""Gradient accounting and per-example gradient norms (PAPER.md section 1): fast == naive,
tables of the smoke run, training unchanged by accounting, resume."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import models
import precompute.example_gradients
from memloc import overrides
from memloc.data import Labels, load, subsample
from memloc.example_gradients import example_gradient_norms
from memloc.gradients import GradientAccounting, finish_values, group_table, tensor_table
from memloc.gradients_reference import ReferenceAccounting, reference_example_norms, reference_group_values
from memloc.settings import ConfigError
from memloc.train import TrainSettings, make_optimizer, mean_backward, train_epoch
from precompute.stages import execute


def _quiet(_msg: str) -> None:
    pass


class TinyConvBN(nn.Module):
    """conv-BN-ReLU(inplace) twice (the second strided) and a linear head. The convs have no
    bias: before BatchNorm its gradient is zero up to rounding, which no relative tolerance fits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.layer_groups = {"block1": ("conv1", "bn1"), "block2": ("conv2", "bn2"), "fc": ("fc",)}

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 4, 8, 8)
        x = self.relu(self.bn2(self.conv2(x)))  # (B, 6, 4, 4)
        return self.fc(x.flatten(1))


class Twice(nn.Module):
    """A linear layer called twice per forward (shared weights)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.out = nn.Linear(64, 10)
        self.layer_groups = {"body": ("fc",), "out": ("out",)}

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x.flatten(1))))))


class Softplus2(nn.Module):
    """A layer with no ghost-norm rule (unknown type) and a linear layer called twice."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.act = nn.Softplus()
        self.out = nn.Linear(64, 10)
        self.layer_groups = {"body": ("fc",), "out": ("out",)}

    def forward(self, x):
        x = x.flatten(1)
        return self.out(self.act(self.fc(self.act(self.fc(x)))))


def _tiny(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "mlp":
        return models.build("mlp", (1, 8, 8), 10, hidden=[32, 16])
    if name == "conv_bn":
        return TinyConvBN()
    if name == "vit":
        return models.build("vit", (1, 8, 8), 10, dim=16, depth=2, heads=2, patch=4)
    if name == "cnn":
        return models.build("cnn", (1, 8, 8), 10, width=0.25)
    if name == "twice":
        return Twice()
    return Softplus2()


@pytest.fixture(scope="module")
def digits():
    from memloc.data import apply_label_noise

    ds = subsample(load("digits"), 192, 60, seed=0)
    train, noisy = apply_label_noise(ds.true_labels, 10, 0.1, seed=0)
    return ds, Labels(ds.true_labels, train, noisy)


def _train(model, ds, labels, backward, epochs=2):
    cfg = TrainSettings(epochs=epochs, batch_size=64, peak_epoch=1.0, lr=0.05)
    opt = make_optimizer(model.parameters(), cfg)
    for epoch in range(1, epochs + 1):
        train_epoch(model, opt, ds, labels.train_labels, cfg, epoch, backward=backward)
        yield epoch


@pytest.mark.parametrize("name, mode", [("mlp", "layers"), ("cnn", "layers"), ("conv_bn", "clean"), ("vit", "noisy"),
                                        ("twice", "clean")])
def test_fast_accounting_equals_the_naive_reference_over_a_short_training_run(digits, name, mode):
    ds, labels = digits
    fast_model = _tiny(name)
    ref_model = copy.deepcopy(fast_model)
    ref = ReferenceAccounting(ref_model, labels.is_noisy)
    with GradientAccounting(fast_model, labels.train_labels, labels.is_noisy) as fast:
        fast_rows = [fast.epoch_values() for _ in _train(fast_model, ds, labels, fast)]
        assert fast.strategy == mode  # every way of computing the second gradient is covered
    for epoch in _train(ref_model, ds, labels, ref):
        ref.end_epoch(epoch)
    numels = [p.numel() for p in fast.params]
    fast_table = tensor_table([1, 2], np.stack(fast_rows), fast.groups, fast.names, numels)
    ref_table = pd.concat(ref.epochs, ignore_index=True)
    assert fast_table[["epoch", "group", "tensor", "numel"]].equals(ref_table[["epoch", "group", "tensor", "numel"]])
    for col in ("clean_norm", "noisy_norm", "total_norm", "cosine"):
        np.testing.assert_allclose(fast_table[col], ref_table[col], rtol=1e-4, atol=1e-7, err_msg=col)
    assert (fast_table["noisy_norm"] > 0).all() and (fast_table["clean_norm"] > 0).all()
    # the reduction to groups is PAPER.md's: sums of normalized norms, mean of cosines
    groups = group_table(fast_table, list(fast_model.layer_groups))
    expected = reference_group_values(ref_table)
    for row in groups.itertuples():
        np.testing.assert_allclose([row.clean_norm, row.noisy_norm, row.total_norm, row.cosine],
                                   expected[(row.epoch, row.group)], rtol=1e-4, atol=1e-7)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in fast_model.modules())  # hooks removed


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "vit"])
def test_accounting_leaves_the_optimizer_step_bitwise_unchanged(digits, name):
    ds, labels = digits
    plain_model = _tiny(name)
    acc_model = copy.deepcopy(plain_model)
    list(_train(plain_model, ds, labels, mean_backward))
    with GradientAccounting(acc_model, labels.train_labels, labels.is_noisy) as acc:
        list(_train(acc_model, ds, labels, acc))
    a, b = plain_model.state_dict(), acc_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cosine_is_nan_without_noisy_gradient():
    raw = np.array([[3.0, 0.0, 3.0, 0.0], [2.0, 1.0, 2.5, -1.0]])
    out = finish_values(raw, [9, 4])
    np.testing.assert_allclose(out[:, :3], [[1.0, 0.0, 1.0], [1.0, 0.5, 1.25]])
    assert np.isnan(out[0, 3]) and out[1, 3] == pytest.approx(-0.5)


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "vit", "cnn", "fallback"])
def test_per_example_fast_equals_naive_loop(name):
    model = _tiny(name)
    torch.manual_seed(1)
    with torch.no_grad():  # move BatchNorm running statistics away from (0, 1)
        model.train()(torch.randn(32, 1, 8, 8) * 2 + 0.5)
    x, y = torch.randn(13, 1, 8, 8), torch.randint(0, 10, (13,))
    before = copy.deepcopy(model.state_dict())
    groups, fast = example_gradient_norms(model, x, y, chunk_size=5)
    ref_groups, ref = reference_example_norms(model, x, y)
    assert groups == ref_groups == list(model.layer_groups)
    np.testing.assert_allclose(fast.double().numpy(), ref.numpy(), rtol=1e-4)
    assert model.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_smoke_run_tables_have_the_documented_columns(smoke_run):
    cfg = overrides.from_dict(smoke_run.manifest()["config"])
    epochs, n = cfg.train.epochs, cfg.data.train_size
    groups = ["fc1", "fc2", "out"]
    grads = smoke_run.read_table("gradients")
    assert list(grads.columns) == ["epoch", "group", "group_index", "clean_norm", "noisy_norm", "total_norm", "cosine"]
    assert grads["epoch"].tolist() == np.repeat(np.arange(1, epochs + 1), 3).tolist()
    assert grads["group"].tolist() == groups * epochs and grads["group_index"].tolist() == [0, 1, 2] * epochs
    tensors = smoke_run.read_table("gradient_tensors")
    assert list(tensors.columns) == ["epoch", "group", "tensor", "numel", "clean_norm", "noisy_norm", "total_norm", "cosine"]
    assert len(tensors) == 6 * epochs
    examples = smoke_run.read_table("example_gradients")
    assert list(examples.columns) == ["example_id", "epoch", "group", "grad_norm"]
    assert sorted(examples["epoch"].unique()) == cfg.gradients.epochs_for(cfg.train) == [1, 2, 3]
    assert len(examples) == n * 3 * len(groups)
    assert (examples["grad_norm"] > 0).all()
    assert not smoke_run.has_state("gradients") and not smoke_run.has_state("example_gradients")


def test_group_norms_add_up_from_the_tensor_rows(smoke_run):
    grads = smoke_run.read_table("gradients")
    expected = reference_group_values(smoke_run.read_table("gradient_tensors"))
    for row in grads.itertuples():
        np.testing.assert_allclose([row.clean_norm, row.noisy_norm, row.total_norm, row.cosine],
                                   expected[(row.epoch, row.group)], rtol=1e-12)


def test_example_gradients_table_matches_the_checkpoint(smoke_run):
    from memloc.runs import open_run

    opened = open_run(smoke_run)
    table = smoke_run.read_table("example_gradients")
    last = table[table["epoch"] == 3].pivot(index="example_id", columns="group", values="grad_norm")
    ids = [0, 7, 123]
    _, ref = reference_example_norms(opened.model(3), opened.data.train_x[ids], opened.labels.train_labels[ids])
    np.testing.assert_allclose(last.loc[ids, ["fc1", "fc2", "out"]].to_numpy(), ref.numpy(), rtol=1e-4)


def test_turning_accounting_off_leaves_training_bitwise_unchanged(smoke_run, tmp_path):
    cfg = overrides.resolve("smoke", overrides=["gradients.accounting=false", 'stages=["train"]'])
    off = execute(cfg, str(tmp_path / "off"), torch.device("cpu"), log=_quiet)
    assert not off.has_table("gradients") and not off.has_table("gradient_tensors")
    for epoch in smoke_run.checkpoint_epochs():
        a, b = smoke_run.read_checkpoint(epoch), off.read_checkpoint(epoch)
        assert all(torch.equal(a[k], b[k]) for k in a), epoch
    assert off.read_table("example_training").equals(smoke_run.read_table("example_training"))


def test_interrupted_example_gradients_stage_resumes(smoke_run, smoke_copy, monkeypatch):
    with smoke_copy.lock():  # the copy holds a complete run: make the stage run again
        smoke_copy.update_stage("example_gradients", status="running")
    real = precompute.example_gradients.example_gradient_norms
    calls: list[int] = []

    def count(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # "Ctrl-C" while computing the second checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(precompute.example_gradients, "example_gradient_norms", count)
    with pytest.raises(KeyboardInterrupt):
        execute(overrides.resolve("smoke"), str(smoke_copy.path), torch.device("cpu"), log=_quiet)
    assert smoke_copy.has_state("example_gradients")
    calls.append(1)  # past the interruption
    execute(overrides.resolve("smoke"), str(smoke_copy.path), torch.device("cpu"), log=_quiet)
    assert len(calls) == 3 + 2  # the resumed stage computed only the two missing checkpoints
    assert smoke_copy.read_table("example_gradients").equals(smoke_run.read_table("example_gradients"))


@pytest.mark.parametrize("override, message", [
    ("gradients.example_epochs=[99]", "gradients.example_epochs: epochs in 0..train.epochs=3"),
    ('gradients.example_epochs=["x"]', "gradients.example_epochs: a list of epochs"),
    ("gradients.chunk_size=0", "gradients.chunk_size: an integer in [1, 10000000]"),
])
def test_bad_gradients_settings_are_refused(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        overrides.resolve("smoke", overrides=[override])
