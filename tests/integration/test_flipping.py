"""Greedy flipping (PAPER.md section 4): fast path vs the naive reference, masks vs weights,
the flip stage's tables, resume, and hook hygiene."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import models
from memloc import flipping, overrides
from memloc.data import load_data, make_labels
from memloc.evaluate import predict
from memloc.flipping import FlipSettings, flip_examples
from memloc.flipping_reference import reference_flip
from memloc.interventions import UnitIndex, ZeroUnits, intervene, parse_unit, unit_masks
from memloc.runs import open_run
from memloc.settings import ConfigError
from memloc.store import RunError
from precompute.flip import flip_stage
from precompute.stage import StageContext

STATE = "flip"  # the stage whose resume state the flip stage keeps


@pytest.fixture(scope="module")
def opened(smoke_run):
    return open_run(smoke_run)


def _targets(model, x, y, n):
    """The first n examples the model predicts with their training label (what the stage flips)."""
    fits = torch.nonzero(predict(model, x).argmax(1) == y).flatten()
    return fits[:n].tolist()


def _tiny(arch, opened, **options):
    """A float64 copy of `arch` on the smoke data: float64 so that first-order scores computed in
    two orders (weights vs masks) cannot swap near-ties by rounding."""
    torch.manual_seed(0)
    return models.build(arch, opened.data.input_shape, 10, **options).double().eval()


@pytest.mark.parametrize("robust", [False, True])
def test_fast_path_chooses_the_same_units_as_the_reference_on_the_smoke_mlp(opened, robust):
    model = opened.model().double()
    x, y = opened.data.train_x.double(), opened.labels.train_labels
    # Few targets per step and a small chunk: targets join mid-way and chunks split the batch.
    settings = FlipSettings(batch_size=32, cap=20, robust=robust, noise_draws=3, seed=3, targets_per_step=4, chunk_rows=100)
    ids = _targets(model, x, y, 6)
    fast = flip_examples(model, x, y, ids, settings)
    reference = [reference_flip(model, x, y, e, settings) for e in ids]
    assert fast == reference
    assert any(r.flipped for r in fast) and all(len(r.units) for r in fast)


@pytest.mark.parametrize("arch,options", [("cnn", {"width": 0.25}), ("resnet9", {"width": 0.125})])
def test_fast_path_chooses_the_same_units_as_the_reference_on_convnets(opened, arch, options):
    model = _tiny(arch, opened, **options)
    if arch == "resnet9":  # BatchNorm with non-trivial running statistics, used in eval mode
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
    x, y = opened.data.train_x[:60].double(), opened.labels.train_labels[:60]
    settings = FlipSettings(batch_size=12, cap=8, seed=1, targets_per_step=2, chunk_rows=40)
    ids = _targets(model, x, y, 3)
    fast = flip_examples(model, x, y, ids, settings)
    assert fast == [reference_flip(model, x, y, e, settings) for e in ids]
    assert all(len(r.units) for r in fast)


def test_mask_gradients_equal_weight_scores(opened):
    """dJ/dm at m = 1 equals sum over the unit's weights and bias of w * dJ/dw (PAPER.md)."""
    model = _tiny("cnn", opened, width=0.25)
    x, y = opened.data.train_x[:64].double(), opened.labels.train_labels[:64]
    index = UnitIndex(model)
    inputs = x.unsqueeze(0)  # one target: (1, |B|, C, H, W), the target first
    masks = torch.ones(1, index.total, dtype=torch.float64, requires_grad=True)
    with unit_masks(model, masks):
        flipping.objective(model(inputs[0]).unsqueeze(0), y.unsqueeze(0)).sum().backward()
    j = flipping.objective(model(x).unsqueeze(0), y.unsqueeze(0)).sum()
    params = [p for m in index.modules for p in (m.weight, m.bias)]
    grads = torch.autograd.grad(j, params)
    scores = [(w * g).flatten(1).sum(1) + b * gb for w, g, b, gb in zip(params[::2], grads[::2], params[1::2], grads[1::2])]
    assert torch.allclose(masks.grad[0], torch.cat(scores), rtol=1e-9, atol=1e-12)
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("arch,layer", [("cnn", "conv2"), ("cnn", "fc1")])
def test_zeroing_a_unit_by_mask_equals_zeroing_its_weights_and_bias(opened, arch, layer):
    model = _tiny(arch, opened, width=0.5)
    x = opened.data.train_x.double()
    with intervene(model, [ZeroUnits((f"{layer}[3]", f"{layer}[7]"))]):
        masked = predict(model, x)
    edited = copy.deepcopy(model)
    module = dict(edited.named_modules())[layer]
    with torch.no_grad():
        module.weight[[3, 7]] = 0
        module.bias[[3, 7]] = 0
    assert torch.allclose(masked, predict(edited, x), rtol=1e-10, atol=1e-12)
    # ... and so does the flipping code's own batched mask (two targets, different masks).
    index = UnitIndex(model)
    masks = index.masks([[index.index_of(f"{layer}[3]"), index.index_of(f"{layer}[7]")], []], x)
    preds = flipping.masked_predictions(model, masks, x, chunk_rows=500)
    assert torch.equal(preds[0], predict(edited, x).argmax(1))
    assert torch.equal(preds[1], predict(model, x).argmax(1))


