"""Command line of the batch stage.

    python -m precompute run [--preset NAME] [--out DIR] [--device cpu|cuda]
                             [--config FILE.toml] [--set KEY=VALUE ...] [--data-root DIR] [--download]
    python -m precompute sweep --preset NAME --grid KEY=V1,V2 [--grid ...] [--config SWEEP.toml] --out DIR
                             [--jobs N] [--backend loky|dask] [--scheduler tcp://HOST:PORT] [--device cuda]
                             [--retry-failed]
    python -m precompute summarize SWEEP
    python -m precompute report RUN_OR_SWEEP [--format md|html] [--out FILE]
    python -m precompute list [ROOT]
    python -m precompute verify RUN_OR_ROOT

Every user mistake (unknown preset or key, bad value, missing data set, a run directory that
holds another config or is in use) ends with one line on stderr naming the fix and exit
status 2, before anything is written. A sweep whose points all completed exits 0, one with a
failed point 1 (after the others ran).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from memloc import overrides
from memloc.data import DataError
from memloc.lazy import lazy
from memloc.presets import DEFAULT_PRESET, PRESETS
from memloc.runs import checkpoint_disk
from memloc.settings import ConfigError
from memloc.store import Run, RunError, Sweep, atomic_write, list_runs, list_sweeps, runs_root

torch = lazy("torch")  # `--help`, `list` and configuration errors answer without it (memloc.lazy)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
SWEEP_FILE_HELP = """a sweep file (--config) holds the preset, fixed overrides, a product grid and paired points:

  preset = "demo"
  [set]
  "train.epochs" = 30
  [grid]
  "train.seed" = [0, 1, 2]
  "data.noise_frac" = [0.05, 0.1, 0.2]
  [[points]]                    # listed together, each times the grid
  "model.name" = "mlp"
  [[points]]
  "model.name" = "cnn"
  "model.options.width" = 0.5

