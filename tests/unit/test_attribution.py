"""The attribution facade on tiny linear models whose attributions are known in closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memloc import attribution
from memloc.interventions import ZeroUnits, intervene


class TinyLinear(nn.Module):
    """f(x) = W2 W1 flatten(x): linear, so every method has a closed-form answer."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 3, bias=False)
        self.out = nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [0.0, 1.0, 1.0, -1.0], [2.0, 0.0, 0.0, 3.0]]))
            self.out.weight.copy_(torch.tensor([[1.0, 0.5, -1.0], [-0.5, 2.0, 1.0]]))
        self.layer_groups = {"hidden": ("hidden",), "out": ("out",)}
        self.unit_layers = ("hidden",)

    def forward(self, x):
        return self.out(self.hidden(x.flatten(1)))  # (B, 2)


class TinyConv(nn.Module):
    """1x1 conv with two channels, sum over positions, linear: Grad-CAM is sum_k w_k A_k."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.out = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.out.weight.copy_(torch.tensor([[2.0, 1.0], [0.0, -3.0]]))
        self.layer_groups = {"conv": ("conv",), "out": ("out",)}
        self.unit_layers = ("conv",)

    def forward(self, x):
        return self.out(self.conv(x).sum(dim=(2, 3)))  # (B, 2)


X = torch.tensor([[0.5, -1.0, 2.0, 1.5]]).view(1, 1, 2, 2)


def _hooks(model):
    return sum(len(d) for m in model.modules()
               for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks))


@pytest.mark.parametrize("target", [0, 1])
@pytest.mark.parametrize("method", ["IntegratedGradients", "GradientShap", "Occlusion"])
def test_pixel_attributions_of_a_linear_model_are_weight_times_input(method, target):
    model = TinyLinear()
    w = (model.out.weight @ model.hidden.weight)[target].view(1, 1, 2, 2)  # d f_target / d x
    # Captum's own arguments: a one-pixel occlusion window; GradientShap without input noise.
    extra = {"Occlusion": {"sliding_window_shapes": (1, 1, 1)}, "GradientShap": {"stdevs": 0.0}}.get(method, {})
    got = attribution.attribute(model, method, X, target, **extra)
    torch.testing.assert_close(got, w * X)  # zero baseline: attribution = w * (x - 0)


def test_saliency_is_the_absolute_gradient():
    model = TinyLinear()
    got = attribution.attribute(model, "Saliency", X, 1)
    torch.testing.assert_close(got, (model.out.weight @ model.hidden.weight)[1].abs().view(1, 1, 2, 2))


def test_layer_conductance_of_a_linear_layer_is_activation_times_outgoing_weight():
    model = TinyLinear()
    h = model.hidden(X.flatten(1))  # (1, 3)
    # Riemann steps make the discrete chain rule exact on a linear model (Gauss-Legendre does not).
    got = attribution.attribute(model, "LayerConductance", X, 0, layer="hidden", method="riemann_trapezoid")
    torch.testing.assert_close(got, h * model.out.weight[0])


def test_layer_gradcam_is_the_gradient_weighted_sum_of_channels():
    model = TinyConv()
    acts = model.conv(X)  # (1, 2, 2, 2)
    got = attribution.attribute(model, "LayerGradCam", X, 1, layer="conv")
    expected = (model.out.weight[1].view(1, 2, 1, 1) * acts).sum(1, keepdim=True)  # (1, 1, 2, 2)
    torch.testing.assert_close(got, expected)


def test_zeroing_a_unit_removes_its_conductance_and_its_share_of_the_pixels():
    model = TinyLinear()
    with intervene(model, [ZeroUnits(("hidden[2]",))]):
        cond = attribution.attribute(model, "LayerConductance", X, 0, layer="hidden")
        pixels = attribution.attribute(model, "IntegratedGradients", X, 0)
    assert cond[0, 2].item() == 0.0
    w = (model.out.weight[0, :2] @ model.hidden.weight[:2]).view(1, 1, 2, 2)  # without unit 2
    torch.testing.assert_close(pixels, w * X)
    assert _hooks(model) == 0


def test_an_error_inside_captum_leaves_no_hook_and_the_weights_unchanged():
    model = TinyLinear()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(Exception):
        attribution.attribute(model, "LayerConductance", X, 7, layer="hidden")  # no class 7
    assert _hooks(model) == 0
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_method_table_and_layer_checks():
    assert attribution.methods_for(TinyLinear()) == [
        "IntegratedGradients", "Saliency", "GradientShap", "Occlusion", "LayerConductance"]
    assert "LayerGradCam" in attribution.methods_for(TinyConv())
    with pytest.raises(ValueError, match="needs layer= one of hidden"):
        attribution.attribute(TinyLinear(), "LayerConductance", X, 0, layer="out")
    with pytest.raises(ValueError, match="one of IntegratedGradients"):
        attribution.attribute(TinyLinear(), "DeepLift", X, 0)
    with pytest.raises(ValueError, match="takes no layer"):
        attribution.attribute(TinyLinear(), "Saliency", X, 0, layer="hidden")
    assert attribution.default_window((3, 32, 32)) == (3, 4, 4)
