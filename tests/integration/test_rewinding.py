"""Layer rewinding: the fast grid equals the naive reference, the invariants of PAPER.md section 2,
the live call, and the `rewind` stage's tables on the smoke run."""

from __future__ import annotations

import pytest
import torch

import models
from memloc import overrides
from memloc.data import Labels
from memloc.evaluate import predict
from memloc.interventions import Rewind
from memloc.rewinding import RewindEvaluator, evaluate_rewind, rewind_reference
from memloc.runs import open_run
from precompute.stages import execute

REWINDING = ["group", "group_index", "epoch", "include_buffers", "clean_acc", "noisy_acc", "noisy_true_acc", "test_acc"]
REWINDING_EXAMPLES = ["group", "epoch", "example_id", "memorized"]


@pytest.fixture(scope="module")
def opened(smoke_run):
    return open_run(smoke_run)


def _same(a, b):
    assert a.metrics == b.metrics
    assert torch.equal(a.train_pred, b.train_pred) and torch.equal(a.test_pred, b.test_pred)


@pytest.mark.parametrize("cache_bytes", [1 << 30, 0], ids=["cached", "chunked"])
def test_grid_equals_the_naive_reference_on_the_smoke_run(opened, cache_bytes):
    model, data = opened.model(), opened.data
    evaluator = RewindEvaluator(model, opened.checkpoint, data.train_x, opened.labels, data.test_x, data.test_labels,
                                batch_size=128, cache_bytes=cache_bytes)
    epochs = opened.run.checkpoint_epochs()
    cells = list(evaluator.grid(model.layer_groups, epochs))
    assert [c[0] for c in cells] == [Rewind(g, e) for g in model.layer_groups for e in epochs]
    for item, result in cells:
        _same(result, rewind_reference(model, opened.checkpoint, item, data.train_x, opened.labels, data.test_x, data.test_labels, 128))


def _bn_setup():
    """A tiny ResNet-9 (BatchNorm in every group) with two fake checkpoints that differ in
    parameters and running statistics, and random data."""
    torch.manual_seed(1)
    model = models.build("resnet9", (1, 8, 8), 4, width=0.125).eval()
    states = {}
    for epoch in (0, 1):
        other = models.build("resnet9", (1, 8, 8), 4, width=0.125)
        state = other.state_dict()
        for name, tensor in state.items():
            if name.endswith(("running_mean", "running_var")):
                tensor.copy_(torch.rand_like(tensor) + (0.5 if name.endswith("var") else -0.5))
        states[epoch] = state
    x, test_x = torch.randn(40, 1, 8, 8), torch.randn(12, 1, 8, 8)
    true = torch.randint(0, 4, (40,))
    is_noisy = torch.arange(40) % 5 == 0
    labels = Labels(true, torch.where(is_noisy, (true + 1) % 4, true), is_noisy)
    return model, states.__getitem__, x, labels, test_x, torch.randint(0, 4, (12,))


@pytest.mark.parametrize("include_buffers", [True, False])
def test_grid_equals_the_reference_with_batchnorm_statistics(include_buffers):
    model, checkpoint, x, labels, test_x, test_labels = _bn_setup()
    evaluator = RewindEvaluator(model, checkpoint, x, labels, test_x, test_labels, batch_size=16, cache_bytes=2000)
    for item, result in evaluator.grid(model.layer_groups, [0, 1], include_buffers):
        _same(result, rewind_reference(model, checkpoint, item, x, labels, test_x, test_labels, 16))


def test_rewinding_statistics_or_not_is_a_real_difference():
    model, checkpoint, x, labels, test_x, test_labels = _bn_setup()
    evaluator = RewindEvaluator(model, checkpoint, x, labels, test_x, test_labels)
    with_stats = evaluator.evaluate([Rewind("layer1", 0, include_buffers=True)])
    params_only = evaluator.evaluate([Rewind("layer1", 0, include_buffers=False)])
    assert with_stats.metrics["clean_loss"] != params_only.metrics["clean_loss"]


def test_rewinding_every_group_to_epoch_k_reproduces_checkpoint_k(opened):
    evaluator = RewindEvaluator.of(opened)
    groups = list(evaluator.model.layer_groups)
    for k in opened.run.checkpoint_epochs():
        result = evaluator.evaluate([Rewind(g, k) for g in groups])
        assert torch.equal(result.train_pred, predict(opened.model(k), opened.data.train_x).argmax(1))
        assert torch.equal(result.test_pred, predict(opened.model(k), opened.data.test_x).argmax(1))


