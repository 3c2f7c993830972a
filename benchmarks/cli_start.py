"""How fast `python -m precompute` answers when it has nothing heavy to do (`memloc.lazy`).

    python benchmarks/cli_start.py [--repeat 5] [--runs DIR] [--repo DIR]

Times `--help`, `run --help`, `list` and a configuration error (`run --set
data.noise_frac=1.5`), each the median of `--repeat` fresh processes (after one unmeasured run,
so the files are in the page cache), and says which heavy libraries (torch, torchvision, pandas,
scikit-learn) each imported, from one more run with `python -X importtime`. `--runs` is the
root `list` lists (default: $MEMLOC_RUNS or ./runs); `--repo` times another checkout of
memloc, e.g. an older commit unpacked with `git archive`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "torchvision", "pandas", "sklearn")


def commands(runs: str, out: str) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "run --help": ["run", "--help"],
        "list": ["list", runs],
        "run --set data.noise_frac=1.5": ["run", "--set", "data.noise_frac=1.5", "--out", out],
    }


def run(repo: Path, args: list[str], *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-m", "precompute", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(repo)})


def seconds(repo: Path, args: list[str], repeat: int) -> float:
    run(repo, args)  # warm the page cache
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run(repo, args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def heavy_imports(repo: Path, args: list[str]) -> list[str]:
    lines = run(repo, args, "-X", "importtime").stderr.splitlines()
    names = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    return [name for name in HEAVY if name in names]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--runs", default=os.environ.get("MEMLOC_RUNS", "runs"), help="the root `list` lists")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]), help="the memloc checkout to time")
    args = p.parse_args()
    repo = Path(args.repo).resolve()
    runs = str(Path(args.runs).resolve())
    print(f"{repo} (list: {runs}): median of {args.repeat} processes; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="memloc-cli-start-") as tmp:
        for label, argv in commands(runs, str(Path(tmp) / "run")).items():
            heavy = heavy_imports(repo, argv)
            print(f"  {label:<34} {seconds(repo, argv, args.repeat):6.2f} s   imports {', '.join(heavy) or 'nothing heavy'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
