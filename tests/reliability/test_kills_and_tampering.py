"""The run store under kills, tampering, crafted manifests and a full disk.

- A kill (a `BaseException` from the store's fault-injection point `memloc.store._reached`) at
  the instants that were once unsafe: a file renamed into place, the manifest not yet updated
  (for a new file and for a file written again), in every stage; the same command resumes to
  bitwise the same run.
- A tamper matrix over every kind of file: each read is a `RunError`, `Run.verify` names the
  file, and the same command heals every damage at once, to bitwise the same run.
- Manifest mutations: always a `RunError` naming the key; nothing outside the run is touched.
- A full disk (a small tmpfs): one line, exit 2, and what is on disk resumes bitwise.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch

from memloc import overrides, store
from memloc.store import Run, RunError
from precompute import cli
from precompute.stages import execute

CPU = torch.device("cpu")


class Killed(BaseException):
    """What the fault-injection point raises: the process stops there (a kill -9 runs no
    `except`; the runner's `finally` only adds the seconds spent to the manifest)."""


def _execute(out, log=None) -> Run:
    return execute(overrides.resolve("smoke"), str(out), CPU, log=log or (lambda _: None))


def _kill_at(monkeypatch, point: str, rel: str) -> None:
    def reached(at: str, name: str) -> None:
        if (at, name) == (point, rel):
            raise Killed(f"{point} {rel}")

    monkeypatch.setattr(store, "_reached", reached)


#: One file of each stage (and the labels), killed after its rename, before the manifest lists it.
NEW_FILES = ["labels.npz", "checkpoints/epoch_002.safetensors", "tables/example_gradients.parquet",
             "tables/rewinding.parquet", "tables/retraining.parquet", "tables/flip_units.parquet",
             "checkpoints/dropout/epoch_001.safetensors"]


@pytest.mark.parametrize("rel", NEW_FILES)
def test_a_kill_between_a_rename_and_the_manifest_resumes_bitwise(smoke_run, digests, tmp_path, monkeypatch, rel):
    _kill_at(monkeypatch, "renamed", rel)
    with pytest.raises(Killed):
        _execute(tmp_path / "run")
    run = Run(tmp_path / "run")
    assert (run.path / rel).is_file() and rel not in run.manifest()["files"]  # the window the kill hit
    monkeypatch.undo()
    messages: list[str] = []
    _execute(run.path, messages.append)
    assert run.verify() == [] and all(run.is_complete(s) for s in overrides.resolve("smoke").stages)
    assert digests(run) == digests(smoke_run)


@pytest.mark.parametrize("point", ["announced", "renamed"])
def test_a_kill_while_a_listed_file_is_written_again_resumes_bitwise(smoke_copy, smoke_run, digests, monkeypatch, point):
    rel = "tables/retraining.parquet"
    (smoke_copy.path / rel).write_bytes(b"damaged")
    _kill_at(monkeypatch, point, rel)
    with pytest.raises(Killed):
        _execute(smoke_copy.path)  # heals: stage retrain runs again and writes its table again
    assert not smoke_copy.is_complete("retrain")
    monkeypatch.undo()
    _execute(smoke_copy.path)
    assert smoke_copy.verify() == [] and digests(smoke_copy) == digests(smoke_run)


def test_either_content_of_a_write_under_way_is_accepted(smoke_copy):
    rel, table = "tables/flipping.parquet", smoke_copy.read_table("flipping")
    new = table.head(1)
    with smoke_copy.lock(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "_reached", lambda at, name: (_ for _ in ()).throw(Killed()) if at == "renamed" else None)
        with pytest.raises(Killed):
            smoke_copy.write_table("flipping", new)
    assert "pending" in smoke_copy.manifest()["files"][rel]
    assert smoke_copy.read_table("flipping").equals(new) and smoke_copy.verify() == []


# ---------------------------------------------------------------------- tampering
def _pickled(_: bytes) -> bytes:
    return pickle.dumps({"weights": [1.0, 2.0]})


def _object_npz(_: bytes) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, true_label=np.array([{"a": 1}], dtype=object))
    return buf.getvalue()


