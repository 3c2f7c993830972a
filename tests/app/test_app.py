"""The explorer under Streamlit's AppTest: with a smoke run, with no runs, with a corrupt run."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _app(monkeypatch, root: Path, page: str = "overview") -> AppTest:
    """The app on `page` (`?page=`; the default page, at /, is Findings)."""
    monkeypatch.setenv("MEMLOC_RUNS", str(root))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["page"] = page
    return at


def test_no_runs_shows_the_command_that_creates_one(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "missing").run()
    assert not at.exception
    assert f"python -m precompute run --preset demo --out {tmp_path / 'missing' / 'demo'}" in [c.value for c in at.code]


def test_the_first_page_is_the_findings(monkeypatch, smoke_run):
    monkeypatch.setenv("MEMLOC_RUNS", str(smoke_run.path.parent))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Findings: does the paper hold here?" and at.query_params["page"] == "findings"


def test_overview_of_a_smoke_run_shows_its_curves(monkeypatch, smoke_run):
    at = _app(monkeypatch, smoke_run.path.parent).run()
    assert not at.exception
    assert at.title[0].value == "Overview: smoke"
    assert len(at.get("vega_lite_chart")) == 2  # training curves, when noisy examples were memorized
    assert [m.value for m in at.metric][:2] == ["digits", "mlp"]
    assert at.query_params["run"] == "smoke"


def test_a_damaged_run_is_not_the_default_and_gets_a_warning_and_an_error_card(monkeypatch, smoke_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run.path, root / "a-broken")
    shutil.copytree(smoke_run.path, root / "b-good")
    (root / "a-broken" / "tables" / "training.parquet").write_bytes(b"not parquet")
    at = _app(monkeypatch, root).run()
    assert at.title[0].value == "Overview: b-good"  # the first healthy run, though a-broken sorts first
    assert not at.exception and not at.error and not at.warning, [e.value for e in at.error]
    assert len(at.get("vega_lite_chart")) == 2  # training curves, when noisy examples were memorized
    assert at.sidebar.selectbox[0].options == ["a-broken · damaged", "b-good · complete"]  # each run with its health
    at.sidebar.selectbox[0].select("a-broken").run()
    assert not at.exception
    assert at.warning[0].value.startswith("Run **a-broken** is damaged: `tables/training.parquet` 11 bytes")
    assert f"`python -m precompute run --preset smoke --out {root / 'a-broken'}`" in at.warning[0].value
    assert "does not match the checksum" in at.error[0].value


def test_run_name_from_the_url_cannot_leave_the_runs_root(monkeypatch, smoke_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run.path, root / "smoke")
    shutil.copytree(smoke_run.path, tmp_path / "outside")
    at = _app(monkeypatch, root)
    at.query_params["run"] = "../outside"
    at.run()
    assert not at.exception
    assert at.title[0].value == "Overview: smoke"  # the unknown name falls back to a run in the root


def test_a_sweeps_points_are_runs_of_the_picker_and_names_cannot_leave_the_root(monkeypatch, smoke_run, smoke_sweep, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_sweep.path, root / "grid")
    shutil.copytree(smoke_run.path, tmp_path / "outside")
    at = _app(monkeypatch, root)
    at.query_params["run"] = "grid/seed=1,noise_frac=0.2"
    at.run()
    assert not at.exception and at.title[0].value == "Overview: grid/seed=1,noise_frac=0.2"
    assert "sweep **grid**: 4 points, 4 complete" in [c.value for c in at.sidebar.caption]
    for bad in ("grid/../../outside", "../outside", "grid/logs"):
        at = _app(monkeypatch, root)
        at.query_params["run"] = bad
        at.run()
        assert not at.exception and at.title[0].value == "Overview: grid/seed=0,noise_frac=0.1"  # the first run instead


def test_the_run_picker_names_the_stages_a_run_lacks(monkeypatch, smoke_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run.path, root / "smoke")
    manifest = json.loads((root / "smoke" / "manifest.json").read_text())
    for stage in ("flip", "dropout"):  # as if the run was made without them
        manifest["stages"].pop(stage)
    (root / "smoke" / "manifest.json").write_text(json.dumps(manifest))
    at = _app(monkeypatch, root).run()
    assert not at.exception
    assert at.sidebar.selectbox[0].options == ["smoke · lacks flip, dropout"]
