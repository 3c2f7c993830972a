"""What every page of the explorer shares: the runs root, the selected run, cached tables.

Tables are cached as data keyed by the run directory and its manifest's modification time, so
a run that precompute is still writing is re-read when it changes. A run whose files are
corrupt raises `RunError`; pages show it as an error card and the other runs stay usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from memloc.store import MANIFEST, Run, RunError, list_runs, runs_root

CREATE_RUN = "python -m precompute run --preset demo"


def selected_runs_root() -> Path:
    """`streamlit run app/main.py -- --runs DIR`, else $MEMLOC_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return runs_root(known.runs)


def run_names(root: Path) -> list[str]:
    return [run.name for run in list_runs(root)]


def run_in_root(root: Path, name: str) -> Run | None:
    """The run called `name` directly under `root`; None for names that would leave the root."""
    candidate = (root / name).resolve()
    if candidate.parent != root.resolve() or not (candidate / MANIFEST).is_file():
        return None
    return Run(candidate)


def _stamp(run: Run) -> float:
    return (run.path / MANIFEST).stat().st_mtime


@st.cache_data(show_spinner=False, max_entries=64)
def _table(path: str, name: str, stamp: float) -> pd.DataFrame:
    return Run(path).read_table(name)


def table(run: Run, name: str) -> pd.DataFrame:
    """A run's table, cached until the run changes."""
    return _table(str(run.path), name, _stamp(run))


@st.cache_data(show_spinner=False, max_entries=64)
def _manifest(path: str, stamp: float) -> dict:
    return Run(path).manifest()


def manifest(run: Run) -> dict:
    return _manifest(str(run.path), _stamp(run))


def current_run() -> Run | None:
    """The run picked in the sidebar (main.py's `run_name` widget), or None when there is none."""
    name = st.session_state.get("run_name")
    return run_in_root(selected_runs_root(), name) if name else None


def show_run_error(run: Run, error: RunError) -> None:
    st.error(f"Run **{run.name}** cannot be shown: {error}")


__all__ = ["CREATE_RUN", "selected_runs_root", "run_names", "run_in_root", "table", "manifest", "current_run", "show_run_error", "RunError"]
