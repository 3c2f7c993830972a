"""FIXTURE for the explorer's table contract: tables shaped exactly as the analysis stages write
them (names and columns from the stage contracts), with made-up values where a stage has not
landed yet. `add_missing_tables` writes only the tables a run lacks, so once a stage exists the
explorer's tests use its real output from the smoke run instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from memloc.runs import open_run
from memloc.store import Run

STAGE_TABLES = {
    "gradients": ("gradients",),
    "example_gradients": ("example_gradients",),
    "rewind": ("rewinding", "rewinding_examples"),
    "retrain": ("retraining",),
    "flip": ("flipping", "flip_units"),
    "dropout": ("dropout", "dropout_examples"),
}


def _contract_tables(run: Run, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    opened = open_run(run)
    model = opened.model()
    groups = list(model.layer_groups)
    epochs = run.checkpoint_epochs()
    n = opened.data.num_train
    noisy = opened.labels.is_noisy.numpy()
    train_label = opened.labels.train.numpy()
    out: dict[str, pd.DataFrame] = {}
    grid = [(e, g, gi) for e in epochs[1:] for gi, g in enumerate(groups)]
    clean, noisy_norm = rng.uniform(0.5, 2, len(grid)), rng.uniform(0.2, 1.5, len(grid))
    out["gradients"] = pd.DataFrame({
        "epoch": [e for e, _, _ in grid], "group": [g for _, g, _ in grid], "group_index": [gi for _, _, gi in grid],
        "clean_norm": clean, "noisy_norm": noisy_norm, "total_norm": clean + noisy_norm * 0.5,
        "cosine": rng.uniform(-0.6, 0.2, len(grid)),
    })
    ex_epochs = [epochs[1], epochs[-1]]
    out["example_gradients"] = pd.DataFrame([
        {"example_id": i, "epoch": e, "group": g, "grad_norm": float(rng.uniform(0, 1) * (3 if noisy[i] else 1))}
        for i in range(n) for e in ex_epochs for g in groups
    ])
    out["rewinding"] = pd.DataFrame([
        {"group": g, "group_index": gi, "epoch": e, "include_buffers": True, "clean_acc": rng.uniform(0.5, 1),
         "noisy_acc": rng.uniform(0, 1), "noisy_true_acc": rng.uniform(0, 0.5), "test_acc": rng.uniform(0.5, 1)}
        for gi, g in enumerate(groups) for e in epochs
    ])
    noisy_ids = np.flatnonzero(noisy)
    out["rewinding_examples"] = pd.DataFrame([
        {"group": g, "epoch": 0, "example_id": int(i), "memorized": bool(rng.uniform() < 0.5)} for g in groups for i in noisy_ids
    ])
    out["retraining"] = pd.DataFrame([
        {"group": g, "group_index": gi, "epoch": e, "clean_acc": rng.uniform(0.5, 1), "noisy_acc": rng.uniform(0, 1),
         "noisy_true_acc": rng.uniform(0, 0.5), "test_acc": rng.uniform(0.5, 1)}
        for gi, g in [(-1, "none"), *enumerate(groups)] for e in range(4)
    ])
    modules = dict(model.named_modules())
    units = [f"{layer}[{i}]" for layer in model.unit_layers for i in range(modules[layer].out_features)]
    rows = []
    for kind, ids in (("noisy", noisy_ids[:6]), ("clean", np.flatnonzero(~noisy)[:6])):
        for i in ids:
            k = int(rng.integers(1, 6 if kind == "noisy" else 20))
            chosen = sorted(rng.choice(units, size=k, replace=False).tolist())
            rows.append({
                "example_id": int(i), "kind": kind, "n_units": k, "flipped": True, "units": chosen,
                "new_prediction": int((train_label[i] + 1) % 10), "acc_clean_after": rng.uniform(0.8, 1),
                "acc_noisy_after": rng.uniform(0.8, 1), "acc_test_after": rng.uniform(0.7, 1),
                "random_flipped": bool(rng.uniform() < 0.1), "random_new_prediction": int(train_label[i]),
                "random_acc_clean_after": rng.uniform(0.8, 1), "random_acc_noisy_after": rng.uniform(0.8, 1),
                "random_acc_test_after": rng.uniform(0.7, 1),
            })
    out["flipping"] = flips = pd.DataFrame(rows)
    counted = flips.explode("units")
    per_unit = counted.groupby("units").agg(n_examples=("example_id", "size"),
                                            n_noisy=("kind", lambda k: int((k == "noisy").sum())),
                                            n_clean=("kind", lambda k: int((k == "clean").sum()))).reset_index()
    per_unit["layer"] = per_unit["units"].str.split("[").str[0]
    per_unit["layer_index"] = per_unit["layer"].map({layer: j for j, layer in enumerate(model.unit_layers)})
    out["flip_units"] = per_unit.rename(columns={"units": "unit"})[["unit", "layer", "layer_index", "n_examples", "n_noisy", "n_clean"]]
    out["dropout"] = pd.DataFrame([
        {"mode": m, "clean_acc": rng.uniform(0.7, 1), "noisy_acc": a, "noisy_true_acc": rng.uniform(0, 0.5), "test_acc": rng.uniform(0.6, 1)}
        for m, a in (("test", 0.95), ("drop", 0.1), ("plain", 1.0))
    ])
    preds = [(i, m, int(train_label[i] if rng.uniform() < (0.9 if m == "test" else 0.2) else (train_label[i] + 1) % 10))
             for i in range(n) for m in ("test", "drop")]
    out["dropout_examples"] = pd.DataFrame({
        "example_id": [i for i, _, _ in preds], "mode": [m for _, m, _ in preds], "prediction": [p for _, _, p in preds],
        "correct": [p == train_label[i] for i, _, p in preds],
    })
    return out


def add_missing_tables(run: Run, seed: int = 0) -> list[str]:
    """Write the contract tables `run` lacks (inside its lock); returns their names."""
    missing = [t for tables in STAGE_TABLES.values() for t in tables if not run.has_table(t)]
    if missing:
        tables = _contract_tables(run, np.random.default_rng(seed))
        with run.lock():
            for name in missing:
                run.write_table(name, tables[name])
    return missing