def _flip_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


TAMPERS = {
    "flip a byte": _flip_byte,
    "truncate": lambda data: data[: len(data) // 2],
    "pickle": _pickled,
    "object npz": _object_npz,
}
#: One file of each kind, and how it is read.
FILES = {
    "labels.npz": lambda run: run.read_labels(),
    "checkpoints/epoch_003.safetensors": lambda run: run.read_checkpoint(3),
    "checkpoints/dropout/epoch_002.safetensors": lambda run: run.read_checkpoint(2, variant="dropout"),
    "tables/flipping.parquet": lambda run: run.read_table("flipping"),
}


@pytest.mark.parametrize("rel", FILES)
@pytest.mark.parametrize("tamper", [*TAMPERS, "delete", "link out"])
def test_every_tampered_file_is_refused_and_reported(smoke_copy, tmp_path, rel, tamper):
    file = smoke_copy.path / rel
    if tamper == "delete":
        file.unlink()
    elif tamper == "link out":  # the same bytes, but outside the run
        outside = tmp_path / "outside.bin"
        outside.write_bytes(file.read_bytes())
        file.unlink()
        file.symlink_to(outside)
    else:
        file.write_bytes(TAMPERS[tamper](file.read_bytes()))
    with pytest.raises(RunError, match=r"run `python -m precompute run --preset smoke .*--out|leads out of run"):
        FILES[rel](smoke_copy)
    assert [p.rel for p in smoke_copy.verify()] == [rel]
    if tamper != "flip a byte":  # a changed size is seen without reading the file
        assert [p.rel for p in smoke_copy.verify(checksums=False)] == [rel]


@pytest.mark.parametrize("rel", FILES)
@pytest.mark.parametrize("tamper", ["pickle", "object npz"])
def test_a_foreign_file_is_refused_even_with_its_sha256_in_the_manifest(smoke_copy, rel, tamper):
    file = smoke_copy.path / rel
    data = TAMPERS[tamper](file.read_bytes())
    file.write_bytes(data)
    manifest = json.loads((smoke_copy.path / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (smoke_copy.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunError, match="is not a valid"):
        FILES[rel](smoke_copy)


def test_the_same_command_heals_every_damage_at_once(smoke_copy, smoke_run, digests, tmp_path):
    outside = tmp_path / "outside.bin"
    table = smoke_copy.path / "tables/flipping.parquet"
    outside.write_bytes(table.read_bytes())
    table.unlink()
    table.symlink_to(outside)
    (smoke_copy.path / "labels.npz").write_bytes(_object_npz(b""))
    (smoke_copy.path / "checkpoints/epoch_003.safetensors").unlink()
    dropout = smoke_copy.path / "checkpoints/dropout/epoch_002.safetensors"
    dropout.write_bytes(_flip_byte(dropout.read_bytes()))
    messages: list[str] = []
    _execute(smoke_copy.path, messages.append)
    assert any("run again from the start" in m for m in messages)
    assert smoke_copy.verify() == [] and digests(smoke_copy) == digests(smoke_run)
    assert outside.read_bytes() and not table.is_symlink()  # the link went, not what it pointed to
    assert np.array_equal(smoke_copy.read_labels()["train_label"], smoke_run.read_labels()["train_label"])


def test_verify_and_list_report_a_damaged_run_and_go_on(smoke_copy, smoke_run, capsys):
    shutil.copytree(smoke_run.path, smoke_copy.path.parent / "other")
    (smoke_copy.path / "tables/rewinding.parquet").unlink()
    assert cli.main(["verify", str(smoke_copy.path.parent)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED  smoke" in out and "tables/rewinding.parquet: missing" in out and "ok       other" in out
    assert "recreate with: python -m precompute run --preset smoke" in out and "1 of 2 run(s) intact" in out
    assert cli.main(["verify", str(smoke_copy.path.parent / "other")]) == 0
    assert cli.main(["list", str(smoke_copy.path.parent)]) == 0
    out = capsys.readouterr().out
    assert out.count("DAMAGED: 1 file(s)") == 1 and "\nother:" in out


# ---------------------------------------------------------------------- manifests
def _mutations() -> dict[str, object]:
    """Name -> a function of the manifest (a dict) returning the mutated manifest or raw text."""
    def without(key):
        return lambda m: {k: v for k, v in m.items() if k != key}

    def retyped(key):
        return lambda m: {**m, key: [] if isinstance(m[key], (dict, str, int)) else {}}

    def with_file(rel, record=None):
        return lambda m: {**m, "files": {**m["files"], rel: record or {"sha256": "0" * 64, "bytes": 7}}}

    cases = {f"no {key}": without(key) for key in store._MANIFEST_KEYS if key != "schema_version"}
    cases |= {f"{key} of a wrong type": retyped(key) for key in store._MANIFEST_KEYS if key != "schema_version"}
    cases |= {
        "a key with ..": with_file("state/rewind/rewinding/../../../../victim.txt"),
        "an absolute key": with_file("/tmp/victim.txt"),
        "a key of no memloc form": with_file("tables/../victim.parquet"),
        "a backslash key": with_file("tables\\x.parquet"),
        "a record without sha256": with_file("tables/x.parquet", {"bytes": 3}),
        "a negative size": with_file("tables/x.parquet", {"sha256": "0" * 64, "bytes": -1}),
        "a stage that is not an object": lambda m: {**m, "stages": {"train": "complete"}},
        "files as a list": lambda m: {**m, "files": list(m["files"])},
        "invalid JSON": lambda m: json.dumps(m)[:-10],
        "an unknown schema": lambda m: {**m, "schema_version": 99},
        "not an object": lambda m: [m],
    }
    return cases


MUTATIONS = _mutations()


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_every_manifest_mutation_is_one_run_error(smoke_copy, tmp_path, capsys, mutation):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    file = smoke_copy.path / "manifest.json"
    changed = MUTATIONS[mutation](json.loads(file.read_text()))
    file.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(RunError):
        smoke_copy.manifest()
    assert [p.kind for p in smoke_copy.verify()] == ["manifest"]
    assert cli.main(["run", "--preset", "smoke", "--out", str(smoke_copy.path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert cli.main(["list", str(smoke_copy.path.parent)]) == 0
    assert "smoke: unreadable" in capsys.readouterr().out
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 192 KiB tmpfs (the smoke run needs about 420 KiB); skips where none can be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)],
                                                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_the_run_resumes_bitwise(small_disk, smoke_run, digests, tmp_path, capsys):
    out = small_disk / "run"
    assert cli.main(["run", "--preset", "smoke", "--out", str(out)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device of" in err and "run the same command again" in err
    moved = tmp_path / "bigger" / "run"
    shutil.copytree(out, moved)  # the same state on a disk with room
    assert Run(moved).verify() == []
    _execute(moved)
    assert digests(Run(moved)) == digests(smoke_run)


# ---------------------------------------------------------------------- runs behind links
def test_a_run_linked_in_from_outside_the_root_is_neither_listed_nor_opened(smoke_run, tmp_path):
    from app.cache import run_in_root, run_names

    root = tmp_path / "root"
    root.mkdir()
    (root / "aaa").symlink_to(smoke_run.path)
    shutil.copytree(smoke_run.path, root / "inside")
    assert [run.name for run in store.list_runs(root)] == ["inside"]
    assert run_names(root) == ["inside"] and run_in_root(root, "aaa") is None
    assert run_in_root(root, "inside").name == "inside"
    for name in ("../root/inside", "inside/..", ".", "inside/x"):
        assert run_in_root(root, name) is None


def test_the_cache_key_of_a_run_changes_when_a_listed_file_is_replaced(smoke_copy):
    before = smoke_copy.stamp()
    table = smoke_copy.path / "tables/flipping.parquet"
    data = table.read_bytes()
    table.unlink()
    table.write_bytes(data)  # the same bytes, a new file: the explorer must not serve its old read
    assert smoke_copy.stamp() != before
