"""Shared fixtures: a `smoke` run trained once per session (seconds) for tests that read runs."""

from __future__ import annotations

import hashlib
import shutil
from typing import Callable

import pytest
import torch

from memloc import overrides
from memloc.store import Run

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Run:
    """A complete `smoke` run. Read-only: tests that modify a run copy it (`smoke_copy`)."""
    from precompute.stages import execute

    out = tmp_path_factory.mktemp("runs") / "smoke"
    return execute(overrides.resolve("smoke"), str(out), torch.device("cpu"), log=lambda _: None)


#: The grid of the `smoke_sweep` fixture: two seeds times two noise rates.
SWEEP_GRID = ["train.seed=0,1", "data.noise_frac=0.1,0.2"]


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """A complete 4-point smoke sweep (two seeds x two noise rates) through loky, two jobs. Read-only."""
    from memloc.store import Sweep
    from precompute.sweep import grid_from, run_sweep

    out = tmp_path_factory.mktemp("sweeps") / "grid"
    assert run_sweep(grid_from("smoke", [], SWEEP_GRID, None), str(out), jobs=2, log=lambda _: None) == 0
    return Sweep(out)


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Run:
    """A private copy of the smoke run that a test may damage."""
    dst = tmp_path / "runs" / "smoke"
    shutil.copytree(smoke_run.path, dst)
    return Run(dst)


def _digests(run: Run, tables: tuple[str, ...] | None = None, variants: tuple[str, ...] = ("plain", "dropout")) -> dict[str, str]:
    """The sha256 of each table (all of the run's by default; `training` and `localizers` without
    their wall-clock `seconds`) and of each checkpoint's tensors: equal digests mean bitwise equal results."""
    out = {}
    for name in run.tables() if tables is None else tables:
        table = run.read_table(name)
        if name in ("training", "localizers"):
            table = table.drop(columns="seconds")
        out[name] = hashlib.sha256(table.to_parquet(index=False)).hexdigest()
    for variant in variants:
        for epoch in run.checkpoint_epochs(variant):
            state = run.read_checkpoint(epoch, variant=variant)
            out[f"{variant}/{epoch}"] = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    return out


@pytest.fixture(scope="session")
def digests() -> Callable[..., dict[str, str]]:
    """`digests(run, tables=None, variants=("plain", "dropout"))`: what makes two runs bitwise equal."""
    return _digests
