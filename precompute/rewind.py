"""Stage `rewind`: layer rewinding on the final checkpoint (PAPER.md section 2).

Wires `memloc.rewinding` to the run store. Every layer group is rewound alone to every configured
epoch (`rewind.epochs`, default 0, 1, 2, 4, ..., last; BatchNorm statistics with it unless
`rewind.include_buffers=false`) and evaluated on the clean, noisy and test examples. Tables:

- `rewinding`: group, group_index, epoch, include_buffers, clean_acc, noisy_acc, noisy_true_acc, test_acc;
- `rewinding_examples`: group, epoch, example_id, memorized: per noisy example and group, at
  epoch 0 (or the earliest configured epoch), whether it is still predicted with its noisy label.

Both tables' rows so far are saved after each group, so an interrupted stage resumes with the
groups not yet done.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from memloc.rewinding import COLUMNS, EXAMPLE_COLUMNS, RewindEvaluator, grid_tables
from memloc.store import RunError
from precompute.stage import Resumable, StageContext, concat


def rewind_stage(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.rewind
    model = ctx.model()
    epochs = cfg.epochs_for(ctx.config.train)
    missing = sorted(set(epochs) - set(ctx.run.checkpoint_epochs()))
    if missing:
        raise RunError(f"run {ctx.run.name} has no checkpoint for rewind epoch(s) {missing}: run the train stage to the end, "
                       "or choose rewind.epochs among those train.keep_epochs keeps")
    example_epoch = epochs[0]  # 0 unless rewind.epochs leaves it out
    data = ctx.data
    evaluator = RewindEvaluator(model, ctx.checkpoint, data.train_x, ctx.labels, data.test_x, data.test_labels,
                                ctx.config.train.eval_batch_size, cfg.cache_mb << 20)

    state = Resumable(ctx, "rewind")
    tables, examples = state.parts("rewinding"), state.parts("rewinding_examples")
    done = set(tables[0]["group"]) if tables else set()
    groups = [g for g in model.layer_groups if g not in done]
    for group in tqdm(groups, desc="rewind", unit="group", disable=None):
        table, group_examples = grid_tables(model, evaluator.grid([group], epochs, cfg.include_buffers), ctx.labels, example_epoch)
        tables.append(table)
        examples.append(group_examples)
        state.append({"rewinding": table, "rewinding_examples": group_examples})

    table = concat(tables, COLUMNS).sort_values(["group_index", "epoch"], ignore_index=True)
    table["include_buffers"] = table["include_buffers"].astype(bool)
    state.finish({"rewinding": table, "rewinding_examples": concat(examples, EXAMPLE_COLUMNS)})
    at = table[table["epoch"] == example_epoch].dropna(subset="noisy_acc")
    if at.empty:  # no noisy example (data.noise_frac = 0): no memorization to lose
        return {"cells": len(table), f"epoch{example_epoch}_min_noisy_acc": None, "most_critical_group": None}
    critical = at.loc[at["noisy_acc"].idxmin()]
    return {"cells": len(table), f"epoch{example_epoch}_min_noisy_acc": round(float(critical["noisy_acc"]), 4),
            "most_critical_group": str(critical["group"])}
