"""Every analysis page of the explorer under AppTest, on the smoke run (with every table).

Checks that each page renders without an exception, that its widgets change what is shown, and
that the live interventions show exactly the numbers the library computes.
"""

from __future__ import annotations

import html
import json
import urllib.parse
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from streamlit.testing.v1 import AppTest

from memloc import attribution, scorecard
from memloc.evaluate import POPULATIONS, accuracy_column, evaluate, predict
from memloc.interventions import Rewind, ZeroUnits, intervene
from memloc.runs import open_run
from memloc.store import Run

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _app(monkeypatch, root: Path, **params) -> AppTest:
    monkeypatch.setenv("MEMLOC_RUNS", str(root))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def _page(monkeypatch, run: Run, page: str, **params) -> AppTest:
    at = _app(monkeypatch, run.path.parent, **params).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


ACCURACIES = tuple(POPULATIONS.values())  # the metric labels of the live panels


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric if m.label in ACCURACIES}


def _chart_data(chart) -> pd.DataFrame:
    """The data behind a chart as the browser gets it (an Arrow table in the message)."""
    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()


def _shown(values: dict[str, float]) -> dict[str, str]:
    return {label: f"{values[accuracy_column(p)]:.2%}" for p, label in POPULATIONS.items()}


@pytest.fixture(scope="module")
def library(explorer_run):
    """The run opened by the library itself, to compare the app's numbers with."""
    opened = open_run(explorer_run)
    return opened, opened.model()


def _evaluate(library, items):
    opened, model = library
    d = opened.data
    with intervene(model, items, checkpoint=opened.checkpoint):
        return evaluate(model, d.train_x, opened.labels, d.test_x, d.test_labels)


def test_overview_shows_curves_and_when_noisy_examples_were_memorized(monkeypatch, explorer_run):
    at = _app(monkeypatch, explorer_run.path.parent, page="overview").run()
    assert not at.exception
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2
    assert "When each noisy example became memorized" in [h.value for h in at.subheader]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels.count("Data (CSV)") == 2 and labels.count("Figure (SVG)") == 2
    assert at.query_params["page"] == "overview"


def test_gradient_page_groups_and_checkpoint_change_the_charts(monkeypatch, explorer_run):
    at = _page(monkeypatch, explorer_run, "gradients")
    first = at.get("vega_lite_chart")[0].proto.spec
    at.multiselect(key="grad_groups").set_value(["out"]).run()
    assert at.get("vega_lite_chart")[0].proto.spec != first
    per_example = at.get("vega_lite_chart")[3].proto.spec
    epochs = at.select_slider(key="exgrad_epoch").options
    at.select_slider(key="exgrad_epoch").set_value(epochs[0]).run()
    assert not at.exception
    assert at.get("vega_lite_chart")[3].proto.spec != per_example
    at.number_input(key="exgrad_example").set_value(5).run()
    one = _chart_data(at.get("vega_lite_chart")[4])
    assert set(one["example_id"]) == {5} and len(one) == len(explorer_run.read_table("example_gradients").query("example_id == 5"))


def test_live_rewind_equals_the_library(monkeypatch, explorer_run, library):
    at = _page(monkeypatch, explorer_run, "rewinding")
    assert len(at.get("vega_lite_chart")) == 3  # clean / memorization / test heatmaps
    at.multiselect(key="rw_groups").set_value(["fc1", "out"])
    at.select_slider(key="rw_epoch").set_value(0).run()
    assert not at.exception
    items = [Rewind("fc1", 0), Rewind("out", 0)]
    assert _metrics(at) == _shown(_evaluate(library, items))
    assert at.query_params["intervention"] == "rewind:fc1@0+rewind:out@0"
    rows = at.dataframe[0].value
    opened, model = library
    ids = rows["example"].tolist()
    with intervene(model, items, checkpoint=opened.checkpoint):
        after = predict(model, opened.data.train_x[ids]).argmax(1).tolist()
    assert rows["prediction after"].astype(int).tolist() == after


