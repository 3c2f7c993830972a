"""Live evaluation for the explorer and notebooks: a model inside an intervention, right now.

`live_evaluation` gives the clean / memorization / test accuracy of a model inside
`memloc.interventions.intervene` (`Rewind`, `ZeroUnits`) and the probabilities of chosen
examples; on a large run it evaluates a fixed, seeded sample so that a click stays interactive.
Kept out of the Streamlit pages so that tests check it without a browser and a notebook gets
the same numbers as the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from memloc.data import Labels
from memloc.evaluate import population_metrics, predict
from memloc.interventions import Intervention, intervene

#: Live evaluations look at no more than this many training / test examples (a seeded sample).
LIVE_TRAIN_LIMIT = 5000
LIVE_TEST_LIMIT = 2000


def sample_ids(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """All of 0..n-1 when n <= limit, else a sorted seeded sample of `limit` of them."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass(frozen=True)
class LiveResult:
    metrics: dict[str, float]  # {clean,noisy,noisy_true,test}_{acc,loss}, as memloc.evaluate
    probabilities: np.ndarray  # (len(example_ids), K) softmax of the chosen examples
    sampled: bool  # True when the metrics come from a sample of a large run


def live_evaluation(
    model: nn.Module,
    items: list[Intervention],
    train_x: torch.Tensor,
    labels: Labels,
    test_x: torch.Tensor,
    test_labels: torch.Tensor,
    example_ids: list[int],
    checkpoint=None,
    batch_size: int = 0,
) -> LiveResult:
    """Accuracies of `model` inside `intervene(model, items)` and the chosen examples' probabilities.

    Runs with more than LIVE_TRAIN_LIMIT training or LIVE_TEST_LIMIT test examples are
    evaluated on a fixed seeded sample (the same for every call, so before/after compare).
    The model is bitwise unchanged afterwards.
    """
    train_ids = torch.as_tensor(sample_ids(len(train_x), LIVE_TRAIN_LIMIT), device=train_x.device)
    test_ids = torch.as_tensor(sample_ids(len(test_x), LIVE_TEST_LIMIT), device=test_x.device)
    chosen = torch.as_tensor(list(example_ids), dtype=torch.long, device=train_x.device)
    with intervene(model, items, checkpoint=checkpoint):
        train_logits = predict(model, train_x[train_ids], batch_size)  # (n_train, K)
        test_logits = predict(model, test_x[test_ids], batch_size)  # (n_test, K)
        chosen_logits = predict(model, train_x[chosen], batch_size) if len(chosen) else train_logits[:0]
    metrics = population_metrics(train_logits, test_logits, labels.subset(train_ids), test_labels[test_ids])
    probs = torch.softmax(chosen_logits, dim=1).cpu().numpy()  # (len(example_ids), K)
    return LiveResult(metrics, probs, len(train_ids) < len(train_x) or len(test_ids) < len(test_x))


__all__ = ["LIVE_TRAIN_LIMIT", "LIVE_TEST_LIMIT", "sample_ids", "LiveResult", "live_evaluation"]