--grid and --set on the command line add to it. Points are named by their values: noise_frac=0.2,seed=1.
Config keys: see `python -m precompute run --help`."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Train models with label noise and run the memorization analyses, one run directory per model.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="train and analyse one configuration (resumes an interrupted run)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train and analyse one configuration into a run directory. Re-running the same "
        "command resumes an interrupted run and skips complete stages.",
        epilog=f"presets: {', '.join(PRESETS)} (default {DEFAULT_PRESET})\n\n"
        f"config keys (--set KEY=VALUE, or tables in --config FILE.toml):\n{overrides.describe_keys()}",
    )
    run.add_argument("--preset", default=DEFAULT_PRESET, help="named configuration to start from")
    run.add_argument("--out", help="run directory (default: $MEMLOC_RUNS/<preset> or ./runs/<preset>)")
    run.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, ...")
    run.add_argument("--config", help="TOML file of overrides, e.g. [train] epochs = 30")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one key")
    run.add_argument("--data-root", help="where data sets are (default: $MEMLOC_DATA or ./data)")
    run.add_argument("--download", action="store_true", help="let torchvision download the data set (needs internet)")
    swp = sub.add_parser(
        "sweep",
        help="one run per point of a grid of settings, in parallel (resumes an interrupted sweep)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a grid of configurations, each point an ordinary run directory DIR/<point> made as by "
        "`precompute run`, on joblib's loky processes or a dask cluster. A failing point is marked failed (its "
        "traceback in DIR/logs/<point>.log) while the others go on. Re-running the same command skips complete "
        "points and resumes the rest; failed points run again only with --retry-failed. DIR/sweep.json records "
        "the points and their status; DIR/summary.parquet their key numbers, with the seeds folded.",
        epilog=SWEEP_FILE_HELP,
    )
    swp.add_argument("--preset", help=f"named configuration every point starts from (default {DEFAULT_PRESET})")
    swp.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...", help="an axis of the grid")
    swp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one key for every point")
    swp.add_argument("--config", help="sweep file (TOML): preset, [set], [grid], [[points]]")
    swp.add_argument("--out", required=True, help="sweep directory, e.g. runs/seeds")
    swp.add_argument("--jobs", type=int, default=1, help="points at once (loky processes, or local dask workers)")
    swp.add_argument("--backend", default="loky", help="loky (this machine, default) or dask")
    swp.add_argument("--scheduler", help="with --backend dask: a running scheduler, tcp://HOST:PORT (else a local cluster)")
    swp.add_argument("--device", default="cpu", help="cpu (default) or cuda: points are spread over the GPUs")
    swp.add_argument("--retry-failed", action="store_true", help="run the points that failed before again")
    smz = sub.add_parser("summarize", help="write a sweep's summary.parquet from its points' tables")
    smz.add_argument("sweep", help="sweep directory")
    rep = sub.add_parser(
        "report", help="the paper's claims as a scorecard of a run or a sweep",
        description="One row per claim of the paper: the claim, the paper's number, this run's number (or a sweep's "
        "mean ± std over its seeds, one scorecard per setting), and a verdict (holds / partly / does not hold / not "
        "measured) by the rule the row prints (memloc/scorecard.py).")
    rep.add_argument("target", metavar="RUN_OR_SWEEP", help="run or sweep directory")
    rep.add_argument("--format", choices=("md", "html"), default="md", help="Markdown (default) or one HTML page")
    rep.add_argument("--out", help="write to FILE (default: standard output)")
    ver = sub.add_parser(
        "verify", help="check every file of a run, a sweep or a runs root against its manifest",
        description="Check every file a run's manifest lists (present, inside the run, its size and sha256) for a run, "
        "a sweep's points or every run under a runs root. Prints what is wrong and the command that recreates it; "
        "exit status 1 when anything is.")
    ver.add_argument("target", metavar="RUN_OR_ROOT", help="run, sweep or runs root directory")
    lst = sub.add_parser("list", help="list run and sweep directories, their stages, key numbers and point counts")
    lst.add_argument("root", nargs="?", help="runs root (default: $MEMLOC_RUNS or ./runs)")
    return parser


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device: cpu, cuda or cuda:N, got {name!r}")
    return device


def _check_out(path: str) -> None:
    """Refuse an --out that cannot become a writable directory (a file, under a file, read-only),
    before anything is written."""
    out = Path(path)
    if os.path.lexists(out) and not out.is_dir():
        raise ConfigError(f"--out {path}: is a file, not a directory; choose another --out")
    existing = out
    while not os.path.lexists(existing):  # the directory, or the nearest folder above it that exists
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {path}: {existing} is a file, so no directory can be made under it; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {path}: {existing} is not writable (read-only, or not yours); choose a writable --out")


def _cmd_run(args: argparse.Namespace) -> int:
    layers = [overrides.load_toml(args.config)] if args.config else []
    sets = list(args.overrides)
    if args.data_root:
        sets.append(f"data.root={json.dumps(args.data_root)}")
    if args.download:
        sets.append("data.download=true")
    cfg = overrides.resolve(args.preset, *layers, overrides=sets)
    device = _device(args.device)
    out = args.out or str(runs_root() / args.preset)
    _check_out(out)
    print(f"precompute run -> {out} on {device}")
    print(json.dumps(cfg.to_dict(), indent=2))
    disk = checkpoint_disk(cfg)
    print("disk: " + ", ".join(f"{n} checkpoints of {size / 2**20:.1f} MiB ({variant})" for variant, (n, size) in disk.items())
          + f" = about {sum(n * size for n, size in disk.values()) / 2**20:,.0f} MiB (fewer with train.keep_epochs)")
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    from precompute.stages import execute  # imports torch-heavy modules only for `run`

    execute(cfg, out, device)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from precompute.sweep import grid_from, run_sweep  # imports joblib only for `sweep`

    spec = overrides.load_toml(args.config) if args.config else None
    grid = grid_from(args.preset, args.overrides, args.grid, spec)
    _check_out(args.out)
    if args.device != "cpu":
        _device(args.device)
    return run_sweep(grid, args.out, args.jobs, args.backend, args.scheduler, args.device, args.retry_failed)