def test_live_rewind_opens_on_the_trained_model_and_resets_to_it(monkeypatch, explorer_run, library):
    at = _page(monkeypatch, explorer_run, "rewinding")
    assert at.multiselect(key="rw_groups").value == [] and at.button(key="rw_reset").disabled
    assert "rw_buffers" not in [box.key for box in at.checkbox]  # the MLP has no BatchNorm statistics to rewind
    before = _metrics(at)
    assert before == _shown(_evaluate(library, []))  # "before": nothing rewound
    at.multiselect(key="rw_groups").set_value(["fc1"]).run()
    assert _metrics(at) == _shown(_evaluate(library, [Rewind("fc1", 0)])) and not at.button(key="rw_reset").disabled
    at.button(key="rw_reset").click().run()
    assert at.multiselect(key="rw_groups").value == [] and _metrics(at) == before
    assert at.query_params["intervention"] == ""


def test_an_intervention_in_the_url_reopens_the_same_live_rewind(monkeypatch, explorer_run, library):
    at = _app(monkeypatch, explorer_run.path.parent, page="rewinding", intervention="rewind:fc2@1", example="3, 5").run()
    assert not at.exception
    assert at.title[0].value == "Layer rewinding"
    assert at.multiselect(key="rw_groups").value == ["fc2"] and at.select_slider(key="rw_epoch").value == 1
    assert at.dataframe[0].value["example"].tolist() == [3, 5]
    assert _metrics(at) == _shown(_evaluate(library, [Rewind("fc2", 1)]))


def test_retraining_group_choice_changes_the_chart(monkeypatch, explorer_run):
    at = _page(monkeypatch, explorer_run, "retraining")
    spec = at.get("vega_lite_chart")[0].proto.spec
    at.multiselect(key="rt_groups").set_value(["none", "fc1"]).run()
    assert at.get("vega_lite_chart")[0].proto.spec != spec
    assert len(at.dataframe[0].value) == 2


def test_live_zeroing_equals_the_library_and_follows_the_example(monkeypatch, explorer_run, library):
    flips = explorer_run.read_table("flipping")
    at = _page(monkeypatch, explorer_run, "neurons")
    example = at.selectbox(key="nr_example").value
    flip_set = [str(u) for u in flips.set_index("example_id").at[example, "units"]]
    assert at.multiselect(key="nr_units").value == flip_set  # the example's flip set is preselected
    assert _metrics(at) == _shown(_evaluate(library, [ZeroUnits(tuple(flip_set))]))
    at.multiselect(key="nr_units").set_value(["fc1[0]", "fc2[3]"]).run()
    assert _metrics(at) == _shown(_evaluate(library, [ZeroUnits(("fc1[0]", "fc2[3]"))]))
    assert at.query_params["intervention"] == "zero:fc1[0],fc2[3]"
    other = [i for i in at.selectbox(key="nr_example").options if int(i.split()[0]) != example][0]
    at.selectbox(key="nr_example").select(int(other.split()[0])).run()
    assert at.multiselect(key="nr_units").value == [str(u) for u in flips.set_index("example_id").at[int(other.split()[0]), "units"]]
    unit = at.selectbox(key="nr_unit").value
    users = at.dataframe[0].value["example"].tolist()
    assert users == [i for i, us in zip(flips["example_id"], flips["units"]) if unit in list(us)]


def test_gallery_filters_and_pages(monkeypatch, explorer_run):
    labels = explorer_run.read_labels()
    at = _page(monkeypatch, explorer_run, "examples")
    assert len(at.image) == 24
    at.radio(key="gal_kind").set_value("noisy").run()
    links = [link.proto.label for link in at.get("page_link")]
    assert links and all("(noisy)" in label for label in links)
    assert len(links) == min(24, int(labels["is_noisy"].sum()))
    at.text_input(key="gal_search").input("12").run()
    ids = [int(label.split()[0][1:]) for label in (link.proto.label for link in at.get("page_link"))]
    assert all(str(i).startswith("12") and labels["is_noisy"][i] for i in ids)
    at.text_input(key="gal_search").input("").run()
    at.radio(key="gal_kind").set_value("all").run()
    at.number_input(key="gal_page").set_value(2).run()
    first = int(at.get("page_link")[0].proto.label.split()[0][1:])
    assert first == 24


def _all_chart_data(chart) -> pd.DataFrame:
    """The rows of every dataset of a chart (a concatenation of charts has one per part)."""
    return pd.concat([pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets], ignore_index=True)


