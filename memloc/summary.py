"""Key numbers of runs, and of a sweep with the seeds folded: the summary of `precompute summarize`.

`key_numbers(run)` reads one run's tables and returns its key numbers by name (a stage the run
did not run contributes none; `numbers_from(tables, peak_epoch)` is the same on tables in hand):

- `memorized`, `clean_acc`, `test_acc`: the final model's memorization (noisy examples predicted
  with their noisy label), clean and test accuracy (table `training`, last epoch);
- `noisy_share_at_peak`, `cosine_at_peak`: at the epoch where the learning rate peaks (nearest
  recorded epoch), the noisy examples' share of the gradient norm, summed over the layer groups
  (sum of noisy norms / sum of clean and noisy norms), and the clean-vs-noisy cosine averaged
  over the groups (table `gradients`);
- `rewound.<group>`, `retrained.<group>`: memorization left after rewinding that group to epoch
  0 (table `rewinding`, its earliest epoch) and after retraining it on clean examples (table
  `retraining`, its last epoch);
- `noisy_units_mean`, `noisy_units_median`, `noisy_flipped_share`,
  `noisy_random_flipped_share` and the same for clean examples: greedy flipping
  (`memloc.flipping.summary`);
- `drop_memorized`, `drop_clean_acc`, `drop_test_acc`: the example-tied dropout model in drop
  mode (table `dropout`).

`summary_table(points, axes)` is the long table `summary.parquet` of a sweep: one row per
metric and point (`scope` = "point", `n` = 1, `mean` = the value, `std` = NaN) and one per metric
and *setting*, the points that differ only in a seed axis (`memloc.grid.seed_axes`: grid keys
whose last part names a seed, such as `train.seed`), folded: mean, sample standard deviation
(ddof 1; NaN for one point) and n over the points that have the number. The grid axes are
columns (a list value as its point-name form, `64-64`); a setting's row has none in its seed
axes, and `point` is the setting's name.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from memloc import flipping
from memloc.grid import format_value, point_name, seed_axes
from memloc.overrides import from_dict
from memloc.store import Run

#: Columns of `summary.parquet` after the grid axes.
COLUMNS = ["scope", "point", "metric", "mean", "std", "n"]


#: The tables `key_numbers` reads.
TABLES = ("training", "gradients", "rewinding", "retraining", "flipping", "dropout")


def run_tables(run: Run) -> dict[str, pd.DataFrame]:
    """The run's tables among `TABLES` that it has, by name."""
    have = set(run.tables())
    return {name: run.read_table(name) for name in TABLES if name in have}


def key_numbers(run: Run) -> dict[str, float]:
    """The key numbers of one run (see the module docstring), from its own tables."""
    cfg = from_dict(run.manifest()["config"])
    return numbers_from(run_tables(run), cfg.train.peak_epoch)


def numbers_from(tables: Mapping[str, pd.DataFrame], peak_epoch: float) -> dict[str, float]:
    """The key numbers of a run's tables (by name; a missing table contributes none); the
    learning rate peaks at `peak_epoch`. Groups come in the order of their `group_index`."""
    out: dict[str, float] = {}
    if "training" in tables:
        last = tables["training"].iloc[-1]
        out.update(memorized=last["noisy_acc"], clean_acc=last["clean_acc"], test_acc=last["test_acc"])
    if "gradients" in tables:
        grads = tables["gradients"]
        epochs = grads["epoch"].unique()
        peak = epochs[np.argmin(np.abs(epochs - peak_epoch))]
        at = grads[grads["epoch"] == peak]
        out["noisy_share_at_peak"] = at["noisy_norm"].sum() / (at["clean_norm"].sum() + at["noisy_norm"].sum())
        out["cosine_at_peak"] = at["cosine"].mean()
    if "rewinding" in tables:
        rw = tables["rewinding"]
        at = rw[rw["epoch"] == rw["epoch"].min()].sort_values("group_index")
        out.update({f"rewound.{g}": v for g, v in zip(at["group"], at["noisy_acc"])})
    if "retraining" in tables:
        rt = tables["retraining"]
        rt = rt[rt["group_index"] >= 0].sort_values(["group_index", "epoch"])
        last = rt.groupby("group", sort=False).tail(1)
        out.update({f"retrained.{g}": v for g, v in zip(last["group"], last["noisy_acc"])})
    if "flipping" in tables:
        numbers = flipping.summary(tables["flipping"])
        out.update({k: v for k, v in numbers.items() if not k.endswith("_examples") and v is not None})
    if "dropout" in tables:
        drop = tables["dropout"].set_index("mode").loc["drop"]
        out.update(drop_memorized=drop["noisy_acc"], drop_clean_acc=drop["clean_acc"], drop_test_acc=drop["test_acc"])
    return {k: float(v) for k, v in out.items()}


