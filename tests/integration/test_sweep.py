"""`precompute sweep` on 4-point `smoke` grids: loky, a local dask cluster and a real `dask scheduler`
with two `dask worker` processes; failure isolation; a SIGKILLed driver; validation; the summary."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from memloc import overrides
from memloc.grid import Grid
from memloc.store import Run, Sweep
from precompute.stages import execute
from precompute.sweep import grid_from, run_sweep

ROOT = Path(__file__).resolve().parents[2]
GRID = ["train.seed=0,1", "data.noise_frac=0.1,0.2"]  # the grid of the `smoke_sweep` fixture (conftest.py)
POINTS = ["seed=0,noise_frac=0.1", "seed=0,noise_frac=0.2", "seed=1,noise_frac=0.1", "seed=1,noise_frac=0.2"]


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "precompute", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}, **kwargs)


def _quiet(_message: str) -> None:
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(run: Run) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(run.path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.path.rglob("*")) if p.is_file() and p.name != ".lock"}


def _same_tables(a: Run, b: Run) -> bool:
    names = a.tables()
    return names == b.tables() and all(
        a.read_table(n).drop(columns="seconds", errors="ignore").equals(b.read_table(n).drop(columns="seconds", errors="ignore"))
        for n in names)


def test_loky_sweep_makes_an_ordinary_run_per_point_and_records_them(smoke_sweep, tmp_path):
    record = smoke_sweep.record()
    assert list(record["points"]) == POINTS and record["keys"] == ["train.seed", "data.noise_frac"]
    assert all(p["status"] == "complete" and p["seconds"] > 0 and p["error"] is None for p in record["points"].values())
    assert smoke_sweep.status_counts() == {"pending": 0, "running": 0, "complete": 4, "failed": 0}
    for name in POINTS:
        assert "stage dropout: complete" in smoke_sweep.log_file(name).read_text()
    # The same code path as `precompute run`: a point equals the run made directly from its config,
    # with the points' torch threads (cores / 2 jobs; float sums depend on the thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // 2))
    try:
        direct = execute(overrides.resolve("smoke", overrides=["train.seed=1", "data.noise_frac=0.2"]), str(tmp_path / "d"),
                         torch.device("cpu"), log=_quiet)
    finally:
        torch.set_num_threads(threads)
    point = smoke_sweep.run("seed=1,noise_frac=0.2")
    assert _same_tables(point, direct)
    assert all(torch.equal(point.read_checkpoint(3)[k], v) for k, v in direct.read_checkpoint(3).items())


def test_sweep_through_a_local_dask_cluster(tmp_path):
    # On the command line: the cluster's worker processes start from the driver's main module,
    # which inside pytest may be a script another test ran (Streamlit's AppTest).
    out = tmp_path / "dask"
    result = _cli("sweep", "--preset", "smoke", "--set", 'stages=["train"]', *[a for g in GRID for a in ("--grid", g)],
                  "--out", str(out), "--backend", "dask", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert Sweep(out).status_counts()["complete"] == 4
    for point in POINTS:  # the local cluster's nanny leaves glibc's malloc as it is (NANNY_ENVIRON)
        assert "MALLOC_TRIM_THRESHOLD_" not in Sweep(out).log_file(point).read_text().splitlines()[0]


def test_sweep_through_a_real_scheduler_and_two_workers(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = str(Path(sys.executable).with_name("dask"))
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    untrimmed = tmp_path / "dask-config"  # the README's worker config: the nanny leaves MALLOC_TRIM_THRESHOLD_ unset
    untrimmed.mkdir()
    (untrimmed / "memloc.yaml").write_text("distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n")
    try:
        for config in ({}, {"DASK_CONFIG": str(untrimmed)}):  # one worker as dask starts it, one as the README says
            procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-dashboard"], env={**env, **config},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        out = tmp_path / "cluster"
        grid = grid_from("smoke", ['stages=["train"]'], GRID, None)
        said = []
        assert run_sweep(grid, str(out), backend="dask", scheduler=address, log=said.append) == 0
        assert [line for line in said if line.startswith("note: 1 worker(s) of ")]  # the default one, and only it
        record = Sweep(out).record()
        assert [p["status"] for p in record["points"].values()] == ["complete"] * 4
        headers = [Sweep(out).log_file(p).read_text().splitlines()[0] for p in POINTS]
        pids = {h.split("(pid ")[1].split(")")[0] for h in headers}
        assert len(pids) == 2  # both workers took points
        assert {"MALLOC_TRIM_THRESHOLD_=65536" in h for h in headers} == {True, False}
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def test_a_failing_point_is_isolated_and_retried_only_when_asked(tmp_path):
    out = tmp_path / "failing"
    grid = grid_from("smoke", ['stages=["train"]', 'data.root="/nonexistent"'], ["data.name=digits,mnist"], None)
    messages: list[str] = []
    assert run_sweep(grid, str(out), log=messages.append) == 1
    record = Sweep(out).record()
    assert record["points"]["name=digits"]["status"] == "complete"
    failed = record["points"]["name=mnist"]
    assert failed["status"] == "failed" and "DataError" in failed["error"] and failed["log"] == "logs/name=mnist.log"
    log = Sweep(out).log_file("name=mnist").read_text()
    assert "Traceback (most recent call last)" in log and "memloc.data.DataError" in log
    assert any(str(Sweep(out).log_file("name=mnist")) in m for m in messages)
    before = _files(Sweep(out).run("name=digits"))
    messages.clear()
    assert run_sweep(grid, str(out), log=messages.append) == 1  # failed points wait for --retry-failed
    assert any("0 to run" in m for m in messages) and _files(Sweep(out).run("name=digits")) == before
    assert run_sweep(grid, str(out), retry_failed=True, log=messages.append) == 1
    assert Sweep(out).log_file("name=mnist").read_text().count("Traceback") == 2  # it ran again, and failed again


def test_a_sigkilled_driver_loses_nothing_complete_and_the_rerun_finishes(tmp_path):
    out = tmp_path / "killed"
    args = ["sweep", "--preset", "smoke", "--set", "train.epochs=12", "--set", 'stages=["train","rewind"]',
            "--grid", "train.seed=0,1,2,3", "--out", str(out), "--jobs", "1"]
    driver = subprocess.Popen([sys.executable, "-m", "precompute", *args], cwd=ROOT, start_new_session=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    complete: list[str] = []
    while time.time() < deadline and not complete:
        time.sleep(0.2)
        if (out / "sweep.json").is_file():
            try:
                points = json.loads((out / "sweep.json").read_text())["points"]
            except json.JSONDecodeError:
                continue
            complete = [p for p, r in points.items() if r["status"] == "complete"]
    assert complete, driver.stderr.read() if driver.poll() is not None else "no point completed in 120 s"
    os.kill(driver.pid, signal.SIGKILL)  # the driver only: its loky worker may still be computing a point
    driver.wait()
    assert Sweep(out).status_counts()["complete"] < 4
    untouched = {p: _files(Sweep(out).run(p)) for p in complete}
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    assert Sweep(out).status_counts()["complete"] == 4
    assert {p: _files(Sweep(out).run(p)) for p in complete} == untouched  # same sha256 and mtime
    for seed in (0, 3):  # results equal runs made without any interruption
        direct = execute(overrides.resolve("smoke", overrides=["train.epochs=12", 'stages=["train","rewind"]',
                                                               f"train.seed={seed}"]),
                         str(tmp_path / f"direct{seed}"), torch.device("cpu"), log=_quiet)
        assert _same_tables(Sweep(out).run(f"seed={seed}"), direct)


@pytest.mark.parametrize("args, message", [
    (["--grid", "data.noise_frac=0.1,2.0"], "error: point noise_frac=2: data.noise_frac: a number in [0, 1), got 2.0"),
    (["--grid", "train.seeds=0,1"], "error: point seeds=0: unknown key 'train.seeds'"),
    (["--grid", "model.name=mlp,gpt"], "error: point name=gpt: model.name: one of mlp"),
    (["--grid", "train.seed=0", "--backend", "ray"], "error: --backend: one of loky, dask, got 'ray'"),
])
def test_a_bad_grid_exits_2_with_one_line_before_anything_is_written(tmp_path, args, message):
    out = tmp_path / "bad"
    result = _cli("sweep", "--preset", "smoke", "--out", str(out), *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_second_sweep_on_the_same_directory_refuses(tmp_path):
    out = tmp_path / "busy"
    with Sweep(out).lock():
        result = _cli("sweep", "--preset", "smoke", "--grid", "train.seed=0,1", "--out", str(out))
    assert result.returncode == 2 and "is in use by another sweep (pid" in result.stderr
    assert not (out / "sweep.json").exists()


def test_another_grid_in_the_same_directory_is_refused(smoke_sweep):
    with pytest.raises(Exception, match="holds another sweep"):
        run_sweep(grid_from("smoke", [], ["train.seed=5"], None), str(smoke_sweep.path), log=_quiet)


def test_a_sweep_file_pairs_values_and_multiplies_the_grid():
    spec = {"preset": "smoke", "set": {"train": {"epochs": 2}}, "grid": {"train.seed": [0, 1]},
            "points": [{"model.name": "mlp"}, {"model.name": "cnn", "model.options.width": 0.5}]}
    grid = grid_from(None, [], [], spec)
    assert grid == Grid("smoke", {"train.epochs": 2}, {"train.seed": [0, 1]}, spec["points"])
    from precompute.sweep import points_of

    names = [p.name for p in points_of(grid)]
    assert names == ["seed=0,name=mlp", "seed=1,name=mlp", "seed=0,name=cnn,width=0.5", "seed=1,name=cnn,width=0.5"]
    assert points_of(grid)[2].config.model.name == "cnn" and dict(points_of(grid)[2].config.model.options) == {"width": 0.5}


def test_the_summary_equals_an_aggregation_by_hand(smoke_sweep):
    summary = smoke_sweep.read_summary()
    by_hand: dict[str, dict[str, float]] = {}
    for name in POINTS:
        run = smoke_sweep.run(name)
        training = pd.read_parquet(run.path / "tables" / "training.parquet")
        rewinding = pd.read_parquet(run.path / "tables" / "rewinding.parquet")
        flipping = pd.read_parquet(run.path / "tables" / "flipping.parquet")
        drop = pd.read_parquet(run.path / "tables" / "dropout.parquet").set_index("mode")
        noisy_flipped = flipping[(flipping["kind"] == "noisy") & flipping["flipped"]]
        by_hand[name] = {
            "memorized": training["noisy_acc"].iloc[-1],
            "rewound.fc2": rewinding[(rewinding["group"] == "fc2") & (rewinding["epoch"] == 0)]["noisy_acc"].item(),
            "noisy_units_mean": noisy_flipped["n_units"].mean(),
            "drop_clean_acc": drop.loc["drop", "clean_acc"],
        }
    points = summary[summary["scope"] == "point"].set_index(["point", "metric"])["mean"]
    for name, numbers in by_hand.items():
        for metric, value in numbers.items():
            assert points[(name, metric)] == pytest.approx(round(value, 2) if metric == "noisy_units_mean" else value)
    settings = summary[summary["scope"] == "setting"]
    for noise in (0.1, 0.2):
        values = [by_hand[f"seed={s},noise_frac={noise}"]["memorized"] for s in (0, 1)]
        row = settings[(settings["metric"] == "memorized") & (settings["data.noise_frac"] == noise)].iloc[0]
        assert row["point"] == f"noise_frac={noise}" and row["n"] == 2 and pd.isna(row["train.seed"])
        assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values, ddof=1))


def test_summarize_and_list_on_the_command_line(smoke_sweep):
    (smoke_sweep.path / "summary.parquet").unlink()
    result = _cli("summarize", str(smoke_sweep.path))
    assert result.returncode == 0 and "4 of 4 points" in result.stdout and smoke_sweep.has_summary()
    listing = _cli("list", str(smoke_sweep.path.parent))
    assert "grid/: sweep of 4 points, 4 complete" in listing.stdout
    assert _cli("summarize", str(smoke_sweep.path.parent / "nothing")).returncode == 2
