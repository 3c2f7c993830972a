"""Time a seed sweep on this machine: one job at a time, loky with N jobs, a local dask cluster.

    python benchmarks/sweep.py [--preset demo] [--seeds 5] [--jobs 2] [--keep DIR]

Runs the same sweep (`--grid train.seed=0,...`) three times into fresh directories, in this
process as the driver: loky with one job, loky with `--jobs` jobs (cores / jobs torch threads
each) and joblib's dask backend on a LocalCluster of `--jobs` single-thread workers. Prints the
wall time of each and the ratios (loky N / loky 1: the speed-up of running points side by side;
dask / loky N: the cost of dask), then the summary's numbers of the last sweep, mean ± std over
the seeds, and the scorecard of the paper's claims (`precompute report`). The three sweeps must give the same
tables (checked).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memloc.scorecard import scorecards  # noqa: E402
from memloc.store import Sweep  # noqa: E402
from memloc.summary import metric_label  # noqa: E402
from precompute.sweep import grid_from, run_sweep  # noqa: E402

SHOWN = ["memorized", "test_acc", "noisy_units_mean", "clean_units_mean", "drop_memorized", "drop_clean_acc"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--keep", help="write the sweeps under this directory instead of a temporary one")
    args = p.parse_args()
    grid = grid_from(args.preset, [], [f"train.seed={','.join(str(s) for s in range(args.seeds))}"], None)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="memloc-sweep-"))
    times = {}
    for label, jobs, backend in (("loky, 1 job", 1, "loky"), (f"loky, {args.jobs} jobs", args.jobs, "loky"),
                                 (f"dask, {args.jobs} local workers", args.jobs, "dask")):
        out = base / label.replace(" ", "").replace(",", "_")
        t0 = time.perf_counter()
        assert run_sweep(grid, str(out), jobs=jobs, backend=backend, log=lambda _: None) == 0
        times[label] = time.perf_counter() - t0
        print(f"{label:>24}: {times[label]:7.1f} s for {args.seeds} points of {args.preset}", flush=True)
    one, many, dask = times.values()
    print(f"loky {args.jobs} jobs / 1 job: {many / one:.2f}x    dask / loky {args.jobs} jobs: {dask / many:.2f}x")

    sweeps = [Sweep(base / label.replace(" ", "").replace(",", "_")) for label in times]
    names = list(sweeps[0].record()["points"])
    same = all(a.run(n).read_table(t).drop(columns="seconds", errors="ignore").equals(
        b.run(n).read_table(t).drop(columns="seconds", errors="ignore"))
        for a, b in zip(sweeps, sweeps[1:]) for n in names for t in a.run(n).tables())
    print(f"the three sweeps give the same tables: {same}")

    summary = sweeps[-1].read_summary()
    setting = summary[summary["scope"] == "setting"].set_index("metric")
    for metric in SHOWN:
        row = setting.loc[metric]
        print(f"  {metric_label(metric):<52} {row['mean']:8.4f} ± {row['std']:.4f}  (n={row['n']})")
    for _, row in scorecards(sweeps[-1].path)[0].card.iterrows():  # the paper's claims, by memloc/scorecard.py's rules
        print(f"  {row['claim']:<14} {row['verdict']:<14} holds on {row['holds_on']} seeds")
    print(f"sweeps in {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
