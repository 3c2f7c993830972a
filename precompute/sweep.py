"""`python -m precompute sweep`: one run per point of a grid, on joblib's loky processes or a dask
cluster, each point failure-isolated and resumable; and `summarize`, the sweep's summary.

The driver (this process) validates every point first (nothing is written for a bad grid),
then holds the sweep's lock, keeps `sweep.json` and hands the points to joblib. Each point runs
in a worker through `precompute.stages.execute`, the code path of `precompute run`, into its own
run directory, printing into its own log; an exception there marks that point failed (its
traceback in the log) and the others go on. Results are taken as they finish. Re-running the
same command skips complete points, resumes the others (each run resumes itself) and retries
failed ones only with `--retry-failed`. A point whose run is still held by a worker of an
interrupted sweep waits for it.

Threads: each loky job gets cores / jobs torch threads, so jobs never oversubscribe the cores; a
local dask cluster has `--jobs` single-thread workers with as many torch threads each; on a
cluster a point uses as many torch threads as its dask worker has threads. GPUs: with
`--device cuda` points are given `cuda:0`, `cuda:1`, ... in turn (loky and a local cluster:
use `--jobs` = the number of GPUs); on a cluster each point asks for the worker resource `GPU=1`,
so start one worker per GPU with `dask worker ... --resources GPU=1`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from joblib import delayed
from tqdm.auto import tqdm

from memloc import overrides
from memloc.config import RunConfig
from memloc.grid import Grid, point_name
from memloc.runs import checkpoint_disk
from memloc.settings import ConfigError
from memloc.store import Run, RunError, Sweep
from memloc.summary import key_numbers, summary_table

BACKENDS = ("loky", "dask")


@dataclass(frozen=True)
class Point:
    """One point of a grid: its name, its own values by key, and its checked config."""

    name: str
    values: dict[str, Any]
    config: RunConfig


def grid_from(preset: str | None, sets: list[str], grid: list[str], spec: dict[str, Any] | None) -> Grid:
    """The grid of the command line (`--grid KEY=V1,V2`, `--set`) on top of a sweep TOML file:
    `preset = "demo"`, a `[set]` table of fixed overrides, a `[grid]` table of key = [values]
    (multiplied) and `[[points]]` tables of key = value (each one combination)."""
    spec = dict(spec or {})
    unknown = sorted(set(spec) - {"preset", "set", "grid", "points"})
    if unknown:
        raise ConfigError(f"--config: unknown table(s) {', '.join(unknown)}; a sweep file has preset, [set], [grid] and [[points]]")
    fixed = overrides.flatten(spec.get("set", {}))
    fixed.update(overrides.parse_override(text) for text in sets)
    axes = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in dict(spec.get("grid", {})).items()}
    for text in grid:
        key, value = overrides.parse_override(text)
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
        axes[key] = [overrides.parse_override(f"v={v.strip()}")[1] if isinstance(v, str) else v for v in items if v != ""]
    return Grid(preset or spec.get("preset") or "demo", fixed, axes, [dict(p) for p in spec.get("points", [])])


def points_of(grid: Grid) -> list[Point]:
    """Every point of `grid` with its config, checked: ConfigError naming the point and the key."""
    points, names = [], {}
    for values in grid.points():
        name = point_name(values, grid.keys)
        try:
            config = overrides.resolve(grid.preset, grid.fixed, values)
        except ConfigError as e:
            raise ConfigError(f"point {name}: {e}") from None
        if name in names:
            raise ConfigError(f"points {names[name]} and {values} are both named {name}; give them distinct values")
        names[name] = values
        points.append(Point(name, values, config))
    if not points:
        raise ConfigError("the grid has no points")
    return points


def disk_line(points: list[Point]) -> str:
    """What the sweep's checkpoints will take on disk, for the line printed before it starts."""
    sizes: dict[str, dict[str, tuple[int, int]]] = {}  # one model build per distinct model, not per point

    def disk(cfg: RunConfig) -> dict[str, tuple[int, int]]:
        key = json.dumps([cfg.to_dict()[k] for k in ("model", "data", "dropout", "train", "stages")])
        if key not in sizes:
            sizes[key] = checkpoint_disk(cfg)
        return sizes[key]

    total = sum(count * size for p in points for count, size in disk(p.config).values())
    parts = [f"{count} checkpoints of {size / 2**20:.1f} MiB ({variant})"
             for variant, (count, size) in disk(points[0].config).items()]
    return (f"disk: about {total / 2**20:,.0f} MiB for {len(points)} point(s), the first: {', '.join(parts)} "
            "(fewer with train.keep_epochs; tables come on top)")