def test_example_page_opens_before_and_zeroes_its_flip_set(monkeypatch, explorer_run, library):
    flips = explorer_run.read_table("flipping")
    row = flips[(flips["kind"] == "noisy") & flips["flipped"]].iloc[0]
    example, units = int(row["example_id"]), [str(u) for u in row["units"]]
    labels = explorer_run.read_labels()
    at = _app(monkeypatch, explorer_run.path.parent, page="example", example=str(example)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="ex_id").value == example
    opened, model = library
    x = opened.data.train_x[[example]]
    p_before = torch.softmax(predict(model, x), 1)[0].numpy()
    # Opens on the model as trained: nothing zeroed, Reset disabled, only "before" shown.
    assert at.multiselect(key="ex_units").value == [] and at.button(key="ex_reset").disabled
    shown = _chart_data(at.get("vega_lite_chart")[0])
    assert set(shown["model"]) == {"before: trained model"}
    np.testing.assert_allclose(shown["probability"].to_numpy(), p_before, rtol=1e-5)
    assert _metrics(at) == _shown(_evaluate(library, []))
    assert set(_chart_data(at.get("vega_lite_chart")[-1])["model"]) == {"before: trained model"}
    assert "From the flip stage" in " ".join(c.value for c in at.caption)

    at.button(key="ex_zero").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="ex_units").value == units and not at.button(key="ex_reset").disabled
    items = [ZeroUnits(tuple(units))]
    with intervene(model, items):
        p_after = torch.softmax(predict(model, x), 1)[0].numpy()
    after = f"after: {len(units)} units zeroed"
    chart = at.get("vega_lite_chart")[0]
    shown = _chart_data(chart)
    np.testing.assert_allclose(shown.loc[shown["model"] == "before: trained model", "probability"], p_before, rtol=1e-5)
    np.testing.assert_allclose(shown.loc[shown["model"] == after, "probability"], p_after, rtol=1e-5)
    layers = json.loads(chart.proto.spec)["layer"]  # grouped bars, each with its value written on it
    assert [layer["mark"]["type"] for layer in layers] == ["bar", "text"] and layers[1]["encoding"]["text"]["field"] == "bar_label"
    assert _metrics(at) == _shown(_evaluate(library, items))

    maps = at.get("vega_lite_chart")[-1]
    shown = _all_chart_data(maps)
    assert set(shown["model"]) == {"before: trained model", after, "after − before"}
    true_label = int(labels["true_label"][example])
    with intervene(model, items):
        expected_after = attribution.attribute(model, "IntegratedGradients", x, true_label)[0].sum(0)
    expected_before = attribution.attribute(model, "IntegratedGradients", x, true_label)[0].sum(0)
    true_rows = shown[shown["target"].str.startswith("true label")]
    for state, expected in [(after, expected_after), ("after − before", expected_after - expected_before)]:
        one = true_rows[true_rows["model"] == state].sort_values(["y", "x"])["attribution"].to_numpy()
        np.testing.assert_allclose(one, expected.numpy().ravel(), rtol=1e-4, atol=1e-6)
    # The difference has its own colour scale: centred on 0, ascending (high end on top of the colour bar).
    scales = [part["spec"]["encoding"]["color"]["scale"] for part in json.loads(maps.proto.spec)["hconcat"]]
    difference = np.abs(shown.loc[shown["model"] == "after − before", "attribution"]).max()
    assert scales[1]["domain"] == pytest.approx([-difference, difference]) and scales[1]["reverse"] is True

    at.button(key="ex_reset").click().run()
    assert at.multiselect(key="ex_units").value == []
    assert set(_chart_data(at.get("vega_lite_chart")[0])["model"]) == {"before: trained model"}
    at.selectbox(key="ex_method").set_value("LayerConductance").run()
    assert not at.exception
    assert at.selectbox(key="ex_layer").options == list(model.unit_layers)
    assert "unit" in _chart_data(at.get("vega_lite_chart")[-1]).columns
    at.number_input(key="ex_id").set_value(example + 1).run()
    assert at.query_params["example"] == str(example + 1)
    assert any(m.value.startswith(f"**{'Noisy' if labels['is_noisy'][example + 1] else 'Clean'} example #{example + 1}**")
               for m in at.markdown)