def summary_table(points: Sequence[tuple[str, dict[str, Any], dict[str, float]]], axes: Sequence[str]) -> pd.DataFrame:
    """The long summary of a sweep from (point key, its grid values by axis, its key numbers)."""
    axes = list(axes)
    seeds = seed_axes(axes)
    rows = []
    for key, values, numbers in points:
        cells = {a: format_value(values[a]) if isinstance(values.get(a), (list, tuple, dict)) else values.get(a) for a in axes}
        for metric, value in numbers.items():
            rows.append({**cells, "scope": "point", "point": key, "metric": metric, "mean": value, "std": math.nan, "n": 1})
    table = pd.DataFrame(rows, columns=[*axes, *COLUMNS])
    folded = []
    kept = [a for a in axes if a not in seeds]
    if len(table):
        by = [*kept, "metric"]
        keys = table[by].astype(str).agg("\x1f".join, axis=1)  # values of any type, None included
        for _, part in table.groupby(keys, sort=False):
            values = part["mean"].to_numpy(dtype=np.float64)
            first = part.iloc[0]
            folded.append({**{a: first[a] for a in kept}, **{a: None for a in seeds}, "scope": "setting",
                           "point": point_name(first.to_dict(), kept), "metric": first["metric"],
                           "mean": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                           "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan,
                           "n": int(np.isfinite(values).sum())})
    out = pd.concat([table, pd.DataFrame(folded, columns=table.columns)], ignore_index=True)
    out["n"] = out["n"].astype(np.int64)
    return out


_LABELS = {
    "memorized": "memorized (noisy label), final model",
    "clean_acc": "clean accuracy, final model",
    "test_acc": "test accuracy, final model",
    "noisy_share_at_peak": "noisy share of the gradient norm at the lr peak",
    "cosine_at_peak": "cosine(clean, noisy gradient) at the lr peak",
    "noisy_units_mean": "units to flip a noisy example (mean)",
    "noisy_units_median": "units to flip a noisy example (median)",
    "clean_units_mean": "units to flip a clean example (mean)",
    "clean_units_median": "units to flip a clean example (median)",
    "noisy_flipped_share": "noisy examples flipped within the cap",
    "clean_flipped_share": "clean examples flipped within the cap",
    "noisy_random_flipped_share": "noisy examples flipped by random units",
    "clean_random_flipped_share": "clean examples flipped by random units",
    "drop_memorized": "memorized in drop mode (example-tied dropout)",
    "drop_clean_acc": "clean accuracy in drop mode",
    "drop_test_acc": "test accuracy in drop mode",
}


def metric_label(metric: str) -> str:
    """How a key number reads on a page: `rewound.fc1` -> "memorized after rewinding fc1 to epoch 0"."""
    kind, _, group = metric.partition(".")
    if kind == "rewound":
        return f"memorized after rewinding {group} to epoch 0"
    if kind == "retrained":
        return f"memorized after retraining {group} on clean examples"
    return _LABELS.get(metric, metric)


__all__ = ["COLUMNS", "TABLES", "run_tables", "key_numbers", "numbers_from", "summary_table", "metric_label"]
