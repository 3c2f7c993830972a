"""The Story page under AppTest: every step on the full smoke run (its sentence and big number
against the run's own tables and the library's live numbers), the live buttons, Next / Previous,
a run without some stages (the steps skipped with a note) and odd `?step=` values."""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from memloc import scorecard
from memloc.evaluate import evaluate, predict
from memloc.interventions import Rewind, ZeroUnits, intervene
from memloc.runs import open_run
from memloc.store import Run
from memloc.summary import key_numbers

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
STEPS = ["data", "fit", "gradients", "rewinding", "retraining", "example", "dropout", "scorecard"]


def _story(monkeypatch, run: Run, **params) -> AppTest:
    monkeypatch.setenv("MEMLOC_RUNS", str(run.path.parent))
    monkeypatch.setattr(sys, "argv", ["main.py"])
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in {"page": "story", "run": run.name, **params}.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _sentence(at: AppTest) -> str:
    shown = [m.value for m in at.markdown if "story-sentence" in m.value]
    return html.unescape(re.sub("<[^>]+>", "", shown[0])) if shown else ""


def _number(at: AppTest) -> tuple[str, str]:
    return at.metric[0].label, at.metric[0].value


def pct(x: float) -> str:
    return f"{x:.0%}"


@pytest.fixture(scope="module")
def expected(explorer_run):
    """Per step: a fragment of its sentence and its big number, from the run's tables and the library."""
    run = explorer_run
    labels, numbers = run.read_labels(), key_numbers(run)
    noisy = labels["is_noisy"]
    rewound = {k.split(".", 1)[1]: v for k, v in numbers.items() if k.startswith("rewound.")}
    critical = scorecard.critical_groups(numbers)
    group = min(critical or rewound, key=rewound.get)
    retrained = [v for k, v in numbers.items() if k.startswith("retrained.")]
    back = sum(v >= scorecard.KEEPS * numbers["memorized"] for v in retrained)
    flips = run.read_table("flipping")
    targets = flips[(flips["kind"] == "noisy") & flips["flipped"]]
    off = (targets["n_units"] - targets["n_units"].median()).abs()
    example = int(targets.assign(off=off).sort_values(["off", "example_id"]).iloc[0]["example_id"])  # median size, lowest id
    opened = open_run(run)
    probs = torch.softmax(predict(opened.model(), opened.data.train_x[[example]]), 1)[0].numpy()
    told = int(labels["train_label"][example])
    card = scorecard.scorecards(run.path)[0].card
    dropout = run.read_table("dropout").set_index("mode")
    return {
        "data": (f"{int(noisy.sum()):,} of the labels ({noisy.mean():.0%})", pct(noisy.mean())),
        "fit": (f"gives {pct(numbers['memorized'])} of the flipped ones their wrong label", pct(numbers["memorized"])),
        "gradients": (f"they make {pct(numbers['noisy_share_at_peak'])} of the gradient", pct(numbers["noisy_share_at_peak"])),
        "rewinding": (f"layer group, {group}, back to its random initial weights", pct(numbers["memorized"])),
        "retraining": (f"in {back} of {len(retrained)} groups the flipped labels come back", f"{back} of {len(retrained)}"),
        "example": (f"was labelled {told}", pct(probs[told])),
        "dropout": (f"and {pct(dropout.at['drop', 'noisy_acc'])} remain", pct(dropout.at["drop", "noisy_acc"])),
        "scorecard": (f"Of the paper's {len(card)} claims, {(card['verdict'] == 'holds').sum()} hold",
                      f"{(card['verdict'] == 'holds').sum()} of {len(card)}"),
    }, group, example, opened


@pytest.mark.parametrize("step", STEPS)
def test_each_step_of_the_full_run_shows_its_sentence_number_and_chart(monkeypatch, explorer_run, expected, step):
    at = _story(monkeypatch, explorer_run, step=step)
    sentence, number = expected[0][step]
    assert sentence in _sentence(at), _sentence(at)
    assert _number(at)[1] == number
    assert len(at.get("vega_lite_chart")) >= 1 and not at.info and not at.error
    assert at.query_params["step"] == step and at.sidebar.radio(key="story_step").value == step


def test_next_walks_every_step_and_previous_goes_back(monkeypatch, explorer_run):
    at = _story(monkeypatch, explorer_run)
    seen = [at.query_params["step"]]
    assert at.button(key="story_prev").disabled
    while not at.button(key="story_next").disabled:
        at.button(key="story_next").click().run()
        assert not at.exception, [e.value for e in at.exception]
        seen.append(at.query_params["step"])
    assert seen == STEPS
    at.button(key="story_prev").click().run()
    assert at.query_params["step"] == "dropout"