def test_an_example_without_a_flip_set_gets_one_computed_live(monkeypatch, explorer_run, library):
    from memloc.flipping import flip_examples
    from memloc.interventions import UnitIndex

    opened, model = library
    targets = set(explorer_run.read_table("flipping")["example_id"])
    fitted = (predict(model, opened.data.train_x).argmax(1) == opened.labels.train_labels).numpy()
    candidates = [i for i in np.flatnonzero(fitted) if i not in targets]
    example = next((i for i in candidates if opened.labels.is_noisy[i]), candidates[0])  # a memorized one if any
    result = flip_examples(model, opened.data.train_x, opened.labels.train_labels, [example], opened.config.flip)[0]
    units = UnitIndex(model).names(result.units)
    at = _app(monkeypatch, explorer_run.path.parent, page="example", example=str(example)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Computed live now" in " ".join(c.value for c in at.caption)
    assert at.multiselect(key="ex_units").value == []  # computed, but not applied until asked
    assert at.button(key="ex_zero").label == f"Zero its flip set ({len(units)} units)"
    at.button(key="ex_zero").click().run()
    assert at.multiselect(key="ex_units").value == units
    with intervene(model, [ZeroUnits(tuple(units))]):
        expected = torch.softmax(predict(model, opened.data.train_x[[example]]), 1)[0].numpy()
    shown = _chart_data(at.get("vega_lite_chart")[0])
    np.testing.assert_allclose(shown.loc[shown["model"] == f"after: {len(units)} units zeroed", "probability"], expected, rtol=1e-5)
    assert int(expected.argmax()) == result.new_prediction


@pytest.mark.parametrize("sel, kept, notice", [
    ("3,5, 9", [3, 5, 9], None),
    ("3;x;99999;3;-1", [3], "`sel=3;x;99999;3;-1`: `x`, `99999`, `-1` are not training example ids of this run (0-399"),
])
def test_the_selection_comes_from_the_link_and_is_carried_across_pages(monkeypatch, explorer_run, sel, kept, notice):
    at = _app(monkeypatch, explorer_run.path.parent, page="examples", sel=sel).run()
    assert not at.exception, [e.value for e in at.exception]
    notices = [box.value for box in at.info if "From the link" in box.value]
    assert (any(notice in text for text in notices) if notice else not notices), notices
    assert at.text_input(key="sel_text").value == ", ".join(map(str, kept))
    assert at.query_params["sel"] == ",".join(map(str, kept))
    assert f"Selection: **{len(kept)}** example" in " ".join(c.value for c in at.sidebar.caption)
    assert [box.key for box in at.checkbox if box.key.startswith("gal_pick_") and box.value] == [f"gal_pick_{i}" for i in kept]
    at.switch_page("views/example.py").run()
    assert not at.exception
    assert at.text_input(key="sel_text").value == ", ".join(map(str, kept)) and at.query_params["sel"] == ",".join(map(str, kept))


def test_the_selection_is_picked_pasted_and_exported_filtered(monkeypatch, explorer_run):
    import io
    import zipfile

    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    served: dict[str, bytes] = {}
    load = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):  # what a download button serves
        served[filename] = data
        return load(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    at = _page(monkeypatch, explorer_run, "examples")
    assert "sel" not in at.query_params and at.button(key="sel_clear").disabled
    at.checkbox(key="gal_pick_2").check().run()
    assert at.query_params["sel"] == "2" and at.text_input(key="sel_text").value == "2"
    at.text_input(key="sel_text").input("7 12, 5 abc").run()
    assert not at.exception
    assert at.query_params["sel"] == "7,12,5" and not at.checkbox(key="gal_pick_2").value
    assert "From the field: `abc` is not a training example id" in at.warning[-1].value
    ids = [7, 12, 5]
    archive = zipfile.ZipFile(io.BytesIO(served["smoke_selection.zip"]))
    written = {name.split("/")[-1][: -len(".csv")]: pd.read_csv(archive.open(name)) for name in archive.namelist()}
    per_example = [t for t in explorer_run.tables() if "example_id" in explorer_run.read_table(t).columns]
    assert set(written) == {"labels", *per_example} and len(per_example) >= 5
    for name in per_example:
        expected = explorer_run.read_table(name)
        expected = expected[expected["example_id"].isin(ids)]
        assert sorted(written[name]["example_id"]) == sorted(expected["example_id"])
    assert written["example_training"]["example_id"].value_counts().to_dict() == {i: 3 for i in ids}  # 3 epochs each
    assert written["labels"]["example_id"].tolist() == ids
    assert written["labels"]["train_label"].tolist() == explorer_run.read_labels()["train_label"][ids].tolist()
    at.checkbox(key="gal_only_selected").check().run()
    assert [int(link.proto.label.split()[0][1:]) for link in at.get("page_link")] == sorted(ids)
    at.button(key="sel_clear").click().run()
    assert "sel" not in at.query_params and at.text_input(key="sel_text").value == ""
    assert len(at.get("page_link")) == 24  # "only the selection" goes off with the selection


def test_gallery_sorts_by_memorization_epoch_and_by_flip_set_size(monkeypatch, explorer_run):
    from memloc.train import memorized_from

    labels = explorer_run.read_labels()
    at = _page(monkeypatch, explorer_run, "examples")
    at.selectbox(key="gal_order").set_value("memorized").run()
    shown = [int(link.proto.label.split()[0][1:]) for link in at.get("page_link")]
    when = memorized_from(explorer_run.read_table("example_training"), labels["is_noisy"]).dropna()
    order = when.sort_values(["memorized_from", "example_id"], kind="stable")["example_id"].tolist()
    assert len(order) > 1 and shown[: len(order)] == order[:24]  # the examples without a value come after them
    flips = explorer_run.read_table("flipping")
    flipped = flips[flips["flipped"]].sort_values(["n_units", "example_id"], kind="stable")
    at.selectbox(key="gal_order").set_value("flip").run()
    shown = [int(link.proto.label.split()[0][1:]) for link in at.get("page_link")]
    assert len(flipped) > 1 and shown[: len(flipped)] == flipped["example_id"].tolist()[:24]
    assert f"flip set {int(flipped['n_units'].iloc[0])} units" in " ".join(c.value for c in at.caption)


@pytest.mark.parametrize("page, file", [
    ("examples", "tables/example_training.parquet"), ("examples", "tables/flipping.parquet"), ("examples", "labels.npz"),
    ("example", "tables/example_training.parquet"), ("example", "tables/example_gradients.parquet"),
    ("example", "tables/rewinding_examples.parquet"), ("example", "tables/flipping.parquet"), ("example", "labels.npz"),
    ("example", "tables/localizer_units.parquet"),
])
def test_a_truncated_file_gives_the_error_card_on_the_example_pages(monkeypatch, explorer_run, tmp_path, page, file):
    root = tmp_path / "runs"
    shutil.copytree(explorer_run.path, root / "smoke")
    path = root / "smoke" / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    noisy = int(np.flatnonzero(explorer_run.read_labels()["is_noisy"])[0])  # rewinding_examples tracks noisy ones
    at = _app(monkeypatch, root, page=page, example=str(noisy)).run()
    assert not at.exception, [e.value for e in at.exception]
    cards = [e.value for e in at.error]
    assert len(cards) == 1 and cards[0].startswith("Run **smoke** cannot be shown") and path.name in cards[0], cards
    assert at.title  # the page itself is there


def test_dropout_page_counts_survivors(monkeypatch, explorer_run):
    at = _page(monkeypatch, explorer_run, "dropout")
    assert len(at.get("vega_lite_chart")) == 1
    # Every bar's value is written on it: a text layer over the same rows, 'n/a' where there is no value.
    spec = json.loads(at.get("vega_lite_chart")[0].proto.spec)
    texts = [layer for layer in spec["layer"] if layer["mark"]["type"] == "text"]
    assert len(texts) == 1 and texts[0]["encoding"]["text"]["field"] == "bar_label"
    shown = _chart_data(at.get("vega_lite_chart")[0])
    assert len(shown) == 4 * 4 and shown.query("mode == 'dropout: train mode (own masks)' and population == 'test'")["accuracy"].isna().all()
    table = explorer_run.read_table("dropout_examples")
    noisy = explorer_run.read_labels()["is_noisy"]
    wide = table.pivot(index="example_id", columns="mode", values="correct").reindex(np.flatnonzero(noisy))
    fitted = "train" if "train" in wide.columns else "test"
    survive = int((wide[fitted].fillna(False).astype(bool) & wide["drop"].fillna(False).astype(bool)).sum())
    assert f"**{survive:,}** of them keep their noisy label" in at.markdown[1].value
    before = len(at.get("page_link"))
    at.radio(key="do_which").set_value("forgotten in drop mode").run()
    assert not at.exception
    assert len(at.get("page_link")) != before or before == 0


@pytest.mark.parametrize("page,table", [("rewinding", "rewinding"), ("retraining", "retraining"),
                                        ("neurons", "flipping"), ("dropout", "dropout"), ("gradients", "gradients")])
def test_a_run_without_the_table_says_which_command_adds_it(monkeypatch, smoke_run, tmp_path, page, table):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run.path, root / "smoke")
    run = Run(root / "smoke")
    manifest = json.loads((run.path / "manifest.json").read_text())
    del manifest["files"][f"tables/{table}.parquet"]  # as if its stage had not run
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    at = _page(monkeypatch, run, page)
    assert any(f"`{table}`" in i.value for i in at.info)
    assert f"python -m precompute run --preset smoke --out {run.path}" in [c.value for c in at.code]