# ---------------------------------------------------------------------- the worker's side
def run_point(out: str, name: str, config: dict[str, Any], device: str, threads: int | None) -> dict[str, Any]:
    """Run one point into its run directory (in a worker process), logging into its log file.
    Returns its outcome; an exception is caught here, written to the log and reported."""
    sweep = Sweep(out)
    log_file = sweep.log_file(name)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "a", buffering=1) as log:
        def say(message: str) -> None:
            log.write(message.rstrip("\n") + "\n")

        if threads is None:  # on a dask cluster: as many torch threads as the worker has threads
            from distributed import get_worker

            threads = get_worker().state.nthreads
        torch.set_num_threads(max(1, threads))
        trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")  # slows training down where set (see NANNY_ENVIRON)
        say(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} point {name} on {socket.gethostname()} (pid {os.getpid()}), "
            f"device {device}, {torch.get_num_threads()} threads" + (f", MALLOC_TRIM_THRESHOLD_={trim}" if trim else ""))
        try:
            from precompute.stages import execute

            execute(overrides.from_dict(config), str(sweep.run(name).path), torch.device(device), log=say, wait=say)
        except Exception as e:  # the point fails alone; KeyboardInterrupt still stops it
            log.write(traceback.format_exc())
            return {"point": name, "status": "failed", "seconds": round(time.perf_counter() - t0, 2),
                    "error": traceback.format_exception_only(type(e), e)[-1].strip()}
    return {"point": name, "status": "complete", "seconds": round(time.perf_counter() - t0, 2), "error": None}


