"""The localization methods (`memloc.localization`): each fast path gives its naive
reference's scores, every method but random ranks a planted unit first, gradient scores match
finite differences, and the ground truths are what they claim."""

from __future__ import annotations

import pytest
import torch

import models
from memloc import localization as loc
from memloc import localization_reference as ref
from memloc.flipping import FlipSettings
from memloc.interventions import UnitIndex, frozen, unit_masks

FAST = loc.LocalizeSettings(slimming_steps=15, hard_concrete_steps=15, ig_steps=8, unitmem_views=3, unitmem_others=12)


def _mlp(seed: int = 0, hidden=(12, 10)) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build("mlp", (1, 8, 8), 10, hidden=list(hidden)).eval()


def _subject(model, x, labels, ids) -> loc.Subject:
    ids = torch.tensor(ids)
    return loc.Subject(model, None, ids, labels[ids], x, labels)


@pytest.fixture
def tiny():
    torch.manual_seed(1)
    model = _mlp()
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        labels = model(x).argmax(1)  # every example "memorized": predicted with its label
    return model, x, labels


def test_each_fast_path_gives_its_references_scores(tiny):
    model, x, labels = tiny
    targets = [3, 11]
    subject = _subject(model, x, labels, targets)
    fast = {m: loc.score(m, subject, FAST, FlipSettings()) for m in
            ("zero_out", "activations", "integrated_gradients", "slimming", "hard_concrete", "unitmem")}
    others = loc.others_sample(len(x), FAST.unitmem_others, FAST.seed)
    for k, e in enumerate(targets):
        xe, y = x[e : e + 1], int(labels[e])
        views = loc.shifted_views(xe, FAST.unitmem_views, loc.seeded_generator(FAST.seed, e, loc._VIEWS))
        expected = {
            "zero_out": ref.zero_out(model, xe, y),
            "activations": ref.activations(model, xe, {"fc1": "fc2", "fc2": "out"}),
            "integrated_gradients": ref.integrated_gradients(model, xe, y, FAST.ig_steps),
            "slimming": ref.slimming(_mlp(), xe, y, FAST),
            "hard_concrete": ref.hard_concrete(_mlp(), xe, e, y, FAST),
            "unitmem": ref.unitmem(model, views, x[others[others != e]]),
        }
        for method, scores in expected.items():
            assert torch.allclose(fast[method][k], scores.float(), rtol=1e-4, atol=1e-5), method


def _planted(unit: int = 3, label: int = 7):
    """An MLP with one hidden layer whose unit `unit` fires only for a bright image (the target)
    and alone pushes its logit `label`; the other units are generic features every image uses."""
    model = _mlp(hidden=(8,))
    with torch.no_grad():
        model.fc1.weight.normal_(0, 0.05)
        model.fc1.bias.fill_(1.0)
        model.fc1.weight[unit] = 1.0
        model.fc1.bias[unit] = -40.0
        model.out.weight.normal_(0, 0.05)
        model.out.bias.zero_()
        model.out.weight[:, unit] = 0.0
        model.out.weight[label, unit] = 0.1  # a margin of about 2.4: not saturated, so gradients see it
    torch.manual_seed(2)
    x = torch.rand(30, 1, 8, 8) * 0.5  # sums about 16: the planted unit stays off (ReLU)
    x[0] = 1.0  # the target: sum 64, the planted unit at 24, logit 2.4
    with torch.no_grad():
        labels = model(x).argmax(1)
    assert int(labels[0]) == label
    return model, x, labels


@pytest.mark.parametrize("method", [m for m in loc.METHODS if m != "random"])
def test_every_method_but_random_ranks_the_planted_unit_first(method):
    model, x, labels = _planted()
    subject = _subject(model, x, labels, [0])
    settings = loc.LocalizeSettings(unitmem_others=12)  # the default steps of slimming and hard_concrete
    scores = loc.score(method, subject, settings, FlipSettings(batch_size=16))
    assert int(scores[0].argmax()) == 3, scores


def test_the_greedy_score_is_the_finite_difference_of_J():
    model = _mlp(hidden=(6, 5)).double()
    torch.manual_seed(3)
    x = torch.rand(12, 1, 8, 8, dtype=torch.float64)
    labels = torch.randint(0, 10, (12,))
    flip = FlipSettings(batch_size=6)
    subject = _subject(model, x, labels, [4])
    grad = loc._first_order(subject, flip)[0]
    batch = loc.reference_batch(4, len(x), 6, flip.seed)
    index = UnitIndex(model)

    def j(masks):
        with unit_masks(model, masks[None]), torch.no_grad():
            return float(loc.objective(model(x[batch])[None], labels[batch][None]))

    eps = 1e-6
    for u in range(index.total):
        up, down = torch.ones(index.total, dtype=torch.float64), torch.ones(index.total, dtype=torch.float64)
        up[u] += eps
        down[u] -= eps
        assert abs((j(up) - j(down)) / (2 * eps) - float(grad[u])) < 1e-6


