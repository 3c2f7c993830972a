"""What the explorer computes from a run: table summaries and live interventions.

Kept out of the Streamlit pages so that tests check them without a browser, and so that a
notebook gets the same numbers as the app:

- `memorized_from`: for each noisy example, the first epoch from which the model predicts its
  noisy label in every later epoch (when it became memorized for good).
- `noisy_share`: the noisy examples' share of the gradient norm per layer group and epoch.
- `live_evaluation`: clean / memorization / test accuracy of a model inside a scoped
  intervention (`Rewind`, `ZeroUnits`), plus the predictions of chosen examples; on a large run
  it evaluates a fixed, seeded sample so that a click stays interactive.
- `stage_command`: the `precompute` command that adds a missing stage to an existing run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from memloc import config as config_mod
from memloc.evaluate import Labels, population_metrics, predict
from memloc.interventions import Intervention, intervene

#: Live evaluations look at no more than this many training / test examples (a seeded sample).
LIVE_TRAIN_LIMIT = 5000
LIVE_TEST_LIMIT = 2000


def memorized_from(example_training: pd.DataFrame, is_noisy: np.ndarray) -> pd.DataFrame:
    """example_id, memorized_from for every noisy example.

    `memorized_from` is the first epoch e such that the example was predicted with its (noisy)
    training label in epochs e, e+1, ..., last (`example_training.correct`, from the training
    forward pass); <NA> when it is not predicted so in the last epoch.
    """
    noisy_ids = np.flatnonzero(is_noisy)
    table = example_training[example_training["example_id"].isin(noisy_ids)]
    wide = table.pivot(index="example_id", columns="epoch", values="correct").sort_index(axis=1)  # (noisy, epochs)
    correct = wide.to_numpy(dtype=bool)
    epochs = wide.columns.to_numpy()
    # Walk from the last epoch back: the run of True at the end starts at the last False + 1.
    tail = np.flip(np.cumprod(np.flip(correct, axis=1), axis=1), axis=1).astype(bool)  # (noisy, epochs)
    first = np.where(tail.any(axis=1), epochs[np.argmax(tail, axis=1)], -1)
    out = pd.DataFrame({"example_id": wide.index.to_numpy(), "memorized_from": first})
    out["memorized_from"] = out["memorized_from"].astype("Int64").mask(out["memorized_from"] < 0)
    return out.reset_index(drop=True)


def noisy_share(gradients: pd.DataFrame) -> pd.DataFrame:
    """The `gradients` table with `noisy_share = noisy_norm / (clean_norm + noisy_norm)`."""
    out = gradients.copy()
    out["noisy_share"] = out["noisy_norm"] / (out["clean_norm"] + out["noisy_norm"])
    return out


def sample_ids(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """All of 0..n-1 when n <= limit, else a sorted seeded sample of `limit` of them."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass(frozen=True)
class LiveResult:
    metrics: dict[str, float]  # clean_acc, noisy_acc, noisy_true_acc, test_acc (and losses)
    probabilities: np.ndarray  # (len(example_ids), K) softmax of the chosen examples
    sampled: bool  # True when the metrics come from a sample of a large run


def live_evaluation(
    model: nn.Module,
    items: list[Intervention],
    train_x: torch.Tensor,
    labels: Labels,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    example_ids: list[int],
    checkpoint=None,
    batch_size: int = 4096,
) -> LiveResult:
    """Accuracies of `model` inside `intervene(model, items)` and the chosen examples' probabilities.

    Runs with more than LIVE_TRAIN_LIMIT training or LIVE_TEST_LIMIT test examples are
    evaluated on a fixed seeded sample (the same for every call, so before/after compare).
    The model is bitwise unchanged afterwards.
    """
    train_ids = torch.as_tensor(sample_ids(len(train_x), LIVE_TRAIN_LIMIT), device=train_x.device)
    test_ids = torch.as_tensor(sample_ids(len(test_x), LIVE_TEST_LIMIT), device=test_x.device)
    chosen = torch.as_tensor(list(example_ids), dtype=torch.long, device=train_x.device)
    sub = Labels(labels.true[train_ids], labels.train[train_ids], labels.is_noisy[train_ids])
    with intervene(model, items, checkpoint=checkpoint):
        train_logits = predict(model, train_x[train_ids], batch_size)  # (n_train, K)
        test_logits = predict(model, test_x[test_ids], batch_size)  # (n_test, K)
        chosen_logits = predict(model, train_x[chosen], batch_size) if len(chosen) else train_logits[:0]
    metrics = population_metrics(train_logits, test_logits, sub, test_y[test_ids])
    probs = torch.softmax(chosen_logits, dim=1).cpu().numpy()  # (len(example_ids), K)
    return LiveResult(metrics, probs, len(train_ids) < len(train_x) or len(test_ids) < len(test_x))


def preset_of(config: dict) -> str | None:
    """The preset whose resolved config equals `config` (a manifest's) in every section the run
    recorded, ignoring the stages and where the data lives; None if the run was made with overrides.
    Sections added since the run was made (a new analysis) are not compared."""

    def comparable(d: dict, sections) -> dict:
        data = {k: v for k, v in d.get("data", {}).items() if k not in ("root", "download")}
        return {**{k: d.get(k) for k in sections if k != "stages"}, "data": data}

    target = comparable(config, config)
    for name in config_mod.PRESETS:
        try:
            if comparable(config_mod.resolve(name).to_dict(), config) == target:
                return name
        except config_mod.ConfigError:
            continue
    return None


def stage_command(config: dict, run_path: str) -> str:
    """The command that adds the stages a run lacks (it resumes, skipping complete ones). A run
    made before memloc had some analysis has no settings for it, and precompute refuses to
    resume a run whose config differs; such a run is recomputed into a new directory."""
    preset = preset_of(config)
    older = [section for section in config_mod.RunConfig().to_dict() if section not in config]
    if older:
        return (f"python -m precompute run --preset {preset or '<preset>'} --out {run_path}-new"
                f"  # this run predates the {', '.join(older)} settings: recompute it into a new directory")
    if preset is None:
        return f"python -m precompute run --out {run_path}  # plus the --preset/--set/--config it was created with"
    return f"python -m precompute run --preset {preset} --out {run_path}"


__all__ = ["memorized_from", "noisy_share", "sample_ids", "LiveResult", "live_evaluation", "preset_of", "stage_command"]
