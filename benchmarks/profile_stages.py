"""Where each stage of `precompute run` spends its time: every stage under cProfile.

Runs the stages of a preset (`--preset NAME [--set KEY=VALUE ...]`) one at a time into a
temporary run directory, each inside `cProfile`, and prints per stage its seconds and the
functions that take the most of them:

- memloc's own functions (memloc/, precompute/, models/) by cumulative time: which part of the
  stage (training passes, accounting, evaluation, checkpoint writes, flip steps...);
- torch's and numpy's operations by their own time (`tottime`): which kind of work (the
  convolution forward, the autograd backward, copies...). Native kernels show up as the Python
  call that runs them (`torch.conv2d`, `torch._C._EngineBase.run_backward`, ...).

cProfile adds a few percent to Python-heavy code and nearly nothing to time inside kernels;
the stage seconds printed here are within a few percent of an unprofiled run (compare with the
`seconds` of a run's manifest).

    .venv/bin/python benchmarks/profile_stages.py --preset fashion-mnist
    .venv/bin/python benchmarks/profile_stages.py --preset demo --stages train,flip --top 8
    .venv/bin/python benchmarks/profile_stages.py --preset fashion-mnist --run runs/fm --stages flip

With `--run DIR` (a complete run of the same configuration) the stages other than train are
profiled on a copy of it, so train need not run again.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from memloc import overrides  # noqa: E402
from memloc.config import STAGES  # noqa: E402
from memloc.store import Run  # noqa: E402
from precompute.stages import execute  # noqa: E402

OWN = tuple(str(ROOT / d) for d in ("memloc", "precompute", "models"))


def _rows(stats: pstats.Stats, own: bool, top: int) -> list[tuple[float, float, int, str]]:
    """(cumulative, own time, calls, name) of the `top` functions: memloc's by cumulative time,
    or everything else (torch, numpy, builtins) by own time."""
    rows = []
    for (file, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
        mine = file.startswith(OWN)
        if mine != own:
            continue
        where = f"{Path(file).relative_to(ROOT)}:{line} {name}" if mine else (f"{Path(file).name}:{line} {name}" if line else name)
        rows.append((cumtime, tottime, calls, where))
    rows.sort(key=lambda r: r[0] if own else r[1], reverse=True)
    return rows[:top]


def profile_stage(cfg, out: Path, stage: str, device: torch.device, top: int) -> float:
    """Run `stage` of `cfg` into `out` under cProfile; print its table; return its seconds."""
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    execute(dataclasses.replace(cfg, stages=(stage,)), str(out), device, log=lambda _: None)
    profiler.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    print(f"\n## {stage}: {seconds:.1f} s\n")
    print("| memloc function | cumulative s | share | calls |\n|---|---:|---:|---:|")
    for cum, _, calls, where in _rows(stats, True, top):
        print(f"| `{where}` | {cum:.1f} | {cum / seconds:.0%} | {calls} |")
    print("\n| operation (own time) | s | share | calls |\n|---|---:|---:|---:|")
    for _, own, calls, where in _rows(stats, False, top):
        print(f"| `{where}` | {own:.1f} | {own / seconds:.0%} | {calls} |")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fashion-mnist")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in run order")
    parser.add_argument("--run", help="a complete run of this configuration: profile the later stages on a copy of it")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top", type=int, default=12, help="rows per table")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"--stages: unknown {unknown}; stages are {', '.join(STAGES)}")
    cfg = overrides.resolve(args.preset, overrides=args.sets)
    device = torch.device(args.device)
    print(f"# profile of `{args.preset}` {' '.join(args.sets)} on {device}: torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        if args.run:
            shutil.copytree(args.run, out)
            copy = Run(out)
            with copy.lock():
                for stage in stages:
                    copy.update_stage(stage, status="running")  # run it again, from the start
                    copy.drop_state(stage)
        elif stages[0] != "train":
            parser.error("without --run the first stage must be train")
        total = sum(profile_stage(cfg, out, stage, device, args.top) for stage in stages)
    print(f"\ntotal {total:.1f} s; load {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
