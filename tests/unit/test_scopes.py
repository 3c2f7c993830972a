"""The scopes of `memloc.interventions` on tiny models: the batched mask hook (ZeroUnits is its
T = 1 case), and `eval_mode` / `frozen`, which hand the model back as they found it (parameters,
buffers, requires_grad, train/eval flags, hooks), also when the block raises."""

from __future__ import annotations

import copy

import pytest
import torch

import models
from memloc.interventions import UnitIndex, ZeroUnits, eval_mode, frozen, intervene, unit_masks


def _tiny(arch: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.build(arch, (1, 8, 8), 5, **options).double().eval()


def _snapshot(model):
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "flags": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "hooks": [len(d) for m in model.modules()
                  for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)],
    }


def _same(a, b) -> bool:
    return (a["tensors"].keys() == b["tensors"].keys() and all(torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])
            and a["flags"] == b["flags"] and a["modes"] == b["modes"] and a["hooks"] == b["hooks"])


X = torch.randn(7, 1, 8, 8, dtype=torch.float64)


@pytest.mark.parametrize("arch,options,units", [
    ("mlp", {"hidden": [16, 12]}, ("fc1[3]", "fc2[0]", "fc2[11]")),
    ("cnn", {"width": 0.25}, ("conv1[2]", "fc1[5]")),
    ("resnet9", {"width": 0.125}, ("prep.conv[1]", "res1.1.conv[4]")),
])
def test_the_batched_mask_with_one_row_is_zero_units(arch, options, units):
    model = _tiny(arch, **options)
    index = UnitIndex(model)
    with torch.no_grad(), unit_masks(model, index.masks([[index.index_of(u) for u in units]], X)):
        hooked = model(X)
    with torch.no_grad(), intervene(model, [ZeroUnits(units)]):
        zeroed = model(X)
    assert torch.equal(hooked, zeroed)
    # Independently: a unit's output times 0 is the unit with its weights (and bias) zeroed.
    edited = copy.deepcopy(model)
    modules = dict(edited.named_modules())
    with torch.no_grad():
        for unit in units:
            layer, i = unit.split("[")
            module = modules[layer]
            module.weight[int(i[:-1])] = 0
            if module.bias is not None:
                module.bias[int(i[:-1])] = 0
        assert torch.allclose(edited(X), zeroed, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(model(X), zeroed)  # the edit does change the output


def test_each_block_of_rows_gets_its_own_mask_row():
    model = _tiny("cnn", width=0.25)
    index = UnitIndex(model)
    sets = [[index.index_of("conv1[1]")], [], [index.index_of("conv2[3]"), index.index_of("fc1[0]")]]
    masks = index.masks(sets, X)  # (T=3, U)
    with torch.no_grad():
        with unit_masks(model, masks):
            together = model(X.repeat(3, 1, 1, 1)).view(3, len(X), -1)  # three blocks of the same 7 rows
        for k in range(3):
            with unit_masks(model, masks[k : k + 1]):
                assert torch.allclose(together[k], model(X), rtol=1e-12, atol=1e-12)
    assert _snapshot(model)["hooks"] == [0] * len(_snapshot(model)["hooks"])


def _mess_with(model: torch.nn.Module) -> None:
    """Everything a block could do to a model: train it, flip flags and modes, add hooks."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for b in model.buffers():
            b.add_(1)
    for p in list(model.parameters())[::2]:
        p.requires_grad_(not p.requires_grad)
    for m in list(model.modules())[::3]:
        m.training = not m.training
    next(iter(model.modules())).register_forward_hook(lambda *a: None)
    list(model.modules())[-1].register_forward_pre_hook(lambda *a: None)
    model(X).sum().backward()


@pytest.mark.parametrize("scope", ["eval_mode", "frozen", "frozen group"])
def test_a_scope_restores_the_model_also_when_the_block_raises(scope):
    model = _tiny("resnet9", width=0.125)  # BatchNorm buffers in every group
    model.train()
    model.res1.eval()  # mixed flags, so "restored" cannot mean "all train" or "all eval"
    model.prep.conv.weight.requires_grad_(False)
    before = _snapshot(model)
    enter = {"eval_mode": lambda: eval_mode(model), "frozen": lambda: frozen(model),
             "frozen group": lambda: frozen(model, ["layer1"])}[scope]
    with pytest.raises(RuntimeError, match="boom"):
        with enter():
            _mess_with(model)
            assert not _same(_snapshot(model), before)
            raise RuntimeError("boom")
    assert _same(_snapshot(model), before)
    with enter():  # ... and when it ends normally
        _mess_with(model)
    assert _same(_snapshot(model), before)


def test_eval_mode_puts_every_module_in_eval_mode():
    model = _tiny("resnet9", width=0.125).train()
    with eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


def test_frozen_leaves_only_the_groups_trainable_and_in_train_mode():
    model = _tiny("resnet9", width=0.125).train()
    group_params = {n for n, _ in model.named_parameters() if n.startswith("res1.0.")}
    with frozen(model, ["res1.0"]) as part:
        assert {n for n, p in model.named_parameters() if p.requires_grad} == group_params
        assert [id(p) for p in part.parameters] == [id(p) for n, p in model.named_parameters() if n in group_params]
        assert not any(m.training for m in model.modules())
        part.train()
        training = {n for n, m in model.named_modules() if m.training}
        assert training == {n for n, _ in model.named_modules() if n == "res1.0" or n.startswith("res1.0.")}
        optimizer = torch.optim.SGD(part.parameters, lr=0.1)
        outside = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("res1.0.")}
        model(X).sum().backward()
        optimizer.step()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in outside.items())  # frozen BatchNorm too
        part.eval()
        assert not any(m.training for m in model.modules())
    with frozen(model) as everything:  # no group: eval mode without weight gradients
        assert everything.parameters == [] and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="not one of prep, layer1"):
        with frozen(model, ["nope"]):
            pass
