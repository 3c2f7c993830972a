"""Stage `retrain`: layer retraining from the initialization on clean examples (PAPER.md section 3).

Wires `memloc.retraining` to the run store: for each layer group, the final model with that group
reset to epoch 0, everything else frozen, retrained on the clean examples with `retrain.*`
settings. Table `retraining`: group, group_index, epoch (0 = after the reset, before retraining),
clean_acc, noisy_acc, noisy_true_acc, test_acc. The control row (group "none", group_index -1,
epoch 0) is the final model itself, nothing reset or retrained: the level each group's curve is
read against.

Progress is saved after each group (`run.write_state`), so an interrupted stage resumes with the
groups not yet done.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from tqdm import tqdm

from memloc.evaluate import evaluate
from memloc.retraining import COLUMNS, METRICS, RetrainData, retrain_group
from precompute.context import StageContext
from precompute.rewind import final_model

STATE = "retrain"  # name of the resume state in the run store


def retrain_stage(ctx: StageContext) -> dict[str, Any]:
    cfg, train = ctx.config.retrain, ctx.config.train
    model, _ = final_model(ctx, "retrain")
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    init_state = ctx.run.read_checkpoint(0, ctx.device)
    data = RetrainData(ctx.data.train_x, ctx.labels, ctx.data.test_x, ctx.data.test_y)

    if ctx.run.has_state(STATE):
        rows = json.loads(ctx.run.read_state(STATE)[1]["rows"])
    else:
        control = evaluate(model, data.train_x, data.labels, data.test_x, data.test_y, train.eval_batch_size)
        rows = [{"group": "none", "group_index": -1, "epoch": 0, **{k: control[k] for k in METRICS}}]
    done = {row["group"] for row in rows}
    groups = [(i, g) for i, g in enumerate(model.layer_groups) if g not in done]
    for index, group in tqdm(groups, desc="retrain", unit="group", disable=None):
        model.load_state_dict(final_state)
        for row in retrain_group(model, init_state, group, data, cfg, cfg.batch_size or train.batch_size,
                                 train.seed, train.eval_batch_size, cfg.cache_mb << 20):
            rows.append({"group": group, "group_index": index, **row})
        ctx.run.write_state(STATE, {}, {"rows": json.dumps(rows)})

    table = pd.DataFrame(rows, columns=COLUMNS)
    ctx.run.write_table("retraining", table)
    ctx.run.drop_state(STATE)
    last = table[table["group_index"] >= 0].groupby("group", sort=False).last()
    return {"groups": len(last), "epochs_run": int(table["epoch"].max()),
            "max_final_noisy_acc": round(float(last["noisy_acc"].max()), 4),
            "min_final_noisy_acc": round(float(last["noisy_acc"].min()), 4)}
