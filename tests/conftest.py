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


@pytest.fixture
def smoke_copy(smoke_run, tmp_path) -> Run:
    """A private copy of the smoke run that a test may damage."""
    dst = tmp_path / "runs" / "smoke"
    shutil.copytree(smoke_run.path, dst)
    return Run(dst)
