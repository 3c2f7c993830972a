"""Command line of the batch stage.

    python -m precompute run [--preset NAME] [--out DIR] [--device cpu|cuda]
                             [--config FILE.toml] [--set KEY=VALUE ...] [--data-root DIR] [--download]
    python -m precompute list [ROOT]

Every user mistake (unknown preset or key, bad value, missing data set, a run directory that
holds another config or is in use) ends with one line on stderr naming the fix and exit
status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from memloc import overrides
from memloc.data import DataError
from memloc.presets import DEFAULT_PRESET, PRESETS
from memloc.settings import ConfigError
from memloc.store import Run, RunError, list_runs, runs_root

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
    lst = sub.add_parser("list", help="list run directories, their stages and key numbers")
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
    print(f"precompute run -> {out} on {device}")
    print(json.dumps(cfg.to_dict(), indent=2))
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    from precompute.stages import execute  # imports torch-heavy modules only for `run`

    execute(cfg, out, device)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = runs_root(args.root)
    runs = list_runs(root)
    if not runs:
        print(f"no runs under {root}; create one with: python -m precompute run --preset demo")
        return 0
    for run in runs:
        print(_describe(run))
    return 0


def _describe(run: Run) -> str:
    try:
        manifest = run.manifest()
    except RunError as e:
        return f"{run.name}: unreadable ({e})"
    cfg = manifest["config"]
    parts = [f"{run.name}: {cfg['data']['name']} / {cfg['model']['name']}, noise {cfg['data']['noise_frac']}"]
    for name, stage in manifest["stages"].items():
        numbers = {k: v for k, v in stage.items() if k.endswith("_acc")}
        extra = "  " + " ".join(f"{k}={v}" for k, v in numbers.items()) if numbers else ""
        parts.append(f"  {name}: {stage.get('status', '?')} ({stage.get('seconds', 0):.1f} s){extra}")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _cmd_run(args) if args.command == "run" else _cmd_list(args)
    except (ConfigError, DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume from the last complete epoch", file=sys.stderr)
        return EXIT_INTERRUPTED
