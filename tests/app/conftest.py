"""Fixtures of the explorer's tests: a runs root holding a copy of the smoke run (every stage)
and of the 4-point smoke sweep `grid`."""

from __future__ import annotations

import shutil

import pytest

from memloc.store import Run


@pytest.fixture(scope="session")
def explorer_run(smoke_run, smoke_sweep, tmp_path_factory) -> Run:
    """A private copy of the smoke run (and beside it of the smoke sweep), so explorer tests may
    add or damage files."""
    dst = tmp_path_factory.mktemp("explorer") / "runs" / "smoke"
    shutil.copytree(smoke_run.path, dst)
    shutil.copytree(smoke_sweep.path, dst.parent / smoke_sweep.name)
    return Run(dst)