def test_a_corrupt_table_gives_an_error_card_on_an_analysis_page(monkeypatch, explorer_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(explorer_run.path, root / "smoke")
    (root / "smoke" / "tables" / "rewinding.parquet").write_bytes(b"not parquet")
    at = _page(monkeypatch, Run(root / "smoke"), "rewinding")
    assert "does not match the checksum" in at.error[0].value


def test_interventions_round_trip_through_the_url_form():
    from app.url import decode_interventions, encode_interventions

    items = [Rewind("fc1", 0), Rewind("res2.0", 4, include_buffers=False), ZeroUnits(("fc1[3]", "layer1.0.conv[17]"))]
    text = encode_interventions(items)
    assert text == "rewind:fc1@0+rewind:res2.0@4!nobuf+zero:fc1[3],layer1.0.conv[17]"
    assert decode_interventions(text) == items
    for bad in ("rewind:fc1", "zero:fc1", "rm:-rf", "rewind:fc1@x"):
        assert decode_interventions(bad) == []


def test_the_figure_download_is_an_svg_of_the_chart(monkeypatch, explorer_run):
    from app.charts import _svg

    at = _app(monkeypatch, explorer_run.path.parent, page="overview").run()
    svg = _svg(at.get("vega_lite_chart")[0].proto.spec)
    assert svg.lstrip().startswith("<svg") and "Accuracy per epoch" in svg


@pytest.mark.parametrize("mode", ["test", "drop"])
def test_example_page_for_the_dropout_model(monkeypatch, explorer_run, mode):
    from models.example_tied_dropout import dropout_mode

    example = 7
    at = _app(monkeypatch, explorer_run.path.parent, page="example", example=str(example), model=mode).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="ex_model").value == mode
    opened = open_run(explorer_run)
    model = opened.model(variant="dropout")
    with dropout_mode(model, mode):
        expected = torch.softmax(predict(model, opened.data.train_x[[example]]), 1)[0].numpy()
    np.testing.assert_allclose(_chart_data(at.get("vega_lite_chart")[0])["probability"].to_numpy(), expected, rtol=1e-5)
    assert any("dropout model" in m.value for m in at.markdown)


