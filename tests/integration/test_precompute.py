"""`precompute run` end to end on the `smoke` preset: files, determinism, resume, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from memloc import overrides
from memloc.settings import ConfigError
from precompute.stages import execute

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "precompute", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def _quiet(_msg: str) -> None:
    pass


def test_smoke_run_writes_the_documented_run_directory(smoke_run):
    manifest = smoke_run.manifest()
    assert manifest["stages"]["train"]["status"] == "complete"
    assert {"python", "torch", "numpy"} <= set(manifest["versions"])
    assert len(manifest["data_fingerprint"]) == 64
    cfg = overrides.from_dict(manifest["config"])
    assert smoke_run.checkpoint_epochs() == list(range(cfg.train.epochs + 1))
    labels = smoke_run.read_labels()
    n = cfg.data.train_size
    assert labels["is_noisy"].sum() == int(cfg.data.noise_frac * n)
    assert (labels["true_label"] != labels["train_label"]).tolist() == labels["is_noisy"].tolist()
    training = smoke_run.read_table("training")
    assert training["epoch"].tolist() == list(range(cfg.train.epochs + 1))
    for col in ("lr", "train_loss", "clean_acc", "noisy_acc", "noisy_true_acc", "test_acc",
                "clean_loss", "noisy_loss", "noisy_true_loss", "test_loss"):
        assert col in training.columns
    examples = smoke_run.read_table("example_training")
    assert list(examples.columns) == ["example_id", "epoch", "loss", "correct"]
    assert len(examples) == n * cfg.train.epochs
    assert not smoke_run.has_state("train")  # resume state is dropped once the stage is complete


def test_training_reaches_the_memorization_it_claims(smoke_run, tmp_path):
    """The recorded noisy accuracy is what the final checkpoint really gives."""
    from memloc.evaluate import evaluate
    from memloc.runs import open_run

    opened = open_run(smoke_run)
    metrics = evaluate(opened.model(), opened.data.train_x, opened.labels, opened.data.test_x, opened.data.test_labels)
    last = smoke_run.read_table("training").iloc[-1]
    for key in ("clean_acc", "noisy_acc", "test_acc"):
        assert metrics[key] == pytest.approx(last[key])


def test_per_example_stats_come_from_the_training_pass(smoke_run):
    """The last epoch's per-example correctness agrees with the training-pass losses (small loss -> correct)."""
    examples = smoke_run.read_table("example_training")
    last = examples[examples["epoch"] == examples["epoch"].max()]
    # Cross-entropy below log(2) means the label has probability > 1/2, so it is the argmax.
    confident = last["loss"] < np.log(2)
    assert last.loc[confident, "correct"].all()


def test_same_config_and_seed_give_bitwise_identical_checkpoints(smoke_run, tmp_path):
    again = execute(overrides.resolve("smoke"), str(tmp_path / "again"), torch.device("cpu"), log=_quiet)
    for epoch in smoke_run.checkpoint_epochs():
        a, b = smoke_run.read_checkpoint(epoch), again.read_checkpoint(epoch)
        assert all(torch.equal(a[k], b[k]) for k in a), epoch


def test_complete_run_is_skipped_and_other_config_is_refused(smoke_copy):
    messages: list[str] = []
    execute(overrides.resolve("smoke"), str(smoke_copy.path), torch.device("cpu"), log=messages.append)
    assert "stage train: complete, skipped" in messages
    with pytest.raises(Exception, match=r"another config \(train.epochs 3 \(run\) vs 4 \(now\)\)"):
        execute(overrides.resolve("smoke", overrides=["train.epochs=4"]), str(smoke_copy.path), torch.device("cpu"), log=_quiet)


def test_cli_smoke_end_to_end_in_seconds(tmp_path):
    t0 = time.perf_counter()
    result = _cli("run", "--preset", "smoke", "--out", str(tmp_path / "cli"))
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    assert '"noise_frac": 0.1' in result.stdout  # the resolved config is printed at start
    assert "stage train: complete" in result.stdout
    listing = _cli("list", str(tmp_path))
    assert listing.returncode == 0 and "cli: digits / mlp" in listing.stdout and "train: complete" in listing.stdout
    print(f"smoke end to end: {elapsed:.1f} s")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "tiny"], "--preset: one of smoke, demo"),
        (["--set", "data.noise_frac=1.5"], "data.noise_frac: a number in [0, 1), got 1.5"),
        (["--set", "train.epocs=3"], "unknown key 'train.epocs'"),
        (["--set", "data.name=mnist", "--data-root", "{tmp}/nodata"], "--download"),
        (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    ],
)
def test_cli_rejects_bad_input_with_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = _cli("run", "--preset", "smoke", "--out", str(out), *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_help_documents_every_key():
    result = _cli("run", "--help")
    assert result.returncode == 0
    for key in overrides.known_keys():
        assert key in result.stdout


def test_cli_list_without_runs_says_how_to_make_one(tmp_path):
    result = _cli("list", str(tmp_path / "empty"))
    assert result.returncode == 0 and "python -m precompute run --preset demo" in result.stdout


def test_a_run_of_an_older_schema_is_one_line_with_the_command_that_recreates_it(smoke_copy):
    manifest_file = smoke_copy.path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "schema_version": 1}))
    before = {p: p.stat().st_mtime_ns for p in smoke_copy.path.rglob("*") if p.is_file() and p.name != ".lock"}
    for args in (["run", "--preset", "smoke", "--out", str(smoke_copy.path)], ["list", str(smoke_copy.path.parent)]):
        result = _cli(*args)
        assert "Traceback" not in result.stderr
        text = result.stderr if args[0] == "run" else result.stdout
        assert f"recreate it with `python -m precompute run --preset smoke --out {smoke_copy.path}`" in text
    assert result.returncode == 0 and _cli("run", "--preset", "smoke", "--out", str(smoke_copy.path)).returncode == 2
    assert {p: p.stat().st_mtime_ns for p in smoke_copy.path.rglob("*") if p.is_file() and p.name != ".lock"} == before  # nothing written


def test_a_checkpoint_policy_keeps_only_its_epochs_and_the_stages_use_those(tmp_path):
    cfg = overrides.resolve("smoke", overrides=["train.epochs=6", "train.keep_epochs=0-1,4", 'stages=["train","rewind"]'])
    assert cfg.train.kept_epochs() == [0, 1, 4, 6] and cfg.rewind.epochs_for(cfg.train) == [0, 1, 4, 6]
    run = execute(cfg, str(tmp_path / "kept"), torch.device("cpu"), log=_quiet)
    assert run.checkpoint_epochs() == [0, 1, 4, 6]
    assert sorted(p.name for p in (run.path / "checkpoints").glob("*.safetensors")) == [
        f"epoch_{e:03d}.safetensors" for e in (0, 1, 4, 6)]
    assert sorted(run.read_table("rewinding")["epoch"].unique()) == [0, 1, 4, 6]
    full = execute(overrides.resolve("smoke", overrides=["train.epochs=6", 'stages=["train"]']), str(tmp_path / "full"),
                   torch.device("cpu"), log=_quiet)
    assert all(torch.equal(run.read_checkpoint(6)[k], v) for k, v in full.read_checkpoint(6).items())  # same training
    with pytest.raises(ConfigError, match=r"rewind.epochs: kept checkpoints; train.keep_epochs='0-1,4' does not keep \[2\]"):
        overrides.resolve("smoke", overrides=["train.epochs=6", "train.keep_epochs=0-1,4", "rewind.epochs=[0,2]"])