def test_rewinding_to_the_last_epoch_is_the_identity(opened):
    evaluator = RewindEvaluator.of(opened)
    last = opened.run.checkpoint_epochs()[-1]
    final = predict(opened.model(), opened.data.train_x).argmax(1)
    for group in evaluator.model.layer_groups:
        assert torch.equal(evaluator.evaluate([Rewind(group, last)]).train_pred, final)


def test_live_call_matches_the_reference_and_leaves_the_model_as_it_was(opened):
    data = opened.data
    evaluator = RewindEvaluator.of(opened)
    before = {k: v.clone() for k, v in evaluator.model.state_dict().items()}
    item = Rewind("fc2", 0)
    first = evaluator.evaluate([item])
    again = evaluator.evaluate([item])  # from the cached activations in front of fc2
    reference = rewind_reference(opened.model(), opened.checkpoint, item, data.train_x, opened.labels, data.test_x, data.test_labels)
    kept = opened.model()
    for result in (first, again, evaluate_rewind(opened, [item]), evaluate_rewind(opened, [item], kept)):
        _same(result, reference)
    for model in (evaluator.model, kept):
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    for call in (evaluator.evaluate, lambda items: evaluate_rewind(opened, items)):
        with pytest.raises(ValueError, match="non-empty list of Rewind"):
            call([])
    with pytest.raises(ValueError, match="not one of fc1"):
        evaluator.evaluate([Rewind("nope", 0)])


def test_smoke_run_rewinding_tables(smoke_run):
    cfg = overrides.from_dict(smoke_run.manifest()["config"])
    table = smoke_run.read_table("rewinding")
    assert list(table.columns) == REWINDING
    groups = ["fc1", "fc2", "out"]
    epochs = cfg.rewind.epochs_for(cfg.train)
    assert epochs == [0, 1, 2, 3]
    assert list(zip(table["group"], table["epoch"])) == [(g, e) for g in groups for e in epochs]
    assert table["group_index"].tolist() == [i for i in range(3) for _ in epochs]
    assert table["include_buffers"].all()
    # Rewinding to the last epoch is the final model: the training table's last row.
    last = smoke_run.read_table("training").iloc[-1]
    for _, row in table[table["epoch"] == cfg.train.epochs].iterrows():
        for key in ("clean_acc", "noisy_acc", "test_acc"):
            assert row[key] == pytest.approx(last[key])

    examples = smoke_run.read_table("rewinding_examples")
    assert list(examples.columns) == REWINDING_EXAMPLES
    noisy = set(smoke_run.read_labels()["is_noisy"].nonzero()[0].tolist())
    assert set(examples["example_id"]) == noisy and (examples["epoch"] == 0).all()
    assert examples["memorized"].dtype == bool
    # Each group's share of noisy examples still memorized is its noisy accuracy at epoch 0.
    share = examples.groupby("group")["memorized"].mean()
    at0 = table[table["epoch"] == 0].set_index("group")["noisy_acc"]
    for group in groups:
        assert share[group] == pytest.approx(at0[group])


def test_rewind_stage_resumes_after_an_interruption_and_records_the_buffer_choice(tmp_path, monkeypatch):
    cfg = overrides.resolve("smoke", overrides=['stages=["train","rewind"]', "rewind.include_buffers=false", "rewind.epochs=[0,2]"])
    calls = []
    grid = RewindEvaluator.grid

    def interrupted(self, groups, *args):
        calls.append(list(groups))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return grid(self, groups, *args)

    monkeypatch.setattr(RewindEvaluator, "grid", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, str(tmp_path / "run"), torch.device("cpu"), log=lambda _: None)
    monkeypatch.setattr(RewindEvaluator, "grid", grid)
    run = execute(cfg, str(tmp_path / "run"), torch.device("cpu"), log=lambda _: None)
    table = run.read_table("rewinding")
    assert calls == [["fc1"], ["fc2"]]  # the resumed run did fc1 from its saved state
    assert list(zip(table["group"], table["epoch"])) == [(g, e) for g in ("fc1", "fc2", "out") for e in (0, 2)]
    assert not table["include_buffers"].any()
    assert len(run.read_table("rewinding_examples")) == 3 * int(run.read_labels()["is_noisy"].sum())
    assert not run.has_state("rewind")