def test_compare_page_shows_the_sweeps_summary_and_follows_the_chosen_number(monkeypatch, explorer_run):
    from memloc.store import Sweep

    at = _app(monkeypatch, explorer_run.path.parent, page="compare", sweep="grid").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="cmp_sweep").value == "grid"
    assert "4 points: 4 complete" in " ".join(c.value for c in at.caption)
    summary = Sweep(explorer_run.path.parent / "grid").read_summary()
    settings = summary[(summary["scope"] == "setting") & (summary["metric"] == "memorized")]
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # the key number against a setting, the training curves
    shown = pd.concat([pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in charts[0].proto.datasets])
    means = shown.dropna(subset=["low"]).sort_values("point")
    assert means["mean"].tolist() == pytest.approx(settings.sort_values("point")["mean"].tolist())
    at.selectbox(key="cmp_metric").set_value("test_acc").run()
    assert not at.exception and at.query_params["metric"] == "test_acc"
    shown = pd.concat([pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in at.get("vega_lite_chart")[0].proto.datasets])
    expected = summary[(summary["scope"] == "setting") & (summary["metric"] == "test_acc")]
    assert sorted(shown.dropna(subset=["low"])["mean"]) == pytest.approx(sorted(expected["mean"]))


def test_compare_page_with_runs_picked_by_hand_and_a_sweep_without_summary(monkeypatch, explorer_run, tmp_path):
    at = _app(monkeypatch, explorer_run.path.parent, page="compare", source="runs", runs="smoke;grid/seed=1,noise_frac=0.2")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="cmp_runs").value == ["smoke", "grid/seed=1,noise_frac=0.2"]
    assert len(at.get("vega_lite_chart")) == 2
    root = tmp_path / "runs"
    shutil.copytree(explorer_run.path.parent / "grid", root / "grid")
    shutil.copytree(explorer_run.path, root / "smoke")
    (root / "grid" / "summary.parquet").unlink()
    at = _app(monkeypatch, root, page="compare").run()
    assert not at.exception
    assert f"python -m precompute summarize {root / 'grid'}" in [c.value for c in at.code]


