"""Time the explorer as a visitor meets it: the first load of every page, then each interaction.

    python benchmarks/explorer.py --runs /tmp/runs --run demo [--repeats 5]

Drives `app/main.py` with Streamlit's AppTest in this process (the same script runs as under
`streamlit run`; the browser's rendering is not included). For each page it times

- *first load*: a new session opening the page with every cache empty (tables, the run's data
  and model are read from disk), as the first visitor after the server started;
- *interactions*: the widget changes the issue names (live rewind, zeroing units, switching the
  example, attributions with default settings, gallery paging), each in a session that already
  shows the page; every timing is a fresh value (nothing cached for it yet), median of repeats.

The process imports torch, pandas and Altair once before timing, as a running server has.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="runs root")
    parser.add_argument("--run", required=True, help="run name under the root")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import logging

    import streamlit as st
    import torch
    from streamlit.testing.v1 import AppTest

    import app.cache  # noqa: F401  (imports torch, pandas, altair, captum as the server has)
    from memloc.store import Run

    torch.set_num_threads(args.threads)
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" notes of the cache clearing below
    os.environ["MEMLOC_RUNS"] = args.runs
    sys.argv = ["main.py"]
    main_py = str(ROOT / "app" / "main.py")
    run = Run(Path(args.runs) / args.run)
    flips = run.read_table("flipping")
    noisy = flips[flips["kind"] == "noisy"]["example_id"].tolist()

    def session(page: str, **params) -> AppTest:
        at = AppTest.from_file(main_py, default_timeout=120)
        at.query_params["run"] = args.run
        at.query_params["page"] = page
        for k, v in params.items():
            at.query_params[k] = v
        return at

    def timed(action) -> float:
        t0 = time.perf_counter()
        at = action()
        elapsed = time.perf_counter() - t0
        assert not at.exception, [e.value for e in at.exception]
        return elapsed

    print(f"run {run.path}, torch threads {args.threads}")
    print("first load (empty caches), seconds:")
    for page in ("findings", "overview", "gradients", "rewinding", "retraining", "neurons", "examples", "example", "dropout"):
        loads = []
        for _ in range(args.repeats):
            st.cache_data.clear()
            st.cache_resource.clear()
            loads.append(timed(lambda: session(page).run()))
        print(f"  {page:<11} median {statistics.median(loads):.2f}  max {max(loads):.2f}")

    def interaction(name: str, page: str, change, params=lambda i: {}) -> None:
        times = []
        for i in range(args.repeats):
            at = session(page, **params(i)).run()
            times.append(timed(lambda: change(at, i)))
        print(f"  {name:<44} median {statistics.median(times):.2f}  max {max(times):.2f}")

    def _add_unit(at: AppTest, i: int) -> AppTest:
        box = at.multiselect(key="nr_units")
        return box.set_value(box.value + [[u for u in box.options if u not in box.value][i]]).run()

    groups = list(run.read_table("rewinding")["group"].drop_duplicates())
    epochs = run.checkpoint_epochs()
    print("interactions (a value not seen before), seconds:")
    interaction("live rewind: pick a group", "rewinding",
                lambda at, i: at.multiselect(key="rw_groups").set_value([groups[(i + 1) % len(groups)]]).run())
    interaction("live rewind: move the epoch", "rewinding",
                lambda at, i: at.select_slider(key="rw_epoch").set_value(epochs[(3 * i + 1) % len(epochs)]).run())
    interaction("zero units: add a unit", "neurons",
                lambda at, i: _add_unit(at, i))
    interaction("zero units: switch the example", "neurons",
                lambda at, i: at.selectbox(key="nr_example").select(noisy[i + 1]).run())
    interaction("example page: switch the example (+ attributions)", "example",
                lambda at, i: at.number_input(key="ex_id").set_value(noisy[i + 1]).run(), lambda i: {"example": str(noisy[0])})
    for method in ("Saliency", "IntegratedGradients", "GradientShap", "Occlusion", "LayerConductance"):
        interaction(f"attributions: {method}", "example",
                    lambda at, i, m=method: at.selectbox(key="ex_method").set_value(m).run(), lambda i: {"example": str(noisy[1 + i])})
    interaction("gallery: next page", "examples", lambda at, i: at.number_input(key="gal_page").set_value(2 + i).run())
    interaction("gallery: only noisy examples", "examples", lambda at, i: at.radio(key="gal_kind").set_value("noisy").run())


if __name__ == "__main__":
    main()
