"""The Localizers page and the One example page's localization picks under AppTest, on the smoke
run: the charts show the `localizers` table's means per method, a run without the table gets the
command that adds it, a damaged one the error card, and zeroing a method's picks gives the
probabilities the library gives for those units."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from streamlit.testing.v1 import AppTest

from memloc.evaluate import predict
from memloc.interventions import UnitIndex, ZeroUnits, intervene
from memloc.localization import METHOD_NAMES, rate_counts
from memloc.runs import open_run
from memloc.store import Run

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _open(monkeypatch, run: Run, page: str, **params) -> AppTest:
    monkeypatch.setenv("MEMLOC_RUNS", str(run.path.parent))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in {"run": run.name, "page": page, **params}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _chart(at: AppTest, title: str) -> tuple[pd.DataFrame, dict]:
    """The data and spec of the one chart whose spec holds `title`."""
    charts = [c for c in at.get("vega_lite_chart") if title in c.proto.spec]
    assert len(charts) == 1, title
    return pa.ipc.open_stream(charts[0].proto.datasets[0].data.data).read_all().to_pandas(), json.loads(charts[0].proto.spec)


def _marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec["layer"]]


def test_the_page_shows_the_tables_means_per_method(monkeypatch, explorer_run):
    table, units = explorer_run.read_table("localizers"), explorer_run.read_table("localizer_units")
    at = _open(monkeypatch, explorer_run, "localizers")
    assert not at.error and not at.info
    for benchmark, title in [("dropout", "Example-tied dropout"), ("injection", "Injection")]:
        shown, spec = _chart(at, f"{title}: recall@k per method")
        expected = table[table["benchmark"] == benchmark].groupby("method")[["recall_at_k", "chance"]].mean()
        shown = shown.set_index("method")
        assert set(shown.index) == set(expected.index) and (shown["name"] == shown.index.map(METHOD_NAMES)).all()
        pd.testing.assert_frame_equal(shown[["recall_at_k", "chance"]], expected.loc[shown.index], check_names=False)
        assert list(shown["recall_at_k"].dropna()) == sorted(shown["recall_at_k"].dropna(), reverse=True)  # best first
        assert _marks(spec) == ["bar", "rule", "text", "text"]  # bars, chance rule, values on the bars, chance label
    # Per layer: hits / picks of each method's picks there.
    picked = units[(units["benchmark"] == "dropout") & units["truth"].notna()]
    shown, _ = _chart(at, "Example-tied dropout: recall@k per layer")
    picked = picked.assign(name=picked["method"].map(METHOD_NAMES), hit=picked["truth"].astype(float))
    expected = picked.groupby(["name", "layer"])["hit"].mean()
    np.testing.assert_allclose(shown.set_index(["name", "layer"])["recall"].sort_index(), expected.sort_index())
    # Deletion at the smallest rate: effectiveness and collateral damage per method.
    rate = float(table["rate"].min())
    at.radio(key="loc_rate").set_value(rate).run()
    at.radio(key="loc_damage").set_value("clean_acc_change").run()
    assert not at.exception, [e.value for e in at.exception]
    shown, spec = _chart(at, f"top {rate:g}% of each layer zeroed")
    one = table[(table["benchmark"] == "deletion") & (table["rate"] == rate)]
    expected = one.assign(lost=one["lost_memorization"].astype(float)).groupby("method")[["lost", "clean_acc_change"]].mean()
    shown = shown.set_index("method").loc[expected.index]
    np.testing.assert_allclose(shown["lost_memorization"], expected["lost"])
    np.testing.assert_allclose(shown["clean_acc_change"], expected["clean_acc_change"])
    assert spec["layer"][0]["encoding"]["x"]["field"] == "clean_acc_change" and "text" in _marks(spec)
    # Seconds per target: one time per target (deletion repeats it per rate).
    shown, _ = _chart(at, "Time per target")
    expected = table.drop_duplicates(["method", "benchmark", "example_id"]).groupby("method")["seconds"].mean()
    np.testing.assert_allclose(shown.set_index("method")["seconds"].loc[expected.index], expected)


def _copy(explorer_run: Run, tmp_path: Path) -> Run:
    shutil.copytree(explorer_run.path, tmp_path / "runs" / "smoke")
    return Run(tmp_path / "runs" / "smoke")


def test_a_run_without_the_tables_gets_the_command_that_adds_them(monkeypatch, explorer_run, tmp_path):
    run = _copy(explorer_run, tmp_path)
    manifest = json.loads((run.path / "manifest.json").read_text())
    del manifest["files"]["tables/localizers.parquet"]  # as if stage localize had not run
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    at = _open(monkeypatch, run, "localizers")
    assert len(at.info) == 1 and "`localizers`" in at.info[0].value and "`localize` stage" in at.info[0].value
    assert f"python -m precompute run --preset smoke --out {run.path}" in [c.value for c in at.code]
    assert not at.get("vega_lite_chart")


def test_a_damaged_table_gets_the_error_card(monkeypatch, explorer_run, tmp_path):
    run = _copy(explorer_run, tmp_path)
    (run.path / "tables" / "localizers.parquet").write_bytes(b"not parquet")
    at = _open(monkeypatch, run, "localizers")
    assert len(at.error) == 1 and at.error[0].value.startswith("Run **smoke** cannot be shown")
    assert "localizers.parquet" in at.error[0].value and at.title and not at.get("vega_lite_chart")


def test_one_example_zeroes_a_methods_picks(monkeypatch, explorer_run):
    units = explorer_run.read_table("localizer_units")
    deletion = units[units["benchmark"] == "deletion"]
    both = set(deletion["example_id"]) & set(units.loc[units["benchmark"] == "dropout", "example_id"])
    example = int(min(both or set(deletion["example_id"])))
    at = _open(monkeypatch, explorer_run, "example", example=str(example))
    at.selectbox(key="ex_loc_method").set_value("zero_out").run()
    rate = float(explorer_run.read_table("localizers")["rate"].min())  # in small layers: one unit each
    at.radio(key="ex_loc_rate").set_value(rate).run()
    opened = open_run(explorer_run)
    model = opened.model()
    counts = dict(zip(model.unit_layers, rate_counts(UnitIndex(model), rate)))
    picks = deletion[(deletion["example_id"] == example) & (deletion["method"] == "zero_out")]
    expected = picks.loc[picks["rank"] < picks["layer"].map(counts), "unit"].tolist()
    assert at.dataframe[0].value["unit"].tolist() == expected

    at.button(key="ex_zero_method").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="ex_units").value == expected and at.button(key="ex_zero_method").disabled
    x = opened.data.train_x[[example]]
    with intervene(model, [ZeroUnits(tuple(expected))]):
        p_after = torch.softmax(predict(model, x), 1)[0].numpy()
    shown = pa.ipc.open_stream(at.get("vega_lite_chart")[0].proto.datasets[0].data.data).read_all().to_pandas()
    after = shown.loc[shown["model"] == f"after: {len(expected)} units zeroed", "probability"]
    np.testing.assert_allclose(after, p_after, rtol=1e-5)
    if both:  # the dropout model's picks: listed with the truth, nothing to zero
        at.radio(key="ex_loc_benchmark").set_value("dropout").run()
        assert not at.exception and "its own memorization unit" in at.dataframe[0].value.columns
        assert not [b for b in at.button if b.key == "ex_zero_method"]
