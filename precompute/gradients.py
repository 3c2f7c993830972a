"""Gradient accounting in the `train` stage (PAPER.md section 1): wiring to the run store.

`memloc.gradients.GradientAccounting` computes, per epoch, the clean/noisy/total gradient sums
during training. This module keeps its per-epoch numbers in the run's resume state (so an
interrupted training keeps them) and writes the tables

- `gradient_tensors`: epoch, group, tensor, numel, clean_norm, noisy_norm, total_norm, cosine
  (norms are `||G_p|| / sqrt(numel(p))`);
- `gradients`: epoch, group, group_index, clean_norm, noisy_norm, total_norm, cosine (norms are
  the sums of the group's tensor rows, the cosine their mean).

The state is written in `train_run`'s `on_epoch`, before the training's own state, and dropped
after it, so it is never behind the training: on resume, rows of the epochs training repeats
are replaced.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from memloc.gradients import GradientAccounting, group_table, tensor_table
from memloc.store import RunError
from precompute.context import StageContext

STATE = "gradients"  # name of the resume state in the run store


class TrainAccounting:
    """Accounting for one `train` stage; does nothing when `gradients.accounting` is off.

    `hooks` are the keyword arguments for `train_run` (`backward`, `on_epoch`); leave the
    `with` block after training, then `write_tables()`, then (after the training's state is
    dropped) `drop_state()`.
    """

    def __init__(self, ctx: StageContext, model: nn.Module):
        self.run = ctx.run
        self.enabled = ctx.config.gradients.accounting
        self.epochs_total = ctx.config.train.epochs
        self.hooks: dict = {}
        if not self.enabled:
            return
        self.accounting = GradientAccounting(model, ctx.labels.train, ctx.labels.is_noisy)
        self.hooks = {"backward": self.accounting, "on_epoch": self.on_epoch}
        self.epochs: list[int] = []
        self.values = np.zeros((0, len(self.accounting.params), 4))  # (epochs, P, 4)
        if self.run.has_state(STATE):
            tensors, meta = self.run.read_state(STATE)
            self.epochs = json.loads(meta["epochs"])
            self.values = tensors["values"].numpy()

    def __enter__(self) -> "TrainAccounting":
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.accounting.close()

    def on_epoch(self, epoch: int) -> None:
        """Close the epoch's sums and save the rows so far (replacing any of `epoch` or later)."""
        keep = [i for i, e in enumerate(self.epochs) if e < epoch]
        self.epochs = [self.epochs[i] for i in keep] + [epoch]
        self.values = np.concatenate([self.values[keep], self.accounting.epoch_values()[None]])
        self.run.write_state(STATE, {"values": torch.from_numpy(self.values)}, {"epochs": json.dumps(self.epochs)})

    def write_tables(self) -> None:
        if not self.enabled:
            return
        if self.epochs != list(range(1, self.epochs_total + 1)):
            raise RunError(f"run {self.run.name}: gradient accounting has epochs {self.epochs}, expected 1..{self.epochs_total}; "
                           "delete the run directory and run precompute again")
        acc = self.accounting
        tensors = tensor_table(self.epochs, self.values, acc.groups, acc.names, [p.numel() for p in acc.params])
        self.run.write_table("gradient_tensors", tensors)
        self.run.write_table("gradients", group_table(tensors, list(acc.model.layer_groups)))

    def drop_state(self) -> None:
        if self.enabled:
            self.run.drop_state(STATE)
