import json
import re
import pickle
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from memloc import overrides
from memloc.store import SCHEMA_VERSION, Run, RunError, StaleRunError, list_runs


def _new_run(path) -> Run:
    run = Run(path)
    with run.lock():
        run.create({"k": 1}, "fp", seed=0)
    return run


def test_round_trip_of_every_artifact(tmp_path):
    run = _new_run(tmp_path / "r")
    state = {"w": torch.randn(3, 4), "bn.running_mean": torch.zeros(4), "n": torch.tensor(7)}
    table = pd.DataFrame({"epoch": [0, 1], "acc": [0.1, 0.9], "units": [["a[1]"], []]})
    with run.lock():
        run.write_checkpoint(0, state)
        run.write_checkpoint(12, state)
        run.write_labels(np.array([1, 2]), np.array([1, 3]), np.array([False, True]))
        run.write_table("training", table)
        run.append_state("train", {"training": table}, {"m": torch.ones(2)}, {"epochs_done": 1})
        run.append_state("train", {"training": table.iloc[:1]}, {"m": torch.zeros(2)})
        run.update_stage("train", status="complete", seconds=1.5)
    back = run.read_checkpoint(12)
    assert all(torch.equal(back[k], v) for k, v in state.items()) and set(back) == set(state)
    assert run.checkpoint_epochs() == [0, 12]
    labels = run.read_labels()
    assert labels["train_label"].tolist() == [1, 3] and labels["is_noisy"].dtype == bool
    pd.testing.assert_frame_equal(run.read_table("training"), table)
    tables, tensors = run.read_state("train")  # the pieces in order, the latest tensors
    pd.testing.assert_frame_equal(tables["training"], pd.concat([table, table.iloc[:1]], ignore_index=True))
    assert torch.equal(tensors["m"], torch.zeros(2)) and run.stage("train")["epochs_done"] == 1
    assert len(list((run.path / "state" / "train" / "tensors").iterdir())) == 1  # the replaced tensors are gone
    assert run.is_complete("train") and run.stage("train")["seconds"] == 1.5
    assert run.manifest()["schema_version"] == SCHEMA_VERSION
    assert [r.name for r in list_runs(tmp_path)] == ["r"]
    with run.lock():
        run.drop_state("train")
    assert not run.has_state("train") and run.read_state("train") is None and not (run.path / "state").exists()


def test_no_temporary_files_are_left(tmp_path):
    run = _new_run(tmp_path / "r")
    with run.lock():
        run.write_checkpoint(0, {"w": torch.zeros(2)})
    leftovers = [p.name for p in run.path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_writing_needs_the_lock(tmp_path):
    run = _new_run(tmp_path / "r")
    with pytest.raises(RuntimeError, match="lock"):
        run.write_checkpoint(0, {"w": torch.zeros(2)})


def test_second_writer_is_refused(tmp_path):
    run = _new_run(tmp_path / "r")
    other = Run(tmp_path / "r")
    with run.lock():
        errors = []

        def second():  # flock is per open file description: a second open conflicts even in-process
            try:
                with other.lock():
                    pass
            except RunError as e:
                errors.append(str(e))

        t = threading.Thread(target=second)
        t.start()
        t.join()
    assert errors and "in use by another precompute process" in errors[0]
    with other.lock():  # released after the first writer is done
        pass


def test_tampered_checkpoint_is_refused(tmp_path):
    run = _new_run(tmp_path / "r")
    with run.lock():
        run.write_checkpoint(1, {"w": torch.zeros(100)})
    f = run.path / "checkpoints" / "epoch_001.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the weights: still a valid safetensors file
    f.write_bytes(bytes(data))
    with pytest.raises(RunError, match="does not match the checksum"):
        run.read_checkpoint(1)


def test_truncated_checkpoint_is_refused(tmp_path):
    run = _new_run(tmp_path / "r")
    with run.lock():
        run.write_checkpoint(1, {"w": torch.zeros(100)})
    f = run.path / "checkpoints" / "epoch_001.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(RunError, match="truncated, tampered or replaced"):
        run.read_checkpoint(1)


def test_pickle_in_place_of_a_table_is_refused_without_unpickling(tmp_path, monkeypatch):
    run = _new_run(tmp_path / "r")
    with run.lock():
        run.write_table("training", pd.DataFrame({"a": [1]}))
    (run.path / "tables" / "training.parquet").write_bytes(pickle.dumps(pd.DataFrame({"a": [1]})))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a run artifact was unpickled"))
    with pytest.raises(RunError):
        run.read_table("training")


def test_corrupt_or_foreign_manifest(tmp_path):
    run = _new_run(tmp_path / "r")
    (run.path / "manifest.json").write_text('{"schema_version": 1, "conf')
    with pytest.raises(RunError, match="not valid JSON"):
        run.manifest()
    (run.path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(StaleRunError, match="run schema 99"):
        run.manifest()
    with pytest.raises(RunError, match="not a memloc run"):
        Run(tmp_path / "nothing").manifest()


def test_missing_artifact_names_the_fix(tmp_path):
    run = _new_run(tmp_path / "r")
    with pytest.raises(RunError, match=r"is missing from run r; run `python -m precompute run --preset smoke .*--out .*` to recreate it"):
        run.read_table("rewinding")


def test_a_run_of_an_older_schema_names_the_command_that_recreates_it(tmp_path):
    config = overrides.resolve("smoke", overrides=["train.epochs=5"]).to_dict()
    del config["dropout"]["epochs"]  # as an older memloc would have written it
    run = _new_run(tmp_path / "old")
    manifest = json.loads((run.path / "manifest.json").read_text())
    (run.path / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 1, "config": config}))
    with pytest.raises(StaleRunError) as err:
        run.manifest()
    command = f"python -m precompute run --preset smoke --set train.epochs=5 --out {run.path}"
    assert str(err.value).endswith(f"recreate it with `{command}`") and "run schema 1" in str(err.value)


def test_stage_and_table_names_cannot_reach_outside_the_run(tmp_path):
    run = _new_run(tmp_path / "r")
    with run.lock():
        for bad in ("../../victim", "a/b", ""):
            with pytest.raises(ValueError, match="identifier"):
                run.append_state(bad, {})
            with pytest.raises(ValueError, match="identifier"):
                run.write_table(bad, pd.DataFrame())


def test_an_edited_manifest_cannot_make_the_state_touch_files_outside_the_run(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = _new_run(tmp_path / "runs" / "r")
    with run.lock():
        run.append_state("train", {"training": pd.DataFrame({"epoch": [1]})}, {"m": torch.ones(1)})
    clean = (run.path / "manifest.json").read_text()
    for rel in ("state/train/tensors/../../../../victim.txt", "state/train/tensors/000000.safetensors/../../../../../victim.txt"):
        manifest = json.loads(clean)
        manifest["files"][rel] = {"sha256": "0" * 64, "bytes": 7}
        (run.path / "manifest.json").write_text(json.dumps(manifest))
        with run.lock(), pytest.raises(RunError, match=re.escape(f"files lists {rel!r}, which is not a file name")):
            run.append_state("train", {"training": pd.DataFrame({"epoch": [2]})}, {"m": torch.zeros(1)})
        with run.lock(), pytest.raises(RunError, match="not a file name of a memloc run"):
            run.drop_state("train")
    assert victim.read_text() == "keep me"