def _findings(at: AppTest) -> dict[str, str]:
    """Claim text -> the number the Findings page shows for it."""
    texts = [m.value for m in at.markdown if "font-size:1.35rem" in m.value]
    numbers = [m.value for m in at.markdown if "font-size:2.2rem" in m.value]
    strip = lambda v: v.split(">", 1)[1].rsplit("</div>", 1)[0]  # noqa: E731
    return {html.unescape(strip(t)): html.unescape(strip(n)) for t, n in zip(texts, numbers)}


def test_findings_is_the_first_page_and_scores_the_selected_run(monkeypatch, explorer_run):
    at = _app(monkeypatch, explorer_run.path.parent, run="smoke").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Findings: does the paper hold here?"
    card = scorecard.scorecards(explorer_run.path)[0].card
    shown = _findings(at)
    assert shown == {row["text"]: scorecard.format_number(row, with_n=False) for _, row in card.iterrows()}
    counts = {m.label: m.value for m in at.metric}
    assert counts == {v: f"{(card['verdict'] == v).sum()} of {len(card)}" for v in scorecard.VERDICTS}
    links = at.get("page_link")
    assert len(links) == len(scorecard.CLAIMS)
    critical = scorecard.critical_groups(scorecard.measure_run(explorer_run))
    rewinding = [urllib.parse.parse_qs(link.proto.query_string) for link in links if link.proto.label.endswith("Layer rewinding")]
    assert len(rewinding) == 2 and critical  # the layer claims open the page with the critical groups rewound
    assert all(q["intervention"] == ["+".join(f"rewind:{g}@0" for g in critical)] and q["run"] == ["smoke"] for q in rewinding)
    assert not at.info  # every stage is there: nothing to add


def test_findings_of_a_sweep_folds_the_seeds_and_picks_a_setting(monkeypatch, explorer_run):
    at = _app(monkeypatch, explorer_run.path.parent, run="smoke", of="sweep:grid").run()
    assert not at.exception, [e.value for e in at.exception]
    sections = scorecard.scorecards(explorer_run.path.parent / "grid")
    assert at.selectbox(key="findings_setting").options == [s.title for s in sections]
    for section in sections:
        at.selectbox(key="findings_setting").select(section.title).run()
        assert _findings(at) == {row["text"]: scorecard.format_number(row, with_n=False) for _, row in section.card.iterrows()}
        assert " ± " in _findings(at)[scorecard.CLAIMS[0].text]
        badges = [m.value for m in at.markdown if "holds on" in m.value]  # under each verdict measured on both seeds
        spread = section.card[section.card["n"] > 1]
        assert len(badges) == len(spread) > 0
        assert all(f"holds on {row['holds_on']} seeds" in badge for (_, row), badge in zip(spread.iterrows(), badges))
        assert at.query_params["setting"] == section.title