# ---------------------------------------------------------------------- the driver's side
def _complete(run: Run, config: RunConfig) -> bool:
    """Whether `run` holds every stage of `config` complete (then it is not touched again)."""
    try:
        return run.exists() and all(run.is_complete(stage) for stage in config.stages)
    except RunError:
        return False


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def run_sweep(grid: Grid, out: str, jobs: int = 1, backend: str = "loky", scheduler: str | None = None,
          device: str = "cpu", retry_failed: bool = False, log: Callable[[str], None] = print) -> int:
    """Run every point of `grid` into the sweep directory `out`; 0 if all are complete, else 1.

    Raises ConfigError (a bad point, nothing written) or RunError (a sweep directory in use or
    holding another grid).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: one of {', '.join(BACKENDS)}, got {backend!r}")
    if jobs < 1:
        raise ConfigError(f"--jobs: an integer >= 1, got {jobs}")
    if scheduler and backend != "dask":
        raise ConfigError("--scheduler needs --backend dask")
    points = points_of(grid)
    target = Sweep(out)
    with ExitStack() as stack:
        parallel = _parallel(stack, jobs, backend, scheduler, device, log)  # a cluster that cannot work fails here
        return _drive(points, grid, target, parallel, jobs, backend, scheduler, device, retry_failed, log)


def _drive(points: list[Point], grid: Grid, target: Sweep, parallel, jobs: int, backend: str, scheduler: str | None,
           device: str, retry_failed: bool, log: Callable[[str], None]) -> int:
    """Run the points that are not done with `parallel`, keeping `sweep.json`; then summarize."""
    with target.lock():
        if target.exists():
            record = target.record()
            if not Grid.from_json(record["grid"]).same_as(grid):
                raise RunError(f"{target.path} holds another sweep (its grid is {record['grid']}); "
                               "choose another --out, or delete that directory to start over")
        else:
            record = {"grid": grid.to_json(), "keys": grid.keys, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "points": {p.name: {"values": p.values, "status": "pending"} for p in points}}
        log(disk_line(points))
        lock = threading.Lock()  # joblib may pull the next point from another thread

        def update(name: str, **info: Any) -> None:
            with lock:
                record["points"][name].update(info)
                target.write_record(record)

        todo = []
        for point in points:
            status = record["points"][point.name].get("status")
            if status == "complete" or (status == "failed" and not retry_failed):
                continue
            if _complete(target.run(point.name), point.config):  # finished by a worker of an interrupted sweep
                update(point.name, status="complete", error=None)
                continue
            todo.append(point)
        target.write_record(record)
        skipped = len(points) - len(todo)
        where = f"the workers of {scheduler}" if scheduler else f"{backend}, {jobs} job(s) at once"
        log(f"sweep {target.path}: {len(points)} points, {skipped} complete or failed before, {len(todo)} to run on {where}")
        gpus = torch.cuda.device_count() if device == "cuda" else 0
        threads = None if scheduler else max(1, _cores() // jobs)

        def tasks() -> Iterator:
            for i, point in enumerate(todo):  # pulled as joblib dispatches: the point starts now
                update(point.name, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                where = f"cuda:{i % gpus}" if gpus and not scheduler else device
                yield delayed(run_point)(str(target.path), point.name, point.config.to_dict(), where, threads)

        outcomes = tqdm(parallel(tasks()), total=len(todo), desc="sweep", unit="point", disable=None) if todo else []
        for outcome in outcomes:
            update(outcome["point"], status=outcome["status"], seconds=outcome["seconds"], error=outcome["error"],
                   log=target.log_rel(outcome["point"]), finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            log(f"point {outcome['point']}: {outcome['status']} in {outcome['seconds']:.1f} s"
                + (f" ({outcome['error']})" if outcome["error"] else ""))
        summarize(target, log)
        failed = [name for name, p in record["points"].items() if p["status"] == "failed"]
    if failed:
        log(f"{len(failed)} of {len(points)} points failed; their logs:")
        for name in failed:
            log(f"  {target.log_file(name)}: {record['points'][name].get('error')}")
        if not retry_failed:
            log("fix the cause and run the same command with --retry-failed to run them again")
        return 1
    return 0


#: dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536 (to return pandas' memory to
#: the system). Setting it at all turns off glibc's dynamic mmap threshold, so every large tensor a
#: training step frees and allocates again is an mmap/munmap with fresh page faults: sweep points
#: ran 1.6-1.8x slower than in a loky worker (BENCHMARKS.md, "Sweeps"). The local cluster's nanny
#: leaves it unset; for `dask worker` the README's "On a cluster" says how.
NANNY_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def _parallel(stack: ExitStack, jobs: int, backend: str, scheduler: str | None, device: str,
              log: Callable[[str], None]):
    """A joblib `Parallel` that yields results as they finish, on loky or dask (the dask client
    and a local cluster live as long as `stack`)."""
    from joblib import Parallel, parallel_config

    if backend == "loky":
        return Parallel(n_jobs=jobs, backend="loky", batch_size=1, pre_dispatch="n_jobs", return_as="generator_unordered")
    import dask
    from distributed import Client, LocalCluster

    if scheduler is None:
        stack.enter_context(dask.config.set(NANNY_ENVIRON))
        cluster = stack.enter_context(LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None))
        client = stack.enter_context(Client(cluster))
    else:
        try:
            client = stack.enter_context(Client(scheduler, timeout="10s"))
        except OSError as e:
            raise RunError(f"--scheduler {scheduler}: cannot connect ({e}); start it with `dask scheduler`") from None
        _check_cluster(client, scheduler, log)
    extra = {"resources": {"GPU": 1}} if scheduler and device.startswith("cuda") else {}
    stack.enter_context(parallel_config(backend="dask", client=client, **extra))
    return Parallel(n_jobs=-1, batch_size=1, pre_dispatch="n_jobs", return_as="generator_unordered")


def _environ(name: str) -> str | None:
    """The variable `name` of the calling process (run on a worker: its environment, where
    `os.environ.get` would be pickled with the driver's)."""
    return os.environ.get(name)


def _check_cluster(client, scheduler: str, log: Callable[[str], None]) -> None:
    """A scheduler or worker that cannot import memloc would leave the tasks hanging: say so.
    Workers that run with MALLOC_TRIM_THRESHOLD_ set (see `NANNY_ENVIRON`) work, slowly: say that too."""
    found = {"the scheduler": client.run_on_scheduler(importlib.util.find_spec, "precompute"),
             **client.run(importlib.util.find_spec, "precompute")}
    lacking = [where for where, spec in found.items() if spec is None]
    if lacking:
        raise RunError(f"--scheduler {scheduler}: {', '.join(lacking)} cannot import memloc's precompute; install memloc "
                       "there too (`pip install .` in a clone) or start them with PYTHONPATH set to the clone")
    if not client.scheduler_info()["workers"]:
        raise RunError(f"--scheduler {scheduler}: no worker is connected; start some with `dask worker {scheduler}`")
    trimmed = [w for w, value in client.run(_environ, "MALLOC_TRIM_THRESHOLD_").items() if value is not None]
    if trimmed:
        log(f"note: {len(trimmed)} worker(s) of {scheduler} run with MALLOC_TRIM_THRESHOLD_ set (dask's nanny does it), "
            "which makes training up to 1.8x slower; README, 'On a cluster', says how to start them without it")


def summarize(target: Sweep, log: Callable[[str], None] = print) -> None:
    """Write the sweep's `summary.parquet` from its points' own tables (complete stages only)."""
    record = target.record()
    keys = record["keys"]
    rows = []
    for name, point in record["points"].items():
        run = target.run(name)
        if not run.exists():
            continue
        try:
            rows.append((name, point["values"], key_numbers(run)))
        except RunError as e:  # a damaged point is left out of the summary, and said so
            log(f"summary: point {name} left out: {e}")
    target.write_summary(summary_table(rows, keys))
    log(f"summary: {target.path / 'summary.parquet'} ({len(rows)} of {len(record['points'])} points)")


__all__ = ["BACKENDS", "Point", "grid_from", "points_of", "disk_line", "run_point", "run_sweep", "summarize"]