def _cmd_summarize(args: argparse.Namespace) -> int:
    from precompute.sweep import summarize

    target = Sweep(args.sweep)
    target.record()  # a clear error for a directory that is not a sweep
    with target.lock():
        summarize(target)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from memloc import scorecard

    if not os.path.isdir(args.target):
        raise RunError(f"no run or sweep directory at {args.target}; `python -m precompute list` shows the runs")
    sections = scorecard.scorecards(args.target)
    text = scorecard.to_html(sections) if args.format == "html" else scorecard.to_markdown(sections)
    if args.out:
        try:
            atomic_write(Path(args.out), text.encode())
        except OSError as e:
            raise ConfigError(f"--out {args.out}: {e.strerror or e}; name a file in a writable directory") from None
        print(f"report: {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = runs_root(args.root)
    runs, sweeps = list_runs(root), list_sweeps(root)
    if not runs and not sweeps:
        print(f"no runs under {root}; create one with: python -m precompute run --preset demo")
        return 0
    for run in runs:
        print(_describe(run))
    for target in sweeps:
        try:
            counts = target.status_counts()
        except RunError as e:
            print(f"{target.name}/: unreadable sweep ({e})")
            continue
        print(f"{target.name}/: sweep of {sum(counts.values())} points, "
              + ", ".join(f"{n} {status}" for status, n in counts.items() if n))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    target = Path(args.target)
    if Run(target).exists():
        runs = [Run(target)]
    elif Sweep(target).exists():
        runs = Sweep(target).runs()
    elif target.is_dir():
        runs = list_runs(target) + [run for s in list_sweeps(target) for run in _points(s)]
    else:
        raise RunError(f"no run, sweep or runs root at {target}; `python -m precompute list` shows the runs")
    damaged = 0
    for run in runs:
        problems = run.verify()
        label = run.path.relative_to(target).as_posix() if run.path != target else run.name
        if not problems:
            print(f"ok       {label} ({len(run.manifest()['files'])} files, sizes and sha256 checked)")
            continue
        damaged += 1
        print(f"DAMAGED  {label}")
        for problem in problems:
            print(f"           {problem.rel}: {problem.what}")
        print(f"         recreate with: {run.heal_command()}")
    print(f"{len(runs) - damaged} of {len(runs)} run(s) intact" if runs else f"no runs under {target}")
    return 1 if damaged else 0


def _points(target: Sweep) -> list[Run]:
    try:
        return target.runs()
    except RunError as e:
        print(f"sweep {target.name}: unreadable record ({e})")
        return []


def _describe(run: Run) -> str:
    try:
        manifest = run.manifest()
    except RunError as e:
        return f"{run.name}: unreadable ({e})"
    problems = run.verify(checksums=False)
    cfg = manifest["config"]
    data, model = cfg.get("data") or {}, cfg.get("model") or {}
    parts = [f"{run.name}: {data.get('name', '?')} / {model.get('name', '?')}, noise {data.get('noise_frac', '?')}"]
    for name, stage in manifest["stages"].items():
        numbers = {k: v for k, v in stage.items() if k.endswith("_acc")}
        extra = "  " + " ".join(f"{k}={v}" for k, v in numbers.items()) if numbers else ""
        parts.append(f"  {name}: {stage.get('status', '?')} ({stage.get('seconds', 0):.1f} s){extra}")
    if problems:
        parts.append(f"  DAMAGED: {len(problems)} file(s) missing or changed (`python -m precompute verify {run.path}` "
                     f"says which; `{run.heal_command()}` recreates them)")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _cmd_run, "sweep": _cmd_sweep, "summarize": _cmd_summarize, "report": _cmd_report,
                    "list": _cmd_list, "verify": _cmd_verify}
        return commands[args.command](args)
    except (ConfigError, DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
