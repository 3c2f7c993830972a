"""Stage `dropout`: train the example-tied dropout variant and compare its modes (PAPER.md section 5)."""

from __future__ import annotations

from typing import Any

from memloc import dropout as dropout_mod
from memloc.runs import build_model
from memloc.store import RunError
from precompute.stage import Resumable, StageContext
from precompute.train import train_model


def dropout_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the run's architecture with example-tied dropout on the same data, noisy labels,
    initial weights and schedule as the plain variant (with the same resumable loop, into the
    dropout variant's checkpoints); tables `dropout` (accuracy per mode: train, test, drop, and
    the plain variant as `plain`) and `dropout_examples`."""
    cfg = ctx.config
    if not ctx.run.is_complete("train"):
        raise RunError("stage dropout compares with the plain model: run stage train first (stages = [\"train\", \"dropout\"])")
    plain = ctx.model()
    model = build_model(cfg, ctx.data, variant="dropout").to(ctx.device)
    state = Resumable(ctx, "dropout")
    train_model(ctx, state, model, cfg.dropout.train_settings(cfg.train), variant="dropout", evaluate_epochs=False)
    result = dropout_mod.evaluate_modes(model, plain, ctx.data, ctx.labels, cfg.train.eval_batch_size)
    state.finish({"dropout": result.modes, "dropout_examples": result.examples})
    return {f"{row['mode']}_{key}": round(float(row[key]), 4)
            for row in result.modes.to_dict("records") for key in ("noisy_acc", "clean_acc", "test_acc")
            if row["mode"] != "train" or key != "test_acc"}
