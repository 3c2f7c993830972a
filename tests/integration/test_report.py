"""`precompute report`: the scorecard of a run and of a sweep, as Markdown and HTML, from the
runs' own tables."""

from __future__ import annotations

import json
import shlex
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest

from memloc import scorecard
from memloc.store import Run
from precompute.cli import main


class _Cells(HTMLParser):
    """The text of every table cell of an HTML page (and whether it had a script)."""

    def __init__(self):
        super().__init__()
        self.cells, self.scripts, self._in = [], 0, False

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        if tag == "td":
            self._in, self.cells = True, [*self.cells, ""]

    def handle_endtag(self, tag):
        self._in = self._in and tag != "td"

    def handle_data(self, data):
        if self._in:
            self.cells[-1] += data


def test_report_of_a_run_in_markdown_has_a_row_per_claim_with_the_runs_numbers(smoke_run, capsys):
    assert main(["report", str(smoke_run.path)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) == len(scorecard.CLAIMS)
    memorized = smoke_run.read_table("training").iloc[-1]["noisy_acc"]
    first = rows[0].split(" | ")
    assert first[0] == f"| {scorecard.CLAIMS[0].text}" and first[2] == f"{memorized:.0%} {scorecard.CLAIMS[0].reads}"
    assert first[3] in {f"**{v}**" for v in scorecard.VERDICTS}
    assert "not measured" not in text  # the smoke run has every stage


def test_report_of_a_sweep_folds_the_seeds_per_setting_in_html(smoke_sweep, tmp_path):
    out = tmp_path / "card.html"
    assert main(["report", str(smoke_sweep.path), "--format", "html", "--out", str(out)]) == 0
    page = _Cells()
    page.feed(out.read_text())
    assert page.scripts == 0 and len(page.cells) == 2 * len(scorecard.CLAIMS) * 5  # two settings, five columns
    sections = scorecard.scorecards(smoke_sweep.path)
    assert [s.title for s in sections] == ["sweep grid, noise_frac=0.1 (2 seeds)", "sweep grid, noise_frac=0.2 (2 seeds)"]
    for section in sections:  # the number is the mean over the setting's seeds of each seed's own number
        values = [Run(p).read_table("training").iloc[-1]["noisy_acc"] for p in section.runs]
        row = section.card.set_index("claim").loc["memorized"]
        assert row["n"] == 2 and row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert scorecard.format_number(row) + row["reads"] in page.cells


def test_report_says_what_is_not_measured_and_the_command_that_measures_it(smoke_run, tmp_path, capsys):
    run = tmp_path / "runs" / "smoke"
    shutil.copytree(smoke_run.path, run)
    manifest = json.loads((run / "manifest.json").read_text())
    for stage in ("dropout", "localize"):  # as if the run had been made without the dropout stage (and so
        manifest["stages"].pop(stage)     # without stage localize, whose first ground truth is the dropout model)
    manifest["config"]["stages"] = [s for s in manifest["config"]["stages"] if s not in ("dropout", "localize")]
    for name in [f for f in manifest["files"] if "dropout" in f or "localizer" in f]:
        del manifest["files"][name]
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert main(["report", str(run)]) == 0
    text = capsys.readouterr().out
    dropout_row = next(line for line in text.splitlines() if line.startswith(f"| {scorecard.CLAIMS[-1].text}"))
    assert "**not measured**" in dropout_row
    card = scorecard.scorecards(run)[0]
    assert card.card.set_index("claim").loc["dropout", "verdict"] == "not measured"
    assert card.absent == ("dropout",) and card.command in text
    assert main(shlex.split(card.command)[3:]) == 0  # `python -m precompute run ...`: the proposed fix works
    assert scorecard.scorecards(run)[0].card.set_index("claim").loc["dropout", "verdict"] != "not measured"


@pytest.mark.parametrize("target,says", [("/nonexistent/run", "no run or sweep directory"), (".", "is not a memloc run")])
def test_report_of_something_else_is_one_line_and_exit_2(target, says, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", target]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err


def test_report_in_an_unknown_format_is_refused_by_the_parser(smoke_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(smoke_run.path), "--format", "pdf"])
    assert exit_.value.code == 2 and "invalid choice: 'pdf'" in capsys.readouterr().err


def test_report_into_an_unwritable_place_is_one_line(smoke_run, tmp_path, capsys):
    assert main(["report", str(smoke_run.path), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path}: ")


def test_a_damaged_point_is_left_out_of_its_setting_and_said_so(smoke_sweep, tmp_path, capsys):
    sweep = tmp_path / "grid"
    shutil.copytree(smoke_sweep.path, sweep)
    (sweep / "seed=1,noise_frac=0.2" / "tables" / "training.parquet").write_bytes(b"not parquet")
    assert main(["report", str(sweep)]) == 0
    text = capsys.readouterr().out
    assert "## sweep grid, noise_frac=0.2 (1 seed)" in text and "## sweep grid, noise_frac=0.1 (2 seeds)" in text
    assert "Left out: seed=1,noise_frac=0.2 (" in text and "does not match the checksum" in text


def test_a_run_without_label_noise_goes_through_every_stage_and_measures_no_claim(tmp_path, capsys):
    """Natural memorization is studied without injected noise: every stage runs, and the claims
    about noisy examples say "not measured" rather than a verdict on nothing."""
    run = tmp_path / "clean"
    assert main(["run", "--preset", "smoke", "--set", "data.noise_frac=0.0", "--out", str(run)]) == 0
    assert all(Run(run).is_complete(stage) for stage in Run(run).manifest()["config"]["stages"])
    card = scorecard.scorecards(run)[0].card
    assert set(card["verdict"]) == {"not measured"}
