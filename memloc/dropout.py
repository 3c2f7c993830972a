"""Example-tied dropout: memorization put into units chosen in advance (PAPER.md section 5).

A second model of the run's architecture is trained on the same data, noisy labels, batch
order and schedule as the run's main model, with an `ExampleTiedDropout` layer after each
chosen block (`models.example_tied_dropout`): a few *generalization* units are always on, and
each training example also uses its own fixed random subset of the *memorization* units. The
paper's finding is that the noisy labels end up stored in the memorization units: evaluated in
*drop* mode (memorization units off) the model no longer predicts the noisy labels, while clean
training and test accuracy stay.

This module trains that model (with the main model's resumable loop, one checkpoint per epoch
under the run store's `dropout` model) and evaluates it in three modes, next to the run's plain model:

- `train`: each training example through its own mask, i.e. the model as trained;
- `test`: memorization units scaled by `p_mem`;
- `drop`: memorization units zeroed, generalization units scaled by `(p_gen + p_mem) / p_gen`;
- `plain`: the main model of the run (no dropout), for comparison.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch
from torch import nn

from memloc.config import RunConfig, TrainConfig
from memloc.data import Dataset
from memloc.evaluate import Labels, population_metrics
from memloc.store import Run
from memloc.train import TrainingResult, train_run
from models.example_tied_dropout import dropout_mode

STATE = "dropout"  # name of the resume state in the run store
CHECKPOINTS = "dropout"  # the run store's model name for the dropout model's checkpoints
MODES = ("train", "test", "drop")
METRICS = ("clean_acc", "noisy_acc", "noisy_true_acc", "test_acc")


def train_config(cfg: RunConfig) -> TrainConfig:
    """The main model's training settings, with `dropout.epochs` if set."""
    return dataclasses.replace(cfg.train, epochs=cfg.dropout.epochs or cfg.train.epochs)


def train_dropout_model(run: Run, model: nn.Module, data: Dataset, labels: Labels, cfg: TrainConfig,
                        augment_batches: bool = False) -> TrainingResult:
    """Train the (freshly initialized) dropout model, one checkpoint per epoch under the run
    store's `dropout` model, resumable (resume state `dropout`).

    The loop is the main model's (`memloc.train.train_run`), so batches, schedule and optimizer
    are the same; the batch's example ids reach the dropout layers through it. Epochs are not
    evaluated on their own: `evaluate_modes` evaluates the trained model in each mode.
    """
    return train_run(run, model, data, labels, cfg, augment_batches,
                     name=STATE, checkpoints=CHECKPOINTS, evaluate_epochs=False)


@torch.no_grad()
def predict_mode(model: nn.Module, x: torch.Tensor, mode: str | None, batch_size: int = 4096,
                 example_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (N, K) in eval mode; `mode` is the dropout mode (None: a model without dropout).
    Mode `train` needs the `example_ids` (N,) of the rows of `x`, whose masks it applies."""
    if mode == "train" and example_ids is None:
        raise ValueError("mode 'train' applies each example's own mask: pass example_ids")
    was_training = model.training
    model.eval()
    try:
        if mode is None:
            return torch.cat([model(xb) for xb in x.split(batch_size)])
        ids = example_ids.split(batch_size) if mode == "train" else [None] * len(x.split(batch_size))
        with dropout_mode(model, mode):
            return torch.cat([model(xb, example_ids=ib) for xb, ib in zip(x.split(batch_size), ids)])
    finally:
        model.train(was_training)


@dataclasses.dataclass
class DropoutResult:
    """Tables `dropout` (one row per mode) and `dropout_examples` (one row per example and mode)."""

    modes: pd.DataFrame
    examples: pd.DataFrame = dataclasses.field(repr=False)


def evaluate_modes(dropout_model: nn.Module, plain_model: nn.Module, data: Dataset, labels: Labels,
                   batch_size: int = 4096) -> DropoutResult:
    """Accuracy per population (clean, noisy against noisy labels, noisy against true labels,
    test) and each training example's prediction, for the dropout model in modes train, test
    and drop and for the plain model (mode `plain`)."""
    train_ids = torch.arange(data.num_train, device=data.train_x.device)  # (N,)
    rows, examples = [], []
    for mode in (*MODES, "plain"):
        model, dropout = (plain_model, None) if mode == "plain" else (dropout_model, mode)
        train_logits = predict_mode(model, data.train_x, dropout, batch_size, train_ids)  # (N, K)
        # Test examples own no masks, so mode train has no test accuracy (NaN).
        test_logits = None if mode == "train" else predict_mode(model, data.test_x, dropout, batch_size)
        metrics = population_metrics(train_logits, train_logits[:0] if test_logits is None else test_logits,
                                     labels, data.test_y[:0] if test_logits is None else data.test_y)
        rows.append({"mode": mode, **{key: metrics[key] for key in METRICS}})
        prediction = train_logits.argmax(1)  # (N,)
        examples.append(pd.DataFrame({
            "example_id": np.arange(data.num_train, dtype=np.int64),
            "mode": mode,
            "prediction": prediction.cpu().numpy().astype(np.int64),
            "correct": (prediction == labels.train).cpu().numpy(),
        }))
    return DropoutResult(pd.DataFrame(rows), pd.concat(examples, ignore_index=True))
