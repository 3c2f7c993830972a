"""Stage `example_gradients`: every training example's gradient norm per layer group.

Wires `memloc.example_gradients.example_gradient_norms` to the run store: at each checkpoint
of `gradients.example_epochs` (default: the epoch where the learning rate peaks, the middle and
the last epoch) it computes, for every training example with its training label, the norm of
the gradient of its own cross-entropy per layer group, BatchNorm in eval mode (see that
module), and writes the table `example_gradients` (example_id, epoch, group, grad_norm).
Each finished checkpoint is saved in the resume state, so an interrupted stage picks up there.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from memloc.example_gradients import example_gradient_norms
from memloc.runs import build_model
from memloc.store import RunError
from precompute.context import StageContext

STATE = "example_gradients"  # name of the resume state in the run store


def example_gradients_stage(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.config
    epochs = cfg.gradients.epochs_for(cfg.train)
    missing = sorted(set(epochs) - set(ctx.run.checkpoint_epochs()))
    if missing:
        raise RunError(f"run {ctx.run.name} has no checkpoints for epochs {missing}; "
                       "the example_gradients stage needs the train stage first")
    done: dict[int, torch.Tensor] = {}
    if ctx.run.has_state(STATE):
        tensors, meta = ctx.run.read_state(STATE, ctx.device)
        done = {e: tensors[f"epoch_{e}"] for e in json.loads(meta["epochs"])}
    model = build_model(cfg, ctx.data).to(ctx.device)
    n = ctx.data.num_train
    groups: list[str] = list(model.layer_groups)
    bar = tqdm(total=n * len(epochs), initial=n * len(done), desc="example gradients", unit="ex", disable=None)
    for epoch in epochs:
        if epoch in done:
            continue
        model.load_state_dict(ctx.run.read_checkpoint(epoch, ctx.device))
        groups, norms = example_gradient_norms(model, ctx.data.train_x, ctx.labels.train,
                                               cfg.gradients.chunk_size, progress=bar.update)
        done[epoch] = norms  # (N, G)
        ctx.run.write_state(STATE, {f"epoch_{e}": v for e, v in done.items()}, {"epochs": json.dumps(sorted(done))})
    bar.close()

    values = torch.stack([done[e] for e in epochs]).cpu().numpy()  # (E, N, G)
    g = len(groups)
    table = pd.DataFrame({
        "example_id": np.tile(np.repeat(np.arange(n, dtype=np.int64), g), len(epochs)),
        "epoch": np.repeat(np.asarray(epochs, dtype=np.int64), n * g),
        "group": np.tile(np.asarray(groups, dtype=object), len(epochs) * n),
        "grad_norm": values.reshape(-1),
    })
    ctx.run.write_table("example_gradients", table)
    ctx.run.drop_state(STATE)

    # Key number: at the last epoch, how much harder noisy examples pull than clean ones
    # (median over examples of the whole-model gradient norm).
    whole = np.sqrt((values[-1].astype(np.float64) ** 2).sum(1))  # (N,)
    noisy = ctx.labels.is_noisy.cpu().numpy()
    ratio = float(np.median(whole[noisy]) / np.median(whole[~noisy])) if noisy.any() and (~noisy).any() else float("nan")
    return {"epochs": epochs, "noisy_over_clean_median_norm": round(ratio, 3)}