def test_recorded_units_really_flip_each_example(smoke_run, opened):
    """Applied by independent code paths (ZeroUnits hooks; zeroed weights on a copy), the units
    recorded for a flipped example change its prediction to the recorded new prediction."""
    table = smoke_run.read_table("flipping")
    assert table["flipped"].any()
    model, x, y = opened.model(), opened.data.train_x, opened.labels.train_labels
    for row in table[table["flipped"]].itertuples():
        with intervene(model, [ZeroUnits(tuple(row.units))]):
            pred = int(predict(model, x[[row.example_id]]).argmax())
        assert pred != int(y[row.example_id]) and pred == row.new_prediction
        edited = copy.deepcopy(model)
        modules = dict(edited.named_modules())
        with torch.no_grad():
            for unit in row.units:
                layer, i = parse_unit(unit)
                modules[layer].weight[i] = 0
                modules[layer].bias[i] = 0
        assert int(predict(edited, x[[row.example_id]]).argmax()) == row.new_prediction
        # Fewer units than recorded do not flip it (the search stops at the first flip).
        with intervene(model, [ZeroUnits(tuple(row.units[:-1]))]):
            assert int(predict(model, x[[row.example_id]]).argmax()) == int(y[row.example_id])


def test_flip_stage_tables_follow_the_contract(smoke_run, opened):
    table = smoke_run.read_table("flipping")
    assert list(table.columns) == [
        "example_id", "kind", "n_units", "flipped", "units", "new_prediction", "acc_clean_before", "acc_noisy_before",
        "acc_test_before", "acc_clean_after", "acc_noisy_after", "acc_test_after", "random_flipped", "random_new_prediction",
        "random_acc_clean_after", "random_acc_noisy_after", "random_acc_test_after",
    ]
    cfg = opened.config.flip
    noisy = opened.labels.is_noisy.numpy()
    assert (table["kind"] == np.where(noisy[table["example_id"]], "noisy", "clean")).all()
    assert (table["kind"] == "noisy").sum() <= cfg.n_noisy and (table["kind"] == "clean").sum() <= cfg.n_clean
    assert (table["n_units"] == table["units"].map(len)).all()
    assert (table["n_units"] <= cfg.cap).all()
    assert (table.loc[~table["flipped"], "n_units"] == cfg.cap).all()  # not flipped = stopped by the cap
    flipped = table[table["flipped"]]
    assert flipped["random_flipped"].notna().all() and table.loc[~table["flipped"], "random_flipped"].isna().all()
    for col in ("acc_clean_after", "acc_test_after", "random_acc_clean_after", "random_acc_test_after"):
        assert flipped[col].between(0, 1).all()
    units = smoke_run.read_table("flip_units")
    assert list(units.columns) == ["unit", "layer", "layer_index", "n_examples", "n_noisy", "n_clean"]
    counts = flipped.explode("units")["units"].value_counts()
    assert dict(zip(units["unit"], units["n_examples"])) == counts.to_dict()
    assert (units["n_noisy"] + units["n_clean"] == units["n_examples"]).all()
    model = opened.model()
    assert (units["layer"].map(list(model.unit_layers).index) == units["layer_index"]).all()
    numbers = smoke_run.stage("flip")
    assert numbers["noisy_examples"] + numbers["clean_examples"] == len(table)


