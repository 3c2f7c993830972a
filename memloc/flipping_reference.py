"""Greedy flipping, the naive reference: PAPER.md section 4 literally, one example at a time.

Used only by tests and `benchmarks/neuron_flipping.py` to check the fast path
(`memloc.flipping.flip_examples`). For one target it copies the model, and then repeatedly

1. checks the prediction for the target (stop when it is no longer the training label, or when
   `cap` units are zeroed);
2. forms `J = (1/|B|) * sum over i in B, i != t of CE_i - CE_t` on the target's reference batch;
3. takes the gradient of J with respect to every unit layer's weight and bias (parameter
   gradients) and scores each unit by `sum over its weights and bias of w * dJ/dw`;
4. zeroes the weights and bias of the highest-scoring unit that is not zeroed yet (ties: the
   lowest index in the global unit order).

The model is evaluated as trained (eval mode: BatchNorm with its running statistics). The
reference batch, robust flipping's noise and the unit order are the conventions documented
in `memloc.flipping`, shared so both paths solve the same problem.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from memloc.flipping import FlipResult, FlipSettings, reference_batch, target_inputs
from memloc.interventions import UnitIndex


def reference_flip(
    model: nn.Module, train_x: torch.Tensor, train_labels: torch.Tensor, example_id: int, settings: FlipSettings = FlipSettings()
) -> FlipResult:
    """Greedy flipping of one example on a copy of `model`, with weight gradients."""
    edited = copy.deepcopy(model).eval()
    index = UnitIndex(edited)
    draws = settings.draws
    n_train = len(train_x)
    batch = reference_batch(example_id, n_train, min(settings.batch_size, n_train), settings.seed)
    inputs = target_inputs(train_x, batch, example_id, settings)  # (|B| * draws, C, H, W)
    labels = train_labels[batch.to(train_labels.device)]  # (|B|,)
    label = int(train_labels[example_id])
    layers = index.modules
    params = [p for m in layers for p in (m.weight, m.bias) if p is not None]
    cap = min(settings.cap, index.total)

    def prediction() -> int:
        with torch.no_grad():
            logits = edited(inputs[:draws])  # the target's own rows, (draws, K)
        return int(logits.mean(0).argmax())

    zeroed: list[int] = []
    pred = prediction()
    while pred == label and len(zeroed) < cap:
        logits = edited(inputs).view(len(batch), draws, -1).mean(1)  # (|B|, K)
        ce = F.cross_entropy(logits, labels, reduction="none")  # (|B|,)
        j = ce[1:].sum() / len(batch) - ce[0]
        grads = dict(zip(params, torch.autograd.grad(j, params)))
        scores = []
        for m in layers:
            score = (m.weight * grads[m.weight]).flatten(1).sum(1)  # (units,)
            if m.bias is not None:
                score = score + m.bias * grads[m.bias]
            scores.append(score)
        scores = torch.cat(scores).detach()  # (U,) in the global unit order
        scores[zeroed] = float("-inf")
        best = int(scores.argmax())
        pos, i = index.locate(best)
        with torch.no_grad():
            layers[pos].weight[i] = 0.0
            if layers[pos].bias is not None:
                layers[pos].bias[i] = 0.0
        zeroed.append(best)
        pred = prediction()
    return FlipResult(example_id, tuple(zeroed), pred != label, pred)
