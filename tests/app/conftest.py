"""Fixtures of the explorer's tests: a runs root holding a smoke run with every analysis table."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from memloc.store import Run

sys.path.insert(0, str(Path(__file__).parent))
from contract_tables import add_missing_tables  # noqa: E402


@pytest.fixture(scope="session")
def explorer_run(smoke_run, tmp_path_factory) -> Run:
    """A copy of the smoke run; tables of stages that have not landed yet are written by the
    contract FIXTURE (`contract_tables.py`), the others are the stages' real output."""
    dst = tmp_path_factory.mktemp("explorer") / "runs" / "smoke"
    shutil.copytree(smoke_run.path, dst)
    run = Run(dst)
    add_missing_tables(run)
    return run
