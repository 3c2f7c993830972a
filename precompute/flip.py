"""Stage `flip`: neuron-level localization by greedy flipping (PAPER.md section 4).

Wires `memloc.flipping` to the run store: on the final checkpoint it flips the configured
examples (memorized noisy and correctly predicted clean ones, or a list of ids), evaluates the
collateral accuracy of each edit and of its random control, and writes the tables

- `flipping`: one row per example (see `memloc.flipping.flip_table`);
- `flip_units`: per unit, how many flipped examples' flip sets contain it.

Progress is saved every `flip.save_every` targets (`run.write_state`), so an interrupted stage
resumes with the targets not yet done.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memloc import flipping
from memloc.config import ConfigError
from memloc.evaluate import predict
from memloc.runs import build_model
from memloc.store import RunError
from precompute.context import StageContext

STATE = "flip"  # name of the resume state in the run store

# Table columns kept in the resume state as tensors (kind and units are rebuilt).
_INT_COLUMNS = ("example_id", "n_units", "new_prediction")
_FLOAT_COLUMNS = (
    "acc_clean_after", "acc_noisy_after", "acc_test_after",
    "random_acc_clean_after", "random_acc_noisy_after", "random_acc_test_after",
)


def _final_model(ctx: StageContext) -> torch.nn.Module:
    epochs = ctx.run.checkpoint_epochs()
    if not epochs:
        raise RunError(f"run {ctx.run.name} has no checkpoints; the flip stage needs the train stage first")
    model = build_model(ctx.config, ctx.data)
    model.load_state_dict(ctx.run.read_checkpoint(epochs[-1], "cpu"))
    return model.to(ctx.device).eval()


def _targets(ctx: StageContext, model: torch.nn.Module) -> list[int]:
    cfg = ctx.config.flip
    n_train = ctx.data.num_train
    if cfg.example_ids:
        ids = list(cfg.example_ids)
        bad = [i for i in ids if i >= n_train]
        if bad:
            raise ConfigError(f"flip.example_ids: ids of training examples (0..{n_train - 1}), got {bad[0]}")
        return list(dict.fromkeys(ids))  # each example once, in the given order
    preds = predict(model, ctx.data.train_x, ctx.config.train.eval_batch_size).argmax(1)
    return flipping.select_targets(preds, ctx.labels.train, ctx.labels.is_noisy, cfg.n_noisy, cfg.n_clean, cfg.seed)


def _to_state(table: pd.DataFrame, index: flipping.UnitIndex) -> dict[str, torch.Tensor]:
    tensors = {c: torch.tensor(table[c].to_numpy(dtype=np.int64)) for c in _INT_COLUMNS}
    tensors.update({c: torch.tensor(table[c].to_numpy(dtype=np.float64)) for c in _FLOAT_COLUMNS})
    tensors["flipped"] = torch.tensor(table["flipped"].to_numpy(dtype=bool))
    # random_flipped / random_new_prediction are missing for examples that did not flip: -1.
    tensors["random_flipped"] = torch.tensor(table["random_flipped"].astype("Int8").fillna(-1).to_numpy(dtype=np.int8))
    tensors["random_new_prediction"] = torch.tensor(table["random_new_prediction"].fillna(-1).to_numpy(dtype=np.int64))
    flat = [index.index_of(u) for units in table["units"] for u in units]
    tensors["units"] = torch.tensor(flat, dtype=torch.int64)  # all flip sets, concatenated in row order
    return tensors


def _from_state(tensors: dict[str, torch.Tensor], index: flipping.UnitIndex, is_noisy: torch.Tensor) -> pd.DataFrame:
    table = pd.DataFrame({c: tensors[c].numpy() for c in _INT_COLUMNS})
    ends = np.cumsum(table["n_units"].to_numpy())
    flat = tensors["units"].tolist()
    table.insert(1, "kind", ["noisy" if bool(is_noisy[e]) else "clean" for e in table["example_id"]])
    table.insert(3, "flipped", tensors["flipped"].numpy())
    table.insert(4, "units", [index.names(flat[end - n : end]) for n, end in zip(table["n_units"], ends)])
    for c in _FLOAT_COLUMNS[:3]:
        table[c] = tensors[c].numpy()
    random_flipped = tensors["random_flipped"].numpy()
    table["random_flipped"] = pd.array([None if v < 0 else bool(v) for v in random_flipped], dtype="boolean")
    prediction = tensors["random_new_prediction"].numpy()
    table["random_new_prediction"] = pd.array([None if v < 0 else int(v) for v in prediction], dtype="Int64")
    for c in _FLOAT_COLUMNS[3:]:
        table[c] = tensors[c].numpy()
    return table


def flip_stage(ctx: StageContext) -> dict[str, Any]:
    """Greedy flipping of the chosen examples; tables `flipping` and `flip_units`."""
    cfg = ctx.config.flip
    model = _final_model(ctx)
    index = flipping.UnitIndex(model)
    settings = flipping.FlipSettings(cfg.batch_size, cfg.cap, cfg.robust, cfg.noise_draws, cfg.noise_rel, cfg.seed)
    x, y, noisy = ctx.data.train_x, ctx.labels.train, ctx.labels.is_noisy
    targets = _targets(ctx, model)
    evals = flipping.eval_set(x, y, noisy, ctx.data.test_x, ctx.data.test_y, cfg.eval_train, cfg.eval_test, cfg.seed)

    parts: list[pd.DataFrame] = []
    if ctx.run.has_state(STATE):
        tensors, meta = ctx.run.read_state(STATE)
        if json.loads(meta["targets"]) == targets:  # else the targets changed: start over
            parts.append(_from_state(tensors, index, noisy.cpu()))
    done = sum(len(p) for p in parts)
    bar = tqdm(total=len(targets), initial=done, desc="flip", unit="example", disable=None)
    try:
        for start in range(done, len(targets), cfg.save_every):
            chunk = targets[start : start + cfg.save_every]
            results = flipping.flip_examples(
                model, x, y, chunk, settings, cfg.targets_per_step, cfg.chunk_rows, on_result=lambda _: bar.update()
            )
            parts.append(flipping.flip_table(model, results, x, y, noisy, evals, settings, cfg.chunk_rows))
            table = pd.concat(parts, ignore_index=True)
            ctx.run.write_state(STATE, _to_state(table, index), {"targets": json.dumps(targets)})
    finally:
        bar.close()
    table = pd.concat(parts, ignore_index=True) if parts else flipping.flip_table(model, [], x, y, noisy, evals, settings)
    ctx.run.write_table("flipping", table)
    ctx.run.write_table("flip_units", flipping.unit_table(table, model))
    ctx.run.drop_state(STATE)
    return flipping.summary(table)
