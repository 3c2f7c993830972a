"""Stage `rewind`: layer rewinding on the final checkpoint (PAPER.md section 2).

Wires `memloc.rewinding` to the run store. Every layer group is rewound alone to every configured
epoch (`rewind.epochs`, default 0, 1, 2, 4, ..., last; BatchNorm statistics with it unless
`rewind.include_buffers=false`) and evaluated on the clean, noisy and test examples. Tables:

- `rewinding`: group, group_index, epoch, include_buffers, clean_acc, noisy_acc, noisy_true_acc, test_acc;
- `rewinding_examples`: group, epoch, example_id, memorized: per noisy example and group, at
  epoch 0 (or the earliest configured epoch), whether it is still predicted with its noisy label.

Progress is saved after each group (`run.write_state`), so an interrupted stage resumes with the
groups not yet done.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from memloc.rewinding import RewindEvaluator, grid_tables
from memloc.runs import build_model
from memloc.store import RunError
from precompute.context import StageContext

STATE = "rewind"  # name of the resume state in the run store


def final_model(ctx: StageContext, stage: str) -> tuple[torch.nn.Module, int]:
    """The model at the run's last checkpoint, in eval mode on the device, and that epoch."""
    epochs = ctx.run.checkpoint_epochs()
    if not epochs:
        raise RunError(f"run {ctx.run.name} has no checkpoints; the {stage} stage needs the train stage first")
    model = build_model(ctx.config, ctx.data)
    model.load_state_dict(ctx.run.read_checkpoint(epochs[-1], "cpu"))
    return model.to(ctx.device).eval(), epochs[-1]


def rewind_stage(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config.rewind
    model, _ = final_model(ctx, "rewind")
    epochs = cfg.epochs_for(ctx.config.train)
    missing = sorted(set(epochs) - set(ctx.run.checkpoint_epochs()))
    if missing:
        raise RunError(f"run {ctx.run.name} has no checkpoint for rewind epoch(s) {missing}; run the train stage to the end")
    example_epoch = epochs[0]  # 0 unless rewind.epochs leaves it out
    # Checkpoints are read once and kept on the host; intervene moves only the group's tensors.
    checkpoint = functools.cache(lambda epoch: ctx.run.read_checkpoint(epoch, "cpu"))
    data = ctx.data
    evaluator = RewindEvaluator(model, checkpoint, data.train_x, ctx.labels, data.test_x, data.test_y,
                                ctx.config.train.eval_batch_size, cfg.cache_mb << 20)

    tables: list[pd.DataFrame] = []
    memorized: dict[str, torch.Tensor] = {}
    if ctx.run.has_state(STATE):
        memorized, meta = ctx.run.read_state(STATE)
        tables = [pd.DataFrame(json.loads(meta["rows"]))]
    groups = [g for g in model.layer_groups if f"memorized.{g}" not in memorized]
    for group in tqdm(groups, desc="rewind", unit="group", disable=None):
        table, examples = grid_tables(model, evaluator.grid([group], epochs, cfg.include_buffers), ctx.labels, example_epoch)
        tables.append(table)
        memorized[f"memorized.{group}"] = torch.tensor(examples["memorized"].to_numpy(), dtype=torch.uint8)
        rows = pd.concat(tables, ignore_index=True)
        ctx.run.write_state(STATE, memorized, {"rows": rows.to_json(orient="records")})

    table = pd.concat(tables, ignore_index=True).sort_values(["group_index", "epoch"], ignore_index=True)
    noisy_ids = ctx.labels.is_noisy.nonzero().squeeze(1).cpu().numpy()
    examples = pd.concat([
        pd.DataFrame({"group": group, "epoch": example_epoch, "example_id": noisy_ids,
                      "memorized": memorized[f"memorized.{group}"].numpy().astype(bool)})
        for group in model.layer_groups
    ], ignore_index=True)
    table["include_buffers"] = table["include_buffers"].astype(bool)
    ctx.run.write_table("rewinding", table)
    ctx.run.write_table("rewinding_examples", examples)
    ctx.run.drop_state(STATE)
    at = table[table["epoch"] == example_epoch]
    critical = at.loc[at["noisy_acc"].idxmin()]
    return {"cells": len(table), f"epoch{example_epoch}_min_noisy_acc": round(float(critical["noisy_acc"]), 4),
            "most_critical_group": str(critical["group"])}
