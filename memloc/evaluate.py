"""Evaluation of a model on the three populations the paper tracks.

- *clean* training examples against their (true) labels,
- *noisy* training examples against their noisy training labels: the memorization accuracy,
- noisy training examples against their true labels,
- the test set.

Everything stays on the model's device; batches are slices of device tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Labels:
    """Training labels of a run, as device tensors indexed by example id."""

    true: torch.Tensor  # (N,) int64
    train: torch.Tensor  # (N,) int64, equal to `true` except where is_noisy
    is_noisy: torch.Tensor  # (N,) bool

    def to(self, device: str | torch.device) -> "Labels":
        return Labels(self.true.to(device), self.train.to(device), self.is_noisy.to(device))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits (N, K) in eval mode, computed in batches; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(xb) for xb in x.split(batch_size)])
    finally:
        model.train(was_training)


def population_metrics(
    train_logits: torch.Tensor, test_logits: torch.Tensor, labels: Labels, test_y: torch.Tensor
) -> dict[str, float]:
    """Accuracy and mean cross-entropy per population, from precomputed logits."""
    noisy = labels.is_noisy
    parts = {
        "clean": (train_logits[~noisy], labels.true[~noisy]),
        "noisy": (train_logits[noisy], labels.train[noisy]),
        "noisy_true": (train_logits[noisy], labels.true[noisy]),
        "test": (test_logits, test_y),
    }
    out: dict[str, float] = {}
    for name, (logits, y) in parts.items():
        if len(y) == 0:
            out[f"{name}_acc"] = float("nan")
            out[f"{name}_loss"] = float("nan")
            continue
        out[f"{name}_acc"] = (logits.argmax(1) == y).float().mean().item()
        out[f"{name}_loss"] = F.cross_entropy(logits, y).item()
    return out


def evaluate(
    model: nn.Module, train_x: torch.Tensor, labels: Labels, test_x: torch.Tensor, test_y: torch.Tensor, batch_size: int = 4096
) -> dict[str, float]:
    """clean/noisy/noisy_true/test accuracy and loss of `model` (eval mode)."""
    return population_metrics(predict(model, train_x, batch_size), predict(model, test_x, batch_size), labels, test_y)
