"""The explorer in a real browser: Debian's Chromium driven by Playwright, against a live server.

Visits every page, checks each renders its heading and charts without an exception, zeroes units
on the Neurons page and waits for the accuracy the library computes, walks the Story with Next at
1600x1000 (every bar's value written on the dropout step's chart), opens `/overview` as a link and the HTML scorecard of
`precompute report`, and saves a screenshot of every page under the test's temp directory. Skips only where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from memloc import scorecard
from memloc.evaluate import POPULATIONS, accuracy_column, evaluate
from memloc.interventions import ZeroUnits, intervene
from memloc.runs import open_run
from precompute.cli import main

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
PAGES = {  # url path -> heading
    "findings": "Findings: does the paper hold here?",
    "story": "The data, with some labels flipped",
    "overview": "Overview: smoke",
    "gradients": "Gradient accounting",
    "rewinding": "Layer rewinding",
    "retraining": "Retraining",
    "neurons": "Neurons",
    "localizers": "Localizers",
    "examples": "Examples",
    "example": "One example",
    "dropout": "Example-tied dropout",
    "compare": "Compare",
}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed "
                                "(apt-get install -y --no-install-recommends chromium; .ci/run does it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(runs: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """Start the server on a free loopback port; retry with another port if it was taken."""
    for _ in range(3):
        port = _free_port()
        cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--", "--runs", str(runs)]
        server = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return server, port
            except OSError:
                time.sleep(0.2)
        _stop(server)
        if "already in use" not in log.read_text():
            break
    raise RuntimeError(f"the Streamlit server did not start; its log:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


#: The Story page's steps, in order (app/views/story.py).
STORY = ["data", "fit", "gradients", "rewinding", "retraining", "example", "dropout", "scorecard"]


def _d3_percent(x: float) -> str:
    """`x` as Vega's format ".0%" writes it (toFixed: halves round up, on the double's exact value)."""
    if x != x:
        return "n/a"
    return f"{Decimal(x * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)}%"


def _walk_the_story(browser, port: int, run, tmp_path: Path, expect) -> None:
    """The Story page as a speaker shows it, on a projector's 1600x1000: Next through every step,
    each with its number and chart; on the dropout step every bar's value is written on the chart
    (drop mode's memorization and the n/a of train mode's test accuracy among them); then `/overview` as a link."""
    talk = browser.new_page(viewport={"width": 1600, "height": 1000})
    talk.goto(f"http://127.0.0.1:{port}/story?run=smoke")
    before = ""
    for n, step in enumerate(STORY, 1):
        # Drawn: a new heading, and nothing left of the step before (Streamlit marks it stale).
        talk.wait_for_function("""(before) => { const h = document.querySelector('h1');
            return !!h && h.innerText.trim() !== before && !document.querySelector('[data-stale="true"]'); }""",
                               arg=before, timeout=30_000)
        before = talk.locator("h1").first.inner_text().strip()
        expect(talk).to_have_url(re.compile(f"step={step}(&|$)"), timeout=30_000)
        expect(talk.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=30_000)
        expect(talk.locator("[data-testid='stMetricValue']").first).to_be_visible(timeout=30_000)
        expect(talk.locator(".vega-embed").first).to_be_visible(timeout=30_000)
        assert talk.locator("[data-testid='stException']").count() == 0, f"exception on story step {step}"
        if step == "dropout":
            table = run.read_table("dropout")
            values = table[[accuracy_column(p) for p in POPULATIONS]].to_numpy().ravel()
            labels = talk.locator(".vega-embed .role-mark.mark-text text")
            expect(labels).to_have_count(len(values), timeout=15_000)
            assert sorted(labels.all_text_contents()) == sorted(_d3_percent(float(v)) for v in values)
            drop = _d3_percent(float(table.set_index("mode").at["drop", "noisy_acc"]))
            expect(talk.locator("[data-testid='stMetricValue']").first).to_have_text(drop)
        talk.screenshot(path=tmp_path / f"story_{n}_{step}.png")
        if n < len(STORY):
            talk.get_by_role("button", name=re.compile("Next")).click()
    expect(talk.get_by_role("button", name=re.compile("Next"))).to_be_disabled()
    talk.goto(f"http://127.0.0.1:{port}/overview?run=smoke")
    expect(talk.get_by_role("heading", name="Overview: smoke", exact=True)).to_be_visible(timeout=30_000)
    assert talk.get_by_text("Page not found").count() == 0
    talk.close()


def test_every_page_in_chromium_and_zeroing_units_changes_the_accuracy(explorer_run, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-test.txt (playwright)")
    expect = sync_api.expect

    flips = explorer_run.read_table("flipping")
    row = flips[flips["kind"] == "noisy"].iloc[0]
    units = [str(u) for u in row["units"]]
    opened = open_run(explorer_run)
    model = opened.model()
    d = opened.data
    before = evaluate(model, d.train_x, opened.labels, d.test_x, d.test_labels)
    with intervene(model, [ZeroUnits(tuple(units))]):
        after = evaluate(model, d.train_x, opened.labels, d.test_x, d.test_labels)
    changed = [k for k in ("clean_acc", "noisy_acc", "test_acc") if f"{after[k]:.2%}" != f"{before[k]:.2%}"]
    assert changed, "zeroing the flip set should change some accuracy of the smoke model"

    log = tmp_path / "server.log"
    server, port = _start(explorer_run.path.parent, log)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            for path, heading in PAGES.items():
                query = f"example={int(row['example_id'])}&" if path == "example" else ""
                url_path = "" if path == "findings" else path  # the default page lives at /
                page.goto(f"http://127.0.0.1:{port}/{url_path}?{query}run=smoke")
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=30_000)
                shown = {"examples": page.locator("img"), "findings": page.get_by_text(scorecard.CLAIMS[-1].text)}
                expect(shown.get(path, page.locator(".vega-embed")).first).to_be_visible(timeout=30_000)
                expect(page.locator("[data-testid='stStatusWidget']")).to_have_count(0, timeout=30_000)
                assert page.locator("[data-testid='stException']").count() == 0, f"exception on page {path}"
                assert page.get_by_text("Page not found").count() == 0, f"{path} is not a page of the app"
                page.screenshot(path=tmp_path / f"{path}.png", full_page=True)

            _walk_the_story(browser, port, explorer_run, tmp_path, expect)

            # Neurons: clear the preselected flip set, then zero the units by hand.
            page.goto(f"http://127.0.0.1:{port}/neurons?run=smoke&example={int(row['example_id'])}")
            expect(page.get_by_role("heading", name="Live: zero units yourself")).to_be_visible(timeout=30_000)
            metric = page.locator("[data-testid='stMetric']").filter(has_text=POPULATIONS["clean"]).first
            picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="Units to zero")
            box = picker.get_by_role("combobox")
            box.click()
            for _ in range(len(units)):
                box.press("Backspace")
            expect(metric.locator("[data-testid='stMetricValue']")).to_have_text(f"{before['clean_acc']:.2%}", timeout=15_000)
            page.screenshot(path=tmp_path / "neurons_nothing_zeroed.png", full_page=True)
            for unit in units:
                box.fill(unit)
                page.get_by_role("option", name=unit, exact=True).click()
            box.press("Escape")
            for key, label in ((accuracy_column(p), POPULATIONS[p]) for p in ("clean", "noisy", "test")):
                shown = page.locator("[data-testid='stMetric']").filter(has_text=label).first
                expect(shown.locator("[data-testid='stMetricValue']")).to_have_text(f"{after[key]:.2%}", timeout=15_000)
            expect(page).to_have_url(re.compile(r"intervention=zero"))
            page.screenshot(path=tmp_path / "neurons_zeroed.png", full_page=True)

            # The presenter configuration (.streamlit/config.toml): no Deploy button, even on localhost.
            expect(page.locator("[data-testid='stAppDeployButton']")).to_have_count(0)

            # The scorecard as `precompute report --format html` writes it, opened as a file.
            report = tmp_path / "report.html"
            assert main(["report", str(explorer_run.path), "--format", "html", "--out", str(report)]) == 0
            page.goto(report.as_uri())
            expect(page.get_by_role("heading", name=scorecard.TITLE)).to_be_visible(timeout=10_000)
            expect(page.locator("tbody tr")).to_have_count(len(scorecard.CLAIMS))
            page.screenshot(path=tmp_path / "report.png", full_page=True)
            browser.close()
    finally:
        _stop(server)
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in PAGES)
    assert all((tmp_path / f"story_{n}_{step}.png").exists() for n, step in enumerate(STORY, 1))
