"""What every stage of `precompute run` is given, and the one way a stage resumes.

A stage is a function of a `StageContext`: the opened run (config, data, labels, device, and
the final model from `ctx.model()`), whose run directory the runner holds locked. It keeps its
progress in a `Resumable`:

    state = Resumable(ctx, "rewind")
    parts = state.parts("rewinding")          # the rows an interrupted run saved: [] or [table]
    for group in groups_not_done:             # compute what is missing, piece by piece
        rows = ...
        state.append({"rewinding": rows})     # saved after each piece
        parts.append(rows)
    state.finish({"rewinding": concat(parts, COLUMNS)})   # the stage's tables; state dropped

Partial tables are Parquet files under the run's `state/`, written and read through the run
store like every other file (atomic, checksummed). They only grow: one `append` adds the new
rows of one or more tables (and replaces the stage's tensors, e.g. SGD momentum) at once, and
costs only those rows. A stage that resumes from them computes the missing pieces exactly as
an uninterrupted run would, so its tables come out bitwise the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from memloc.runs import OpenRun


@dataclass
class StageContext(OpenRun):
    """The opened run a stage writes into (its `run` is locked by the runner)."""


class Resumable:
    """The resume state of one stage: what an interrupted run of it saved, and saving more."""

    def __init__(self, ctx: StageContext, stage: str):
        self.run, self.stage = ctx.run, stage
        saved = ctx.run.read_state(stage, ctx.device)
        self.tables: dict[str, pd.DataFrame] = dict(saved.tables) if saved else {}
        self.tensors: dict[str, torch.Tensor] = dict(saved.tensors) if saved else {}

    def table(self, name: str) -> pd.DataFrame | None:
        """The partial table `name` saved by an interrupted run, or None."""
        return self.tables.get(name)

    def parts(self, name: str) -> list[pd.DataFrame]:
        """The saved partial table as a list of zero or one frames, to extend and concatenate."""
        return [self.tables[name]] if name in self.tables else []

    def append(self, rows: dict[str, pd.DataFrame], tensors: dict[str, torch.Tensor] | None = None,
               **progress) -> None:
        """Save the next rows of the partial tables (and the stage's tensors, replacing the last);
        `progress` (e.g. `epochs_done=3`) goes into the stage's record in the manifest."""
        self.run.append_state(self.stage, rows, tensors, progress)

    def restart(self) -> None:
        """Forget what was saved (the stage starts over, e.g. when its targets changed)."""
        self.run.drop_state(self.stage)
        self.tables, self.tensors = {}, {}

    def finish(self, tables: dict[str, pd.DataFrame]) -> None:
        """Write the stage's final tables, then drop its resume state."""
        for name, table in tables.items():
            self.run.write_table(name, table)
        self.run.drop_state(self.stage)


def concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """The rows of `parts` in order, as one table with `columns` (also when there are none)."""
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


__all__ = ["StageContext", "Resumable", "concat"]
