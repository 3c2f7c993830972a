"""Stage `train`, and the resumable training loop that stage `dropout` uses too.

`train_model` trains a freshly initialized model epoch by epoch (`memloc.train.train_epoch`)
and keeps every epoch in the run: after each epoch the checkpoint of the model's variant, then
the stage's resume state (SGD momentum and the partial tables `training`, `example_training`
and, with gradient accounting, `gradient_tensors`), all of it in one save. With
`train.keep_epochs` the checkpoints it does not keep are deleted once the next one is saved. An interrupted run
continues after the last epoch whose resume state is in place, drawing the same batches, so
the result is bitwise the same on the CPU.

Stage `train` trains the run's plain variant with label noise and writes the tables `training`,
`example_training` and, with `gradients.accounting` (on by default), `gradients` and
`gradient_tensors` (`precompute/gradients.py`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from memloc.evaluate import ACCURACIES, evaluate
from memloc.runs import build_model
from memloc.train import (EXAMPLE_COLUMNS, TrainSettings, example_rows, make_optimizer, mean_backward,
                          momentum_state, restore_momentum, train_epoch)
from precompute.gradients import TABLE as ACCOUNTING_TABLE
from precompute.gradients import TrainAccounting
from precompute.stage import Resumable, StageContext, concat


def train_model(
    ctx: StageContext,
    state: Resumable,
    model: nn.Module,
    settings: TrainSettings,
    variant: str = "plain",
    accounting: TrainAccounting | None = None,
    evaluate_epochs: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Train `model` (freshly initialized) as the stage of `state`, one checkpoint of `variant`
    per epoch, resuming what an interrupted run saved in `state`. Returns the tables `training`,
    `example_training` and the accounting's `gradient_tensors` rows (None without accounting).

    With `evaluate_epochs`, each epoch's `training` row holds `memloc.evaluate.evaluate`'s
    accuracies after the epoch; a model with example-tied dropout has no single way to be
    evaluated (its modes answer different questions), so the dropout stage turns this off and
    evaluates the modes once, after training.
    """
    run, data, labels = ctx.run, ctx.data, ctx.labels
    n = data.num_train
    optimizer = make_optimizer(model.parameters(), settings)
    stage = state.stage

    def metrics() -> dict[str, float]:
        if not evaluate_epochs:
            return {}
        return evaluate(model, data.train_x, labels, data.test_x, data.test_labels, settings.eval_batch_size)

    saved = state.table("training")
    if saved is not None:
        rows = saved.to_dict("records")
        done = int(saved["epoch"].max())
        model.load_state_dict(run.read_checkpoint(done, ctx.device, variant))
        restore_momentum(model, optimizer, state.tensors)
    else:
        done = 0
        run.write_checkpoint(0, model.state_dict(), variant)
        rows = [{"epoch": 0, "lr": 0.0, "train_loss": float("nan"), "seconds": 0.0, **metrics()}]
    saved_rows = len(rows) if saved is not None else 0  # `training` rows already in the resume state
    keep = set(ctx.config.train.kept_epochs(settings.epochs))  # the checkpoint policy
    dropping = len(keep) < settings.epochs + 1  # the policy leaves some checkpoints out
    examples, gradients = state.parts("example_training"), state.parts(ACCOUNTING_TABLE)  # lists of pieces
    backward = accounting.backward if accounting else mean_backward

    # disable=None: a bar with rate and ETA on a terminal, quiet otherwise (CI, logs).
    bar = tqdm(range(done + 1, settings.epochs + 1), desc=stage, unit="epoch", initial=done, total=settings.epochs, disable=None)
    for epoch in bar:
        t0 = time.perf_counter()
        stats = train_epoch(model, optimizer, data, labels.train_labels, settings, epoch, ctx.config.data.augment, backward)
        row = metrics()
        rows.append({"epoch": epoch, "lr": settings.last_lr(epoch, n), "train_loss": stats.loss.mean().item(),
                     "seconds": time.perf_counter() - t0, **row})
        new = {"training": pd.DataFrame(rows[saved_rows:]), "example_training": example_rows(epoch, stats)}
        saved_rows = len(rows)
        if accounting:
            new[ACCOUNTING_TABLE] = accounting.epoch_rows(epoch)
            gradients.append(new[ACCOUNTING_TABLE])
        examples.append(new["example_training"])
        run.write_checkpoint(epoch, model.state_dict(), variant)
        state.append(new, momentum_state(model, optimizer), epochs_done=epoch)
        # Checkpoints the policy does not keep go once a later one is in place (resume needs the latest).
        dropped = [e for e in run.checkpoint_epochs(variant) if e < epoch and e not in keep] if dropping else []
        if dropped:
            run.drop_checkpoints(dropped, variant)
        if row:
            bar.set_postfix(memorized=f"{row['noisy_acc']:.3f}", clean=f"{row['clean_acc']:.3f}", test=f"{row['test_acc']:.3f}")
        else:
            bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}")
    bar.close()
    return pd.DataFrame(rows), concat(examples, EXAMPLE_COLUMNS), (pd.concat(gradients, ignore_index=True) if gradients else None)


def train_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the plain variant with label noise, keeping every epoch's checkpoint; tables
    `training`, `example_training`, and with `gradients.accounting` `gradients` and
    `gradient_tensors`."""
    cfg = ctx.config
    model = build_model(cfg, ctx.data).to(ctx.device)
    accounting = TrainAccounting(model, ctx.labels) if cfg.gradients.accounting else None
    state = Resumable(ctx, "train")
    with accounting or contextlib.nullcontext():
        training, examples, gradients = train_model(ctx, state, model, cfg.train, accounting=accounting)
    tables = {"training": training, "example_training": examples}
    if accounting:
        tables.update(accounting.tables(gradients, cfg.train.epochs, ctx.run.name))
    state.finish(tables)
    last = training.iloc[-1]
    return {key: round(float(last[key]), 4) for key in ACCURACIES}
