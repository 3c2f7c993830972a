"""Time the explorer as a speaker and a visitor meet it: the Story page, its steps, and the server's start.

    python benchmarks/explorer.py [--run runs/demo] [--repeats 5] [--browser-repeats 3] [--pause 1] [--pages] [--no-browser]

(a) *Story under AppTest* (`streamlit.testing`, in this process: the same scripts as under
`streamlit run`, without the browser's drawing). *first load*: a new session opens the Story
(step 1) with every cache empty (tables, the run's data and model read again), the process's
modules already imported as a running server has them; the very first load of the process, which
also imports scikit-learn's data loader and compiles the pages, is printed once apart. *steps*:
in that session, each click on Next to a step not shown before (its tables and live numbers not
cached yet), and the two live buttons (rewind the critical group, switch off the example's units).

(b) *Server start to first page in Chromium* (Playwright, /usr/bin/chromium, --no-sandbox): from
starting `streamlit run app/main.py` to the health check answering and to the Story's first step
drawn; then, on that page, each Next click until the next step is drawn (`DRAWN`: its heading, no
element left of the previous step, nothing running, every chart and image rendered), after a
pause of `--pause` seconds on each step as a speaker makes. A fresh server each repeat (every
step's computations run for the first time in its process); the browser is started before, uncounted.

`--pages` adds the per-page first loads and interactions of the other pages (AppTest). Every
row: median and max over the repeats, in seconds. Run it on a quiet machine (`uptime` is printed
before and after).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
STEPS = ["data", "fit", "gradients", "rewinding", "retraining", "example", "dropout", "scorecard"]  # app/views/story.py


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def row(name: str, times: list[float]) -> None:
    print(f"| {name:<46} | {statistics.median(times):6.2f} | {max(times):6.2f} | {len(times)} |")


def header(title: str) -> None:
    print(f"\n{title}\n\n| {'what':<46} | median |    max | n |\n|{'-' * 48}|--------|--------|---|")


# ---------------------------------------------------------------------- (a) AppTest
def story_in_apptest(run_path: Path, repeats: int, pages: bool) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    import app.cache  # noqa: F401  (torch, pandas, altair, captum, as the server imports them)

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" notes of the cache clearing below
    os.environ["MEMLOC_RUNS"] = str(run_path.parent)
    sys.argv = ["main.py"]
    main_py = str(ROOT / "app" / "main.py")

    def session(page: str, **params) -> AppTest:
        at = AppTest.from_file(main_py, default_timeout=180)
        for k, v in {"run": run_path.name, "page": page, **params}.items():
            at.query_params[k] = v
        return at

    def timed(action) -> tuple[float, AppTest]:
        t0 = time.perf_counter()
        at = action()
        elapsed = time.perf_counter() - t0
        assert not at.exception, [e.value for e in at.exception]
        return elapsed, at

    first, _ = timed(lambda: session("story").run())
    print(f"\nfirst Story load of this process (imports scikit-learn's loader, compiles the pages): {first:.2f} s")
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        st.cache_data.clear()
        st.cache_resource.clear()
        elapsed, at = timed(lambda: session("story").run())
        times.setdefault("first load (step 1, empty caches)", []).append(elapsed)
        while not at.button(key="story_next").disabled:
            elapsed, at = timed(lambda: at.button(key="story_next").click().run())
            step = at.query_params["step"]
            times.setdefault(f"Next -> {STEPS.index(step) + 1} {step}", []).append(elapsed)
            live = {"rewinding": ("story_rewind", "story_restore"), "example": ("story_zero", "story_unzero")}.get(step)
            if live:
                elapsed, at = timed(lambda: at.button(key=live[0]).click().run())
                times.setdefault(f"  live: {live[0].split('_')[1]} (button)", []).append(elapsed)
                elapsed, at = timed(lambda: at.button(key=live[1]).click().run())
                times.setdefault(f"  live: {live[1].split('_')[1]} (button)", []).append(elapsed)
    header(f"(a) Story under AppTest, seconds ({repeats} repeats, caches emptied before each first load)")
    for name, values in times.items():
        row(name, values)
    if pages:
        other_pages(session, timed, run_path, repeats)


def other_pages(session, timed, run_path: Path, repeats: int) -> None:
    import streamlit as st

    from memloc.store import Run

    run = Run(run_path)
    header("first load of each page (empty caches), seconds")
    for page in ("findings", "overview", "gradients", "rewinding", "retraining", "neurons", "examples", "example", "dropout"):
        loads = []
        for _ in range(repeats):
            st.cache_data.clear()
            st.cache_resource.clear()
            loads.append(timed(lambda: session(page).run())[0])
        row(page, loads)

    flips = run.read_table("flipping")
    noisy = flips[flips["kind"] == "noisy"]["example_id"].tolist()
    groups = list(run.read_table("rewinding")["group"].drop_duplicates())
    epochs = run.checkpoint_epochs()

    def interaction(name: str, page: str, change, params=lambda i: {}) -> None:
        times = []
        for i in range(repeats):
            at = session(page, **params(i)).run()
            times.append(timed(lambda: change(at, i))[0])
        row(name, times)

    def add_unit(at, i: int):
        box = at.multiselect(key="nr_units")
        return box.set_value(box.value + [[u for u in box.options if u not in box.value][i]]).run()

    header("interactions (a value not seen before), seconds")
    interaction("live rewind: pick a group", "rewinding",
                lambda at, i: at.multiselect(key="rw_groups").set_value([groups[(i + 1) % len(groups)]]).run())
    interaction("live rewind: move the epoch", "rewinding",
                lambda at, i: at.select_slider(key="rw_epoch").set_value(epochs[(3 * i + 1) % len(epochs)]).run())
    interaction("zero units: add a unit", "neurons", add_unit)
    interaction("zero units: switch the example", "neurons",
                lambda at, i: at.selectbox(key="nr_example").select(noisy[i + 1]).run())
    interaction("example page: switch the example", "example",
                lambda at, i: at.number_input(key="ex_id").set_value(noisy[i + 1]).run(), lambda i: {"example": str(noisy[0])})
    for method in ("Saliency", "IntegratedGradients", "GradientShap", "Occlusion", "LayerConductance"):
        interaction(f"attributions: {method}", "example",
                    lambda at, i, m=method: at.selectbox(key="ex_method").set_value(m).run(), lambda i: {"example": str(noisy[1 + i])})
    interaction("gallery: next page", "examples", lambda at, i: at.number_input(key="gal_page").set_value(2 + i).run())


# ---------------------------------------------------------------------- (b) the browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: True in the page once a step is drawn: a heading other than the one before the click, no
#: element left over from the previous run (Streamlit marks those `data-stale`), nothing running,
#: every chart rendered to SVG and every image loaded.
DRAWN = """(before) => {
  const h = document.querySelector('h1');
  return !!h && h.innerText.trim() !== before.trim()
    && !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !!document.querySelector('[data-testid="stMetricValue"]')
    && [...document.querySelectorAll('.vega-embed')].every(e => e.querySelector('svg'))
    && document.querySelectorAll('.vega-embed').length > 0
    && [...document.images].every(i => i.complete);
}"""


def story_in_chromium(run_path: Path, repeats: int, threads: int, pause: float) -> None:
    from playwright.sync_api import expect, sync_playwright

    times: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        for _ in range(repeats):
            port = _free_port()
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
                   "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
                   "--server.fileWatcherType", "none", "--", "--runs", str(run_path.parent)]
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            t0 = time.perf_counter()
            server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                while True:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                            break
                    except OSError:
                        if server.poll() is not None or time.perf_counter() - t0 > 120:
                            raise RuntimeError("the server did not start")
                        time.sleep(0.05)
                times.setdefault("server start -> health check answers", []).append(time.perf_counter() - t0)
                page.goto(f"http://127.0.0.1:{port}/story?run={run_path.name}")

                def drawn(step: str, before: str) -> None:
                    page.wait_for_function(DRAWN, arg=before, timeout=120_000, polling=20)
                    expect(page).to_have_url(re.compile(f"step={step}(&|$)"))

                drawn(STEPS[0], "")
                times.setdefault("server start -> Story step 1 drawn", []).append(time.perf_counter() - t0)
                for step in STEPS[1:]:
                    page.wait_for_timeout(pause * 1000)
                    before = page.locator("h1").first.inner_text()
                    t1 = time.perf_counter()
                    page.get_by_role("button", name=re.compile("Next")).click()
                    drawn(step, before)
                    times.setdefault(f"Next -> {STEPS.index(step) + 1} {step} drawn", []).append(time.perf_counter() - t1)
            finally:
                page.close()
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
        browser.close()
    header(f"(b) Chromium against a fresh server, seconds ({repeats} repeats)")
    for name, values in times.items():
        row(name, values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="the run directory (default: runs/demo)")
    parser.add_argument("--repeats", type=int, default=5, help="AppTest repeats")
    parser.add_argument("--browser-repeats", type=int, default=3, help="fresh servers started for (b)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (this process and the servers)")
    parser.add_argument("--pages", action="store_true", help="also every other page's first load and interactions")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds on each step before Next in (b)")
    parser.add_argument("--no-browser", action="store_true", help="skip (b)")
    args = parser.parse_args()
    run_path = Path(args.run).resolve()
    if not (run_path / "manifest.json").exists():
        parser.error(f"{run_path} is not a run (make one: python -m precompute run --preset demo --out {run_path})")

    import torch

    torch.set_num_threads(args.threads)
    print(f"run {run_path}, torch threads {args.threads}, {os.cpu_count()} CPUs, load average at the start {load()}")
    story_in_apptest(run_path, args.repeats, args.pages)
    if not args.no_browser:
        story_in_chromium(run_path, args.browser_repeats, args.threads, args.pause)
    print(f"\nload average at the end {load()}")


if __name__ == "__main__":
    main()
