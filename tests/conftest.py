"""Shared fixtures: a `smoke` run trained once per session (seconds) for tests that read runs."""

from __future__ import annotations

import shutil

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
