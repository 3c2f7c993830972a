"""The stages of `precompute run` and the runner that executes them into a run directory.

A stage is a function of a `StageContext`; it writes its tables through the run store and
returns a few key numbers for the manifest. The runner marks a stage complete only after the
function returned (so after its files are in place), skips stages already complete, and lets an
interrupted stage resume from its own saved state. An analysis adds its stage function (in its
own module, e.g. `precompute/rewind.py`) to `STAGES` here and its name to `memloc.config.STAGES`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from memloc import data as data_mod
from memloc.config import RunConfig
from memloc.runs import build_model, load_data, make_labels
from memloc.store import Run, RunError
from memloc.train import STATE as TRAIN_STATE
from memloc.train import train_run
from precompute.context import StageContext
from precompute.dropout import dropout_stage
from precompute.example_gradients import example_gradients_stage
from precompute.flip import flip_stage
from precompute.gradients import TrainAccounting
from precompute.retrain import retrain_stage
from precompute.rewind import rewind_stage


def train_stage(ctx: StageContext) -> dict[str, Any]:
    """Train with label noise, keeping every epoch's checkpoint; tables `training`, `example_training`,
    and with `gradients.accounting` `gradients`, `gradient_tensors` (precompute/gradients.py)."""
    model = build_model(ctx.config, ctx.data).to(ctx.device)
    with TrainAccounting(ctx, model) as accounting:
        result = train_run(ctx.run, model, ctx.data, ctx.labels, ctx.config.train, ctx.config.data.augment, **accounting.hooks)
    ctx.run.write_table("training", result.epochs)
    ctx.run.write_table("example_training", result.examples)
    accounting.write_tables()
    ctx.run.drop_state(TRAIN_STATE)
    accounting.drop_state()  # after the training's state: the accounting's is never behind it
    last = result.epochs.iloc[-1]
    return {key: round(float(last[key]), 4) for key in ("clean_acc", "noisy_acc", "noisy_true_acc", "test_acc")}


STAGES: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "train": train_stage,
    "example_gradients": example_gradients_stage,
    "rewind": rewind_stage,
    "retrain": retrain_stage,
    "flip": flip_stage,
    "dropout": dropout_stage,
}

#: Config keys that say where things are, not what is computed; a run may resume with others.
_LOCATION_KEYS = {("data", "root"), ("data", "download")}


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k != "stages"}
    for section, key in _LOCATION_KEYS:
        out[section] = {k: v for k, v in out.get(section, {}).items() if k != key}
    return out


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys whose value in the run's config `a` differs from the config `b` asked for now.

    Keys the run's config lacks (settings of stages added to memloc after the run was made)
    are no difference: the run takes today's values for them.
    """
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key not in a and not prefix.startswith("model.options"):
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key} {va!r} (run) vs {vb!r} (now)")
    return diffs


def execute(cfg: RunConfig, out: str, device: torch.device, log: Callable[[str], None] = print) -> Run:
    """Run the configured stages into the run directory `out`, resuming what is there."""
    ds = load_data(cfg)
    labels = make_labels(cfg, ds)
    run = Run(out)
    with run.lock():
        fingerprint = data_mod.fingerprint(ds)
        if run.exists():
            manifest = run.manifest()
            diffs = _differences(_comparable(manifest["config"]), _comparable(cfg.to_dict()))
            if diffs:
                raise RunError(
                    f"{run.path} holds a run with another config ({'; '.join(diffs)}); "
                    "choose another --out, or delete that directory to start over"
                )
            if manifest["data_fingerprint"] != fingerprint:
                raise RunError(f"{run.path} was trained on different {cfg.data.name} data (fingerprint mismatch); choose another --out")
            run.update_config(cfg.to_dict())  # records the settings of stages the run predates
            log(f"resuming {run.path}")
        else:
            run.create(cfg.to_dict(), fingerprint, cfg.train.seed)
            run.write_labels(labels.true.numpy(), labels.train.numpy(), labels.is_noisy.numpy())
        ctx = StageContext(run, cfg, ds.to(device), labels.to(device), device)
        for name in cfg.stages:
            if run.is_complete(name):
                log(f"stage {name}: complete, skipped")
                continue
            spent = run.stage(name).get("seconds", 0.0)
            t0 = time.perf_counter()
            run.update_stage(name, status="running", device=str(device))
            try:
                numbers = STAGES[name](ctx)
            finally:
                # Time spent so far is kept even when interrupted, so resumed stages report their total.
                run.update_stage(name, seconds=round(spent + time.perf_counter() - t0, 2))
            run.update_stage(name, status="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **numbers)
            log(f"stage {name}: complete in {run.stage(name)['seconds']:.1f} s  {numbers}")
    return run


__all__ = ["StageContext", "STAGES", "execute", "RunError"]
