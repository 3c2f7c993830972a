"""Stage `retrain`: layer retraining from the initialization on clean examples (PAPER.md section 3).

Wires `memloc.retraining` to the run store: for each layer group, the final model with that group
reset to epoch 0, everything else frozen, retrained on the clean examples with `retrain.*`
settings. Table `retraining`: group, group_index, epoch (0 = after the reset, before retraining),
clean_acc, noisy_acc, noisy_true_acc, test_acc. The control row (group "none", group_index -1,
epoch 0) is the final model itself, nothing reset or retrained: the level each group's curve is
read against.

The rows so far are saved after each group, so an interrupted stage resumes with the groups not
yet done.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from tqdm import tqdm

from memloc.evaluate import ACCURACIES, evaluate
from memloc.retraining import COLUMNS, RetrainData, retrain_group
from precompute.stage import Resumable, StageContext


def retrain_stage(ctx: StageContext) -> dict[str, Any]:
    cfg, train = ctx.config.retrain, ctx.config.train
    model = ctx.model()
    data = RetrainData(ctx.data.train_x, ctx.labels, ctx.data.test_x, ctx.data.test_labels)
    state = Resumable(ctx, "retrain")
    saved = state.table("retraining")
    if saved is not None:
        rows = saved.to_dict("records")
    else:  # the control row: the final model itself, saved with the first group
        control = evaluate(model, data.train_x, data.labels, data.test_x, data.test_labels, train.eval_batch_size)
        rows = [{"group": "none", "group_index": -1, "epoch": 0, **{k: control[k] for k in ACCURACIES}}]
    done = {row["group"] for row in rows}
    saved_rows = len(rows) if saved is not None else 0  # rows already in the resume state
    groups = [(i, g) for i, g in enumerate(model.layer_groups) if g not in done]
    for index, group in tqdm(groups, desc="retrain", unit="group", disable=None):
        # The model is the final model again after each group (retraining runs in `frozen`).
        for row in retrain_group(model, ctx.checkpoint(0), group, data, cfg, cfg.batch_size or train.batch_size,
                                 train.seed, train.eval_batch_size, cfg.cache_mb << 20):
            rows.append({"group": group, "group_index": index, **row})
        state.append({"retraining": pd.DataFrame(rows[saved_rows:], columns=COLUMNS)})
        saved_rows = len(rows)

    table = pd.DataFrame(rows, columns=COLUMNS)
    state.finish({"retraining": table})
    last = table[table["group_index"] >= 0].groupby("group", sort=False).last()
    return {"groups": len(last), "epochs_run": int(table["epoch"].max()),
            "max_final_noisy_acc": round(float(last["noisy_acc"].max()), 4),
            "min_final_noisy_acc": round(float(last["noisy_acc"].min()), 4)}
