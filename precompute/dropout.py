"""Stage `dropout`: train the example-tied dropout model and compare its modes (PAPER.md section 5)."""

from __future__ import annotations

from typing import Any

from memloc import dropout as dropout_mod
from memloc.runs import build_model
from memloc.store import RunError
from precompute.context import StageContext


def dropout_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the same architecture with example-tied dropout on the same data, noisy labels and
    schedule (checkpoints of the run store's `dropout` model); tables `dropout` (accuracy per
    mode: train, test, drop, and the main model as `plain`) and `dropout_examples`."""
    cfg = ctx.config
    if not ctx.run.is_complete("train"):
        raise RunError("stage dropout compares with the main model: run stage train first (stages = [\"train\", \"dropout\"])")
    plain = build_model(cfg, ctx.data).to(ctx.device)
    plain.load_state_dict(ctx.run.read_checkpoint(ctx.run.checkpoint_epochs()[-1], ctx.device))
    model = build_model(cfg, ctx.data, variant="dropout").to(ctx.device)
    dropout_mod.train_dropout_model(ctx.run, model, ctx.data, ctx.labels, dropout_mod.train_config(cfg), cfg.data.augment)
    result = dropout_mod.evaluate_modes(model, plain, ctx.data, ctx.labels, cfg.train.eval_batch_size)
    ctx.run.write_table("dropout", result.modes)
    ctx.run.write_table("dropout_examples", result.examples)
    ctx.run.drop_state(dropout_mod.STATE)
    return {f"{row['mode']}_{key}": round(float(row[key]), 4)
            for row in result.modes.to_dict("records") for key in ("noisy_acc", "clean_acc", "test_acc")
            if row["mode"] != "train" or key != "test_acc"}
