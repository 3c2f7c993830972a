"""Stage `example_gradients`: every training example's gradient norm per layer group.

Wires `memloc.example_gradients.example_gradient_norms` to the run store: at each checkpoint
of `gradients.example_epochs` (default: the epoch where the learning rate peaks, the middle and
the last epoch) it computes, for every training example with its training label, the norm of
the gradient of its own cross-entropy per layer group, BatchNorm in eval mode (see that
module), and writes the table `example_gradients` (example_id, epoch, group, grad_norm).
Each finished checkpoint's rows are saved in the resume state, so an interrupted stage picks
up at the next one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

from memloc.example_gradients import COLUMNS, example_gradient_norms, example_table
from memloc.store import RunError
from precompute.stage import Resumable, StageContext, concat


def example_gradients_stage(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config
    epochs = cfg.gradients.epochs_for(cfg.train)
    missing = sorted(set(epochs) - set(ctx.run.checkpoint_epochs()))
    if missing:
        raise RunError(f"run {ctx.run.name} has no checkpoints for epochs {missing}; "
                       "the example_gradients stage needs the train stage first (and those epochs among train.keep_epochs)")
    state = Resumable(ctx, "example_gradients")
    parts = state.parts("example_gradients")
    done = set(parts[0]["epoch"].unique().tolist()) if parts else set()  # checkpoints already done
    n = ctx.data.num_train
    bar = tqdm(total=n * len(epochs), initial=n * len(done), desc="example gradients", unit="ex", disable=None)
    for epoch in epochs:
        if epoch in done:
            continue
        model = ctx.model(epoch)
        groups, norms = example_gradient_norms(model, ctx.data.train_x, ctx.labels.train_labels,
                                               cfg.gradients.chunk_size, progress=bar.update)
        parts.append(example_table(epoch, groups, norms))
        state.append({"example_gradients": parts[-1]})
    bar.close()
    table = concat(parts, COLUMNS)
    state.finish({"example_gradients": table})

    # Key number: at the last epoch, how much harder noisy examples pull than clean ones
    # (median over examples of the whole-model gradient norm).
    last = table.loc[table["epoch"] == epochs[-1], "grad_norm"].to_numpy().reshape(n, -1)  # (N, G), example-major
    whole = np.sqrt((last.astype(np.float64) ** 2).sum(1))  # (N,)
    noisy = ctx.labels.is_noisy.cpu().numpy()
    ratio = float(np.median(whole[noisy]) / np.median(whole[~noisy])) if noisy.any() and (~noisy).any() else float("nan")
    return {"epochs": epochs, "noisy_over_clean_median_norm": round(ratio, 3)}