def test_collateral_accuracy_is_what_the_edit_gives(smoke_run, opened):
    """Recompute one example's collateral accuracy with ZeroUnits and the plain evaluator."""
    table = smoke_run.read_table("flipping")
    row = table[table["flipped"]].iloc[0]
    cfg = opened.config.flip
    d, labels = opened.data, opened.labels
    evals = flipping.eval_set(d.train_x, labels.train_labels, labels.is_noisy, d.test_x, d.test_labels, cfg.eval_train, cfg.eval_test, cfg.seed)
    model = opened.model()
    with intervene(model, [ZeroUnits(tuple(row["units"]))]):
        train_ok = predict(model, evals.train_x).argmax(1) == evals.train_labels
        test_ok = predict(model, evals.test_x).argmax(1) == evals.test_labels
    assert row["acc_clean_after"] == pytest.approx(train_ok[~evals.train_noisy].double().mean().item())
    assert row["acc_noisy_after"] == pytest.approx(train_ok[evals.train_noisy].double().mean().item())
    assert row["acc_test_after"] == pytest.approx(test_ok.double().mean().item())
    train_ok = predict(model, evals.train_x).argmax(1) == evals.train_labels  # the unedited model
    test_ok = predict(model, evals.test_x).argmax(1) == evals.test_labels
    assert table["acc_clean_before"].tolist() == pytest.approx([train_ok[~evals.train_noisy].double().mean().item()] * len(table))
    assert table["acc_noisy_before"].tolist() == pytest.approx([train_ok[evals.train_noisy].double().mean().item()] * len(table))
    assert table["acc_test_before"].tolist() == pytest.approx([test_ok.double().mean().item()] * len(table))


def test_random_control_matches_the_flip_set_per_layer_and_is_seeded(opened):
    model = opened.model()
    index = UnitIndex(model)
    units = (index.index_of("fc2[3]"), index.index_of("fc1[5]"), index.index_of("fc2[9]"))
    control = flipping.random_units(index, units, example_id=7, seed=0)
    assert sorted(index.locate(u)[0] for u in control) == sorted(index.locate(u)[0] for u in units)
    assert len(set(control)) == len(control)
    assert control == flipping.random_units(index, units, example_id=7, seed=0)
    assert control != flipping.random_units(index, units, example_id=8, seed=0)


def test_reference_batches_are_fresh_per_target_and_contain_it():
    a, b = flipping.reference_batch(5, 100, 20, seed=0), flipping.reference_batch(6, 100, 20, seed=0)
    assert a[0] == 5 and b[0] == 6 and len(set(a.tolist())) == 20 and 5 not in a[1:].tolist()
    assert not torch.equal(a[1:], b[1:])
    assert torch.equal(a, flipping.reference_batch(5, 100, 20, seed=0))
    assert sorted(flipping.reference_batch(3, 10, 512, seed=0).tolist()) == list(range(10))


