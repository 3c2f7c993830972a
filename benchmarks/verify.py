"""The cost of checking a run's files before a resume skips its stages (`Run.verify`).

    python benchmarks/verify.py [--epochs 50] [--width 1.0] [--run DIR]

Writes, through the run store, a run of `--epochs` + 1 checkpoints of a ResNet-9 for 3x32x32
inputs at `--width` (1.0: the paper's full width, about 26 MB each) into a temporary directory,
then times `Run.verify` with sizes only (what `precompute list` and the explorer check) and with
sha256 (what `precompute run` checks before it skips a stage, and `precompute verify`), each the
best of three, with the page cache warm (a second read). `--run DIR` times an existing run too
(e.g. runs/demo).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import models  # noqa: E402
from memloc.store import Run  # noqa: E402


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def report(run: Run, label: str) -> None:
    files = run.manifest()["files"]
    size = sum(record["bytes"] for record in files.values())
    assert run.verify() == [], "the run is damaged"
    sizes, checksums = best_of(lambda: run.verify(checksums=False)), best_of(lambda: run.verify())
    print(f"{label}: {len(files)} files, {size / 2**20:,.0f} MiB: sizes only {sizes * 1e3:.1f} ms, "
          f"sizes and sha256 {checksums * 1e3:,.0f} ms ({size / 2**20 / checksums:,.0f} MiB/s)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--run", help="an existing run directory to time as well")
    args = p.parse_args()
    if args.run:
        report(Run(args.run), args.run)
    model = models.build("resnet9", (3, 32, 32), 10, width=args.width)
    with tempfile.TemporaryDirectory(prefix="memloc-verify-") as tmp:
        run = Run(Path(tmp) / "run")
        with run.lock():
            run.create({}, "synthetic", 0)
            run.write_labels(np.zeros(10, dtype=int), np.zeros(10, dtype=int), np.zeros(10, dtype=bool))
            t0 = time.perf_counter()
            for epoch in range(args.epochs + 1):
                run.write_checkpoint(epoch, model.state_dict())
            written = time.perf_counter() - t0
        print(f"wrote {args.epochs + 1} checkpoints of ResNet-9 at width {args.width} in {written:.1f} s")
        report(run, f"ResNet-9 width {args.width}, {args.epochs + 1} checkpoints")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