def _accuracy(opened, items, key="noisy_acc"):
    model = opened.model()
    d = opened.data
    with intervene(model, items, checkpoint=opened.checkpoint):
        return evaluate(model, d.train_x, opened.labels, d.test_x, d.test_labels)[key]


def test_rewinding_live_rewinds_the_critical_group_and_restores(monkeypatch, explorer_run, expected):
    _, group, _, opened = expected
    at = _story(monkeypatch, explorer_run, step="rewinding")
    before = _number(at)
    assert before[1] == pct(_accuracy(opened, []))  # opens on the trained model
    at.button(key="story_rewind").click().run()
    assert _number(at)[1] == pct(_accuracy(opened, [Rewind(group, 0)]))
    assert at.metric[0].delta.endswith(f"{group} rewound")
    at.button(key="story_restore").click().run()
    assert _number(at) == before


def test_one_example_live_zeroes_its_flip_set_and_restores(monkeypatch, explorer_run, expected):
    _, _, example, opened = expected
    flips = explorer_run.read_table("flipping").set_index("example_id")
    units = tuple(str(u) for u in flips.at[example, "units"])
    told = int(explorer_run.read_labels()["train_label"][example])
    at = _story(monkeypatch, explorer_run, step="example")
    before = _number(at)
    assert len(at.get("vega_lite_chart")) == 2  # probabilities, attribution map (before only)
    at.button(key="story_zero").click().run()
    model = opened.model()
    with intervene(model, [ZeroUnits(units)]):
        after = torch.softmax(predict(model, opened.data.train_x[[example]]), 1)[0].numpy()
    assert _number(at)[1] == pct(after[told]) and at.metric[0].delta.endswith(f"{len(units)} units off")
    at.button(key="story_unzero").click().run()
    assert _number(at) == before
    at = _story(monkeypatch, explorer_run, step="example", example=str(int(flips.index[0])))
    assert at.session_state["story_example"] == int(flips.index[0])  # a flipped example from the link


@pytest.fixture(scope="module")
def partial_run(smoke_run, tmp_path_factory) -> Run:
    """The smoke run as if made without the rewind, retrain and dropout stages."""
    dst = tmp_path_factory.mktemp("story") / "runs" / "partial"
    shutil.copytree(smoke_run.path, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    for stage in ("rewind", "retrain", "dropout"):
        manifest["stages"].pop(stage)
    manifest["config"]["stages"] = ["train", "example_gradients", "flip"]
    for name in [f for f in manifest["files"] if any(k in f for k in ("rewinding", "retraining", "dropout"))]:
        del manifest["files"][name]
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return Run(dst)


SKIPPED = {"rewinding": ("rewinding", "rewind"), "retraining": ("retraining", "retrain"), "dropout": ("dropout", "dropout")}
"""step -> the table it lacks and the stage that writes it"""


@pytest.mark.parametrize("step", STEPS)
def test_a_run_missing_stages_skips_their_steps_with_a_note(monkeypatch, partial_run, step):
    at = _story(monkeypatch, partial_run, step=step)
    note = " ".join(c.value for c in at.caption)
    assert "Skipped on this run" in note and "Rewinding (`rewind`)" in note and "Dropout (`dropout`)" in note
    if step in SKIPPED:
        table, stage = SKIPPED[step]
        assert any(f"`{table}`" in i.value for i in at.info) and not at.metric
        command = at.code[0].value  # the command that adds the stage to this run
        assert command.startswith("python -m precompute run --preset smoke") and f'"{stage}"' in command
        assert command.endswith(f"--out {partial_run.path}")
        assert "This step is skipped on this run" in note
    else:
        assert _sentence(at) and at.metric and not at.info


def test_next_and_previous_pass_over_the_skipped_steps(monkeypatch, partial_run):
    at = _story(monkeypatch, partial_run, step="gradients")
    at.button(key="story_next").click().run()
    assert at.query_params["step"] == "example"
    at.button(key="story_next").click().run()
    assert at.query_params["step"] == "scorecard" and at.button(key="story_next").disabled
    at.button(key="story_prev").click().run()
    assert at.query_params["step"] == "example"


@pytest.mark.parametrize("value, shown, notice", [
    ("99", "data", "`step=99` is not a step of the story (1-8"),
    ("0", "data", "`step=0` is not a step of the story"),
    ("warp", "data", "`step=warp` is not one of data, fit,"),
    ("4", "rewinding", None),
    ("dropout", "dropout", None),
])
def test_a_step_from_the_link_by_number_or_name_and_a_notice_for_others(monkeypatch, explorer_run, value, shown, notice):
    at = _story(monkeypatch, explorer_run, step=value)
    assert at.query_params["step"] == shown
    notices = [i.value for i in at.info if "From the link" in i.value]
    assert (any(notice in n for n in notices) if notice else not notices), notices
