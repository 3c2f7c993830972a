"""The stages of `precompute run` and the runner that executes them into a run directory.

A stage is a function of a `StageContext` (`precompute/stage.py`) in its own module; it keeps
its progress in a `Resumable`, writes its tables when it finishes and returns a few key numbers
for the manifest. The runner marks a stage complete only after the function returned (so after
its files are in place), skips stages already complete, and lets an interrupted stage resume
from its own saved state. Before it skips anything it checks every file of the run against the
manifest (`Run.verify`): a stage with a missing or damaged file starts over, and so do the
stages that read it (every later stage reads the checkpoints of `train`), each with one line
saying why; damaged labels are written again from the data.

An analysis adds its stage function to `STAGES` here and its name and tables to
`memloc.config.STAGES` and `STAGE_TABLES`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import torch

from memloc import data as data_mod
from memloc.config import STAGES as STAGE_ORDER
from memloc.config import TABLE_STAGE, RunConfig
from memloc.overrides import LOCATION_KEYS, flatten
from memloc.store import Problem, Run, RunError
from precompute.dropout import dropout_stage
from precompute.example_gradients import example_gradients_stage
from precompute.flip import flip_stage
from precompute.localize import localize_stage
from precompute.retrain import retrain_stage
from precompute.rewind import rewind_stage
from precompute.stage import StageContext
from precompute.train import train_stage

STAGES: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "train": train_stage,
    "example_gradients": example_gradients_stage,
    "rewind": rewind_stage,
    "retrain": retrain_stage,
    "flip": flip_stage,
    "dropout": dropout_stage,
    "localize": localize_stage,
}


def _differences(run_config: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    """Keys whose value in the run's config differs from the config asked for now, except the
    stages to run and where the data lives (a run may resume with others)."""
    a, b = flatten(run_config), flatten(asked)
    ignored = {*LOCATION_KEYS, "stages"}
    return [f"{key} {a.get(key)!r} (run) vs {b.get(key)!r} (now)"
            for key in sorted(set(a) | set(b)) if key not in ignored and a.get(key) != b.get(key)]


#: The stage that writes each variant's checkpoints.
CHECKPOINT_STAGE = {"plain": "train", "dropout": "dropout"}


def _heal(run: Run, problems: list[Problem], log: Callable[[str], None]) -> list[str]:
    """Forget the damaged files and mark the stages that wrote them, and the stages that read
    them, as to run again (from the start); returns those stages in order."""
    owners = {p.name if p.kind == "state" else CHECKPOINT_STAGE.get(p.name) if p.kind == "checkpoint"
              else TABLE_STAGE.get(p.name) if p.kind == "table" else None for p in problems}
    if "train" in owners:  # every other stage reads the plain model's checkpoints
        owners |= {name for name in STAGE_ORDER if run.stage(name)}
    if "dropout" in owners and run.stage("localize"):  # its dropout benchmark reads the dropout model
        owners.add("localize")
    again = [name for name in STAGE_ORDER if name in owners]
    for problem in problems:
        log(f"{problem.rel}: {problem.what}")
    run.forget(problems)
    for name in again:
        run.drop_state(name)
        if run.stage(name):
            run.update_stage(name, status="damaged", seconds=0.0)
    if again:
        log(f"stages {', '.join(again)} run again from the start to recreate what is damaged")
    return again


def _check_before_writing(cfg: RunConfig, ds: data_mod.Dataset, run: Run) -> None:
    """What only the data or the run directory can tell, checked before anything is written
    (the lock included): the flip targets are training examples, and a new run starts with
    stage train, whose checkpoints every other stage reads."""
    cfg.flip.check_example_ids(ds.num_train)
    if cfg.stages[0] != "train" and not run.exists():
        raise RunError(f"stages: {run.path} holds no run yet and a new run starts with train, got {list(cfg.stages)}; "
                       f"put train first, e.g. stages={['train', *(s for s in cfg.stages if s != 'train')]}")


def execute(cfg: RunConfig, out: str, device: torch.device, log: Callable[[str], None] = print,
            wait: Callable[[str], None] | None = None) -> Run:
    """Run the configured stages into the run directory `out`, resuming what is there. A run
    another process holds is an error, or with `wait` (told why) waited for."""
    ds = data_mod.load_data(cfg.data)
    labels = data_mod.make_labels(cfg.data, ds)
    run = Run(out)
    _check_before_writing(cfg, ds, run)
    with run.lock(wait):
        fingerprint = data_mod.fingerprint(ds)
        if run.exists():
            manifest = run.manifest()
            diffs = _differences(manifest["config"], cfg.to_dict())
            if diffs:
                raise RunError(
                    f"{run.path} holds a run with another config ({'; '.join(diffs)}); "
                    "choose another --out, or delete that directory to start over"
                )
            if manifest["data_fingerprint"] != fingerprint:
                raise RunError(f"{run.path} was trained on different {cfg.data.name} data (fingerprint mismatch); choose another --out")
            run.update_config(cfg.to_dict())  # the stages asked for now, and where the data is now
            log(f"resuming {run.path}")
            problems = run.verify()
            if problems:
                _heal(run, problems, log)
            if any(p.kind == "labels" for p in problems):
                run.write_labels(labels.true_labels.numpy(), labels.train_labels.numpy(), labels.is_noisy.numpy())
        else:
            run.create(cfg.to_dict(), fingerprint, cfg.train.seed)
            run.write_labels(labels.true_labels.numpy(), labels.train_labels.numpy(), labels.is_noisy.numpy())
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