def test_findings_of_a_run_lacking_stages_says_not_measured_and_the_command(monkeypatch, smoke_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(smoke_run.path, root / "smoke")
    manifest = json.loads((root / "smoke" / "manifest.json").read_text())
    for stage in ("flip", "dropout", "localize"):  # localize needs the dropout model
        manifest["stages"].pop(stage)
    manifest["config"]["stages"] = ["train", "example_gradients", "rewind", "retrain"]
    for name in [f for f in manifest["files"] if "flip" in f or "dropout" in f or "localizer" in f]:
        del manifest["files"][name]  # as if the run had been made without those stages
    (root / "smoke" / "manifest.json").write_text(json.dumps(manifest))
    at = _app(monkeypatch, root).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["not measured"] == "4 of 9"
    assert not [r for r in at.radio if r.key == "findings_of"]  # no sweep under the root: nothing to choose
    assert "`flip`, `dropout`" in at.info[0].value
    stages = '["train", "example_gradients", "rewind", "retrain", "flip", "dropout"]'  # what the claims need, not localize
    assert at.code[0].value == f"python -m precompute run --preset smoke --set 'stages={stages}' --out {root / 'smoke'}"


@pytest.mark.parametrize("page, params, notice", [
    ("findings", {"run": "nosuchrun"}, "`run=nosuchrun` is not a run under"),
    ("example", {"example": "99999"}, "`example=99999` is not a training example id of this run (0-"),
    ("example", {"example": "seven"}, "`example=seven` is not a training example id"),
    ("rewinding", {"intervention": "rewind:fc9@0"}, "`intervention=rewind:fc9@0`: fc9@0 is not a layer group of this run"),
    ("rewinding", {"intervention": "warp:fc1"}, "`intervention=warp:fc1`: warp:fc1 is not a layer group"),
    ("rewinding", {"example": "3, 99999, 3"}, "`example=3, 99999, 3`: 2 of its 3 ids are not distinct training example ids"),
    ("neurons", {"intervention": "zero:fc1[9999]"}, "`intervention=zero:fc1[9999]`: fc1[9999] is not a set of this model's units"),
])
def test_a_link_value_that_is_not_used_says_so(monkeypatch, explorer_run, page, params, notice):
    """An odd value in a link is named in a notice, and the page still shows what it falls back to."""
    at = _app(monkeypatch, explorer_run.path.parent, page=page, **params).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [box.value for box in at.info]
    assert any(notice in text for text in shown), shown
    assert at.title  # the page itself is there


def test_a_valid_link_gives_no_notice(monkeypatch, explorer_run):
    at = _app(monkeypatch, explorer_run.path.parent, page="rewinding", run="smoke", intervention="rewind:fc2@1", example="3, 5").run()
    assert not at.exception and not [box.value for box in at.info if "From the link" in box.value]


def _encodings(spec):
    """Every encoding channel of a chart's spec, through layers, facets and concatenations."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "encoding":
                for channel in value.values():
                    yield from channel if isinstance(channel, list) else [channel]
            else:
                yield from _encodings(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from _encodings(item)


def _colours(chart, field: str) -> dict[str, str]:
    """The colour of each value of `field` in a chart (its colour scale's domain and range)."""
    scale = next(e["scale"] for e in _encodings(json.loads(chart.proto.spec)) if e.get("field") == field and "scale" in e)
    return dict(zip(scale["domain"], scale["range"]))


def test_clean_noisy_and_test_keep_their_colours_on_every_page(monkeypatch, explorer_run):
    from app.charts import BLUE, GREEN, PURPLE, VERMILLION

    overview = _page(monkeypatch, explorer_run, "overview")
    assert _colours(overview.get("vega_lite_chart")[0], "population") == {
        POPULATIONS["clean"]: BLUE, POPULATIONS["noisy"]: VERMILLION, POPULATIONS["noisy_true"]: GREEN, POPULATIONS["test"]: PURPLE}
    gradients = _page(monkeypatch, explorer_run, "gradients")
    assert _colours(gradients.get("vega_lite_chart")[0], "part") == {"clean examples": BLUE, "noisy examples": VERMILLION}
    neurons = _page(monkeypatch, explorer_run, "neurons")
    assert _colours(neurons.get("vega_lite_chart")[0], "kind") == {"clean": BLUE, "noisy": VERMILLION}


@pytest.mark.parametrize("page", ["gradients", "rewinding", "retraining", "neurons"])
def test_no_raw_column_name_reaches_a_table_an_axis_or_a_legend(monkeypatch, explorer_run, page):
    from app.charts import LABELS

    raw = {column for column, label in LABELS.items() if column != label}  # noisy_share, clean_acc, example_id, ...
    at = _page(monkeypatch, explorer_run, page)
    assert at.get("vega_lite_chart")
    for frame in at.dataframe:
        assert not raw & set(map(str, frame.value.columns)), list(frame.value.columns)
    for chart in at.get("vega_lite_chart"):
        untitled = [e["field"] for e in _encodings(json.loads(chart.proto.spec)) if e.get("field") in raw and "title" not in e]
        assert not untitled, untitled
