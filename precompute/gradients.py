"""Gradient accounting in the `train` stage (PAPER.md section 1): per-epoch rows for the train loop.

`memloc.gradients.GradientAccounting` computes, per epoch, the clean/noisy/total gradient sums
during training (as the loop's backward strategy). `TrainAccounting` turns each epoch's sums
into rows of the `gradient_tensors` table, which the train loop keeps in its resume state next
to its own rows (one save, so the two never disagree about the epochs done), and at the end
gives the tables

- `gradient_tensors`: epoch, group, tensor, numel, clean_norm, noisy_norm, total_norm, cosine
  (norms are `||G_p|| / sqrt(numel(p))`);
- `gradients`: epoch, group, group_index, clean_norm, noisy_norm, total_norm, cosine (norms are
  the sums of the group's tensor rows, the cosine their mean).
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from memloc.data import Labels
from memloc.gradients import GradientAccounting, group_table, tensor_table
from memloc.store import RunError

TABLE = "gradient_tensors"  # the partial table it keeps in the train stage's resume state


class TrainAccounting:
    """Gradient accounting of one training run; a context manager (leaving removes its hooks)."""

    def __init__(self, model: nn.Module, labels: Labels):
        self.accounting = GradientAccounting(model, labels.train_labels, labels.is_noisy)
        self.backward = self.accounting

    def __enter__(self) -> "TrainAccounting":
        return self

    def __exit__(self, *exc) -> None:
        self.accounting.close()

    def epoch_rows(self, epoch: int) -> pd.DataFrame:
        """The `gradient_tensors` rows of the epoch just trained (its sums then restart)."""
        acc = self.accounting
        return tensor_table([epoch], acc.epoch_values()[None], acc.groups, acc.names, [p.numel() for p in acc.params])

    def tables(self, tensors: pd.DataFrame, epochs: int, run_name: str) -> dict[str, pd.DataFrame]:
        """`gradient_tensors` and `gradients` from the rows of all `epochs` epochs."""
        done = sorted(tensors["epoch"].unique().tolist()) if len(tensors) else []
        if done != list(range(1, epochs + 1)):
            raise RunError(f"run {run_name}: gradient accounting has epochs {done}, expected 1..{epochs}; "
                           "delete the run directory and run precompute again")
        return {TABLE: tensors, "gradients": group_table(tensors, list(self.accounting.model.layer_groups))}


__all__ = ["TABLE", "TrainAccounting"]