def test_no_hooks_or_grad_flags_remain_after_an_error(opened):
    model = opened.model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = opened.data.train_x, opened.labels.train_labels.clone()
    ids = _targets(model, x, y, 2)
    others = torch.ones(len(y), dtype=torch.bool)
    others[ids] = False
    y[others] = 99  # an impossible label: cross-entropy raises inside the hooked scoring pass
    with pytest.raises(IndexError, match="out of bounds"):
        flip_examples(model, x, y, ids, FlipSettings(batch_size=64, cap=5, chunk_rows=64))
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters()) and model.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_interrupted_flip_stage_resumes_with_the_targets_not_done(smoke_run, smoke_copy, monkeypatch):
    opened_copy = open_run(smoke_copy)
    ctx = StageContext(smoke_copy, opened_copy.config, opened_copy.data, opened_copy.labels, opened_copy.device)
    assert opened_copy.config.flip.save_every < len(smoke_run.read_table("flipping"))
    real_table, calls = flipping.flip_table, []

    def table_then_interrupt(model, results, *args, **kwargs):
        calls.append([r.example_id for r in results])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_table(model, results, *args, **kwargs)

    monkeypatch.setattr(flipping, "flip_table", table_then_interrupt)
    with smoke_copy.lock(), pytest.raises(KeyboardInterrupt):
        flip_stage(ctx)
    assert smoke_copy.has_state(STATE)
    first = calls[0]
    calls.clear()
    with smoke_copy.lock():
        numbers = flip_stage(ctx)
    assert not smoke_copy.has_state(STATE)
    assert all(e not in first for chunk in calls for e in chunk)  # done targets are not redone
    expected = smoke_run.read_table("flipping")
    assert smoke_copy.read_table("flipping").equals(expected)
    assert numbers == {k: v for k, v in smoke_run.stage("flip").items() if k in numbers}


def test_flip_config_is_validated():
    with pytest.raises(ConfigError, match="flip.cap"):
        overrides.resolve("smoke", overrides=["flip.cap=0"])
    with pytest.raises(ConfigError, match="flip.example_ids"):
        overrides.resolve("smoke", overrides=['flip.example_ids=["a"]'])
    assert overrides.resolve("smoke", overrides=["flip.example_ids=3,5"]).flip.example_ids == (3, 5)


def test_example_ids_out_of_range_are_a_clear_error(smoke_copy):
    cfg = overrides.resolve("smoke", overrides=["flip.example_ids=[1, 100000]"])
    opened_copy = open_run(smoke_copy)
    ctx = StageContext(smoke_copy, cfg, opened_copy.data, opened_copy.labels, opened_copy.device)
    with smoke_copy.lock(), pytest.raises(ConfigError, match="0..399"):
        flip_stage(ctx)


def test_flip_stage_needs_a_trained_model(tmp_path):
    from memloc.store import Run

    cfg = overrides.resolve("smoke")
    ds = load_data(cfg.data)
    run = Run(tmp_path / "fresh")
    with run.lock():
        run.create(cfg.to_dict(), "x" * 64, 0)
        with pytest.raises(RunError, match=r"no checkpoints of its plain model yet \(stage train\)"):
            flip_stage(StageContext(run, cfg, ds, make_labels(cfg.data, ds), torch.device("cpu")))


def test_no_targets_give_empty_tables_with_the_contract_columns(smoke_copy, smoke_run):
    cfg = overrides.resolve("smoke", overrides=["flip.n_noisy=0", "flip.n_clean=0"])
    opened_copy = open_run(smoke_copy)
    with smoke_copy.lock():
        numbers = flip_stage(StageContext(smoke_copy, cfg, opened_copy.data, opened_copy.labels, opened_copy.device))
    assert numbers["noisy_examples"] == numbers["clean_examples"] == 0 and numbers["noisy_units_mean"] is None
    for name in ("flipping", "flip_units"):
        table = smoke_copy.read_table(name)
        assert len(table) == 0 and list(table.columns) == list(smoke_run.read_table(name).columns)
