"""Fixtures of the explorer's tests: a runs root holding a copy of the smoke run (every stage)."""

from __future__ import annotations

import shutil

import pytest

from memloc.store import Run


@pytest.fixture(scope="session")
def explorer_run(smoke_run, tmp_path_factory) -> Run:
    """A private copy of the smoke run, so explorer tests may add or damage files."""
    dst = tmp_path_factory.mktemp("explorer") / "runs" / "smoke"
    shutil.copytree(smoke_run.path, dst)
    return Run(dst)