def test_integrated_gradients_are_complete_per_layer(tiny):
    """Captum's integral from gates 0 to 1: a layer's attributions sum to the logit with the layer
    on minus the logit with the layer's units zeroed (up to the quadrature error)."""
    model, x, labels = tiny
    subject = _subject(model, x, labels, [5])
    scores = loc.score("integrated_gradients", subject, loc.LocalizeSettings(ig_steps=64), FlipSettings())[0]
    index = UnitIndex(model)
    y = int(labels[5])
    for offset, size in zip(index.offsets, index.sizes):
        off = torch.ones(1, index.total)
        off[0, offset : offset + size] = 0
        with torch.no_grad(), unit_masks(model, off):
            zeroed = float(model(x[5:6])[0, y])
        with torch.no_grad():
            full = float(model(x[5:6])[0, y])
        assert abs(float(scores[offset : offset + size].sum()) - (full - zeroed)) < 2e-2 * max(1.0, abs(full - zeroed))


def test_selection_is_per_layer_and_chance_is_that_of_a_random_per_layer_pick():
    model = _mlp(hidden=(4, 6))
    index = UnitIndex(model)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 3.0, 2.0, 1.0, 0.0, -1.0, 5.0])
    assert loc.top_per_layer(scores, index, [2, 1]) == [1, 2, 9]
    truth = torch.zeros(10, dtype=torch.bool)
    truth[[1, 3, 9]] = True
    recall, chance = loc.recall_and_chance([1, 2, 9], truth, torch.ones(10, dtype=torch.bool), index)
    assert recall == pytest.approx(2 / 3) and chance == pytest.approx((2 * 2 / 4 + 1 / 6) / 3)


def test_injection_moves_only_the_chosen_units_and_the_scope_restores_the_model(tiny):
    model, x, labels = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    index = UnitIndex(model)
    units = loc.injection_units(index, 50.0, 7, 0)
    assert [index.locate(u)[0] for u in units] == [0] * 6 + [1] * 5  # half of 12 and of 10 units
    label = loc.injected_label(int(labels[7]), 10, 7, 0)
    assert label != int(labels[7])
    with frozen(model):
        assert loc.inject(model, x[7:8], label, units, loc.LocalizeSettings(inject_lr=0.1, inject_steps=500))
        assert int(model(x[7:8]).argmax()) == label
        changed = {(layer, int(row)) for layer in ("fc1", "fc2") for row in
                   torch.nonzero((model.state_dict()[f"{layer}.weight"] != before[f"{layer}.weight"]).any(1)).flatten()}
        assert changed <= {(index.layers[index.locate(u)[0]], index.locate(u)[1]) for u in units}
        assert torch.equal(model.out.weight, before["out.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_dropout_truth_is_each_targets_own_memorization_units():
    torch.manual_seed(0)
    model = models.build("mlp", (1, 8, 8), 10, hidden=[40, 30],
                         example_tied_dropout={"p_gen": 0.25, "p_mem": 0.3, "seed": 5}).eval()
    x, labels = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    rows, units = loc.dropout_benchmark(model, x, labels, [2, 9], loc.LocalizeSettings(methods=("random", "unitmem")),
                                        FlipSettings(batch_size=8))
    table = loc.unit_table(units)
    for e in (2, 9):
        for layer in model.dropout.values():
            keep = layer.keep(torch.tensor([e]))[0]
            own = int(keep[layer.n_gen:].sum())  # kept memorization units
            name = f"dropout.{next(k for k, v in model.dropout.items() if v is layer)}"
            picks = table[(table["example_id"] == e) & (table["layer"] == name) & (table["method"] == "random")]
            assert len(picks) == own
            picked = [int(u.split("[")[1][:-1]) for u in picks["unit"]]
            assert all(bool(keep[i]) for i in picked)  # only units on for the target are candidates
            assert picks["truth"].tolist() == [i >= layer.n_gen for i in picked]
    frame = loc.table(rows)
    assert set(frame["method"]) == {"random", "unitmem"} and frame["recall_at_k"].between(0, 1).all()
