"""The run store: the only module that knows the file names of a run directory.

```
runs/<run>/
  manifest.json        schema_version, resolved config, library versions, seed, data
                       fingerprint, per-stage status and timings, sha256 of every artifact
  labels.npz           true label, training label, is_noisy per training example
  checkpoints/epoch_NNN.safetensors     the plain variant's state after epoch NNN (000 = init)
  checkpoints/dropout/epoch_NNN.safetensors   the same for the dropout variant (stage `dropout`)
  state/<stage>/<table>/<piece>.parquet      partial tables of an unfinished stage, piece by piece
  state/<stage>/tensors/<piece>.safetensors  and its tensors (e.g. SGD momentum), if any
  tables/<name>.parquet                 one table per analysis
```

A run holds two models, its *variants*: `plain` (trained by stage `train`) and `dropout` (the
example-tied dropout model of stage `dropout`).

Nothing here is pickled: weights are safetensors, arrays an npz read with
`allow_pickle=False`, tables Parquet, metadata JSON. Every write goes to a temporary file that
is renamed into place, and the manifest records each file's sha256, so a truncated, tampered or
swapped file is refused with a clear `RunError` instead of being half-read. A stage is marked
complete only after its files are in place. One process at a time may write a run (a lock file).

A stage's resume state grows by pieces: a save writes new files only and one manifest update
switches to them, so an interruption at any instant leaves either the old state or the new
one, never a mix. A run written by another schema version is refused with
the command that recreates it (`StaleRunError`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
LABELS = "labels.npz"
LOCK = ".lock"
SWEEP = "sweep.json"
SUMMARY = "summary.parquet"
#: The models of a run: `plain` (stage train) and `dropout` (stage dropout).
VARIANTS = ("plain", "dropout")
_CHECKPOINTS = {"plain": "checkpoints/epoch_", "dropout": "checkpoints/dropout/epoch_"}
_TENSORS = "tensors"  # file name (without suffix) of a resume state's tensors


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


class StaleRunError(RunError):
    """A run written by a memloc with another run schema; the message has the command that
    recreates it with this memloc."""

    def __init__(self, path: Path, found: Any, config: Any):
        self.path, self.found, self.config = path, found, config
        super().__init__(
            f"{path} was written by another memloc (run schema {found!r}; this memloc reads {SCHEMA_VERSION}): "
            f"move it away and recreate it with `{self.command()}`"
        )

    def command(self) -> str:
        from memloc.overrides import command_for  # the override engine knows presets; the store does not

        try:
            return command_for(self.config, str(self.path))
        except Exception:  # a config this memloc cannot read at all
            return f"python -m precompute run --preset <preset> --out {self.path}"


class StageState(NamedTuple):
    """What an unfinished stage saved: partial tables by name, and tensors (maybe none)."""

    tables: dict[str, pd.DataFrame]
    tensors: dict[str, torch.Tensor]


def tables_of(manifest: dict[str, Any]) -> list[str]:
    """The names of the tables a run's manifest lists, sorted."""
    return sorted(rel[len("tables/"):-len(".parquet")] for rel in manifest["files"]
                  if rel.startswith("tables/") and rel.endswith(".parquet"))


def checkpoints_of(manifest: dict[str, Any], variant: str = "plain") -> list[int]:
    """The checkpoint epochs of one of a run's variants that its manifest lists, sorted."""
    prefix = _checkpoint_prefix(variant)
    return sorted(int(r[len(prefix):-len(".safetensors")]) for r in manifest["files"]
                  if r.startswith(prefix) and r[len(prefix):-len(".safetensors")].isdigit())


def _checkpoint_prefix(variant: str) -> str:
    if variant not in _CHECKPOINTS:
        raise ValueError(f"model variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return _CHECKPOINTS[variant]


def _name(kind: str, name: str) -> str:
    """A stage or table name as a file name (an identifier: no path can be smuggled in)."""
    if not name.isidentifier():
        raise ValueError(f"{kind} name must be an identifier, got {name!r}")
    return name


@contextlib.contextmanager
def _flock(directory: Path, holder_kind: str, wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock file of `directory` (created if needed); it records the holder's pid and
    is released when the process ends, however it ends."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            message = f"{directory} is in use by another {holder_kind} (pid {holder})"
            if wait is None:
                raise RunError(f"{message}; wait for it to finish or choose another --out") from None
            wait(f"{message}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _table_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """The directory that holds run directories: `root`, else $MEMLOC_RUNS, else ./runs."""
    return Path(root or os.environ.get("MEMLOC_RUNS") or "runs")


def library_versions() -> dict[str, str]:
    import numpy
    import safetensors

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "safetensors": safetensors.__version__,
    }


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Run:
    """One run directory. Reading needs no lock; writing happens inside `with run.lock():`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._locked = False

    # ------------------------------------------------------------------ manifest
    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        """The manifest, checked for its schema version."""
        file = self.path / MANIFEST
        if not file.is_file():
            raise RunError(f"{self.path} is not a memloc run (no {MANIFEST}); create one with `python -m precompute run`")
        try:
            manifest = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunError(
                f"{file} is not valid JSON (truncated or edited); delete the run directory and run precompute again"
            ) from None
        if not isinstance(manifest, dict):
            raise RunError(f"{file} is not a memloc manifest; delete the run directory and run precompute again")
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise StaleRunError(self.path, manifest.get("schema_version"), manifest.get("config"))
        return manifest

    def create(self, config: dict[str, Any], data_fingerprint: str, seed: int) -> None:
        """Write a fresh manifest (inside the lock) for a new run."""
        self._require_lock()
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "seed": seed,
            "data_fingerprint": data_fingerprint,
            "versions": library_versions(),
            "stages": {},
            "files": {},
        }
        self._write_manifest(manifest)

    def update_config(self, config: dict[str, Any]) -> None:
        """Replace the recorded config (a resumed run may run other stages); a run whose config
        is already that one is not written."""
        if self.manifest()["config"] != config:
            self._update(lambda m: m.__setitem__("config", config))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def _update(self, change) -> dict[str, Any]:
        self._require_lock()
        manifest = self.manifest()
        change(manifest)
        self._write_manifest(manifest)
        return manifest

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self, wait: Callable[[str], None] | None = None) -> Iterator["Run"]:
        """Hold the run's write lock. A second process gets a clear error, or with `wait` (called
        with a message once) waits until the holder is done: a sweep point that a worker of an
        interrupted sweep is still computing."""
        with _flock(self.path, "precompute process", wait):
            self._locked = True
            try:
                yield self
            finally:
                self._locked = False

    def _require_lock(self) -> None:
        if not self._locked:
            raise RuntimeError("writing a run requires `with run.lock():`")

    # ------------------------------------------------------------------ stages
    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest()["stages"].get(name, {})

    def is_complete(self, name: str) -> bool:
        return self.stage(name).get("status") == "complete"

    def update_stage(self, name: str, **info: Any) -> None:
        """Merge `info` into the stage's record (status, seconds, progress, key numbers)."""
        self._update(lambda m: m["stages"].setdefault(name, {}).update(info))

    # ------------------------------------------------------------------ files
    def _put(self, rel: str, data: bytes) -> None:
        atomic_write(self.path / rel, data)
        digest = hashlib.sha256(data).hexdigest()
        self._update(lambda m: m["files"].__setitem__(rel, {"sha256": digest, "bytes": len(data)}))

    def _get(self, rel: str) -> bytes:
        """The bytes of an artifact, verified against the sha256 in the manifest."""
        record = self.manifest()["files"].get(rel)
        file = self.path / rel
        if record is None or not file.is_file():
            raise RunError(f"{file} is missing from run {self.name}; run precompute again to (re)create it")
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise RunError(
                f"{file} does not match the checksum in the manifest (truncated, tampered or replaced); "
                f"delete it and run precompute again on {self.path} to recreate it"
            )
        return data

    def has(self, rel: str) -> bool:
        return rel in self.manifest()["files"] and (self.path / rel).is_file()

    @staticmethod
    def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
        return st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)

    def _get_tensors(self, rel: str, device: str | torch.device) -> dict[str, torch.Tensor]:
        """The tensors of a verified safetensors artifact."""
        try:
            tensors = st_load(self._get(rel))
        except SafetensorError as e:
            raise RunError(f"{self.path / rel} is not a valid safetensors file ({e}); run precompute again") from None
        return {k: v.to(device) for k, v in tensors.items()}

    def _get_table(self, rel: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(io.BytesIO(self._get(rel)))
        except (OSError, ValueError) as e:
            raise RunError(f"{self.path / rel} is not a valid Parquet table ({e}); run precompute again") from None

    # checkpoints -------------------------------------------------------------
    @staticmethod
    def _checkpoint_rel(epoch: int, variant: str) -> str:
        return f"{_checkpoint_prefix(variant)}{epoch:03d}.safetensors"

    def write_checkpoint(self, epoch: int, state: dict[str, torch.Tensor], variant: str = "plain") -> None:
        self._put(self._checkpoint_rel(epoch, variant), self._tensor_bytes(state, {"epoch": str(epoch)}))

    def read_checkpoint(self, epoch: int, device: str | torch.device = "cpu", variant: str = "plain") -> dict[str, torch.Tensor]:
        return self._get_tensors(self._checkpoint_rel(epoch, variant), device)

    def checkpoint_epochs(self, variant: str = "plain") -> list[int]:
        return checkpoints_of(self.manifest(), variant)

    def drop_checkpoints(self, epochs: list[int], variant: str = "plain") -> None:
        """Delete these checkpoints (a checkpoint policy): forgotten by the manifest first, so an
        interruption leaves at worst a file the manifest no longer lists."""
        rels = [self._checkpoint_rel(epoch, variant) for epoch in epochs]

        def forget(m: dict[str, Any]) -> None:
            for rel in rels:
                m["files"].pop(rel, None)

        self._update(forget)
        for rel in rels:
            (self.path / rel).unlink(missing_ok=True)

    # resume state ------------------------------------------------------------
    @staticmethod
    def _state_prefix(stage: str) -> str:
        return f"state/{_name('stage', stage)}/"

    def _state_files(self, manifest: dict[str, Any], stage: str) -> list[str]:
        """The stage's state files the manifest lists, sorted (so pieces in order). Only names of
        the store's own form count, so an edited manifest cannot point the store elsewhere."""
        own = re.compile(re.escape(self._state_prefix(stage)) + r"[A-Za-z_]\w*/\d{6}\.(parquet|safetensors)")
        return sorted(rel for rel in manifest["files"] if own.fullmatch(rel))

    def append_state(self, stage: str, rows: dict[str, pd.DataFrame], tensors: dict[str, torch.Tensor] | None = None,
                     progress: dict[str, Any] | None = None) -> None:
        """Add `rows` to the partial tables of `stage` (and replace its tensors, if given), at once;
        `progress` is merged into the stage's record in the same manifest update.

        Every save writes new files only (`state/<stage>/<table>/<piece>.parquet`, numbered on)
        and then switches the manifest to them in one update, so the cost of a save is that of
        its new rows, and an interruption at any instant leaves the state before or after it
        (the files of an interrupted save are not listed and are overwritten by the next one).
        """
        self._require_lock()
        prefix = self._state_prefix(stage)
        old = self._state_files(self.manifest(), stage)
        piece = 1 + max((int(rel.rsplit("/", 1)[1].split(".")[0]) for rel in old), default=0)
        if _TENSORS in rows:
            raise ValueError(f"{_TENSORS!r} is the name of a state's tensors, not of a table")
        files = {f"{prefix}{_name('table', name)}/{piece:06d}.parquet": _table_bytes(df) for name, df in rows.items()}
        if tensors is not None:
            files[f"{prefix}{_TENSORS}/{piece:06d}.safetensors"] = self._tensor_bytes(tensors)
        for rel, data in files.items():
            atomic_write(self.path / rel, data)

        replaced = [rel for rel in old if rel.startswith(f"{prefix}{_TENSORS}/")] if tensors is not None else []

        def switch(m: dict[str, Any]) -> None:
            for rel in replaced:
                del m["files"][rel]
            for rel, data in files.items():
                m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            m["stages"].setdefault(stage, {}).update(progress or {})

        self._update(switch)
        for rel in replaced:  # names of the store's own form (`_state_files`), inside the run
            (self.path / rel).unlink(missing_ok=True)

    def read_state(self, stage: str, device: str | torch.device = "cpu") -> StageState | None:
        """The resume state of `stage` (every file verified), or None if it has none: each
        partial table with its pieces in the order they were saved, and the latest tensors."""
        files = self._state_files(self.manifest(), stage)
        if not files:
            return None
        prefix = self._state_prefix(stage)
        pieces: dict[str, list[pd.DataFrame]] = {}
        tensors: dict[str, torch.Tensor] = {}
        for rel in files:  # sorted: pieces in order
            name = rel[len(prefix):].split("/")[0]
            if name == _TENSORS:
                tensors = self._get_tensors(rel, device)
            else:
                pieces.setdefault(name, []).append(self._get_table(rel))
        return StageState({name: pd.concat(parts, ignore_index=True) for name, parts in pieces.items()}, tensors)

    def has_state(self, stage: str) -> bool:
        return bool(self._state_files(self.manifest(), stage))

    def drop_state(self, stage: str) -> None:
        """Forget the resume state of `stage` (once the stage is complete, or to start it over)."""
        def forget(m: dict[str, Any]) -> None:
            for rel in self._state_files(m, stage):
                del m["files"][rel]

        self._update(forget)
        shutil.rmtree(self.path / self._state_prefix(stage), ignore_errors=True)
        with contextlib.suppress(OSError):  # `state/` itself goes once no stage has a state
            (self.path / "state").rmdir()

    # labels ------------------------------------------------------------------
    def write_labels(self, true_label: np.ndarray, train_label: np.ndarray, is_noisy: np.ndarray) -> None:
        buf = io.BytesIO()
        np.savez(buf, true_label=true_label.astype(np.int64), train_label=train_label.astype(np.int64), is_noisy=is_noisy.astype(bool))
        self._put(LABELS, buf.getvalue())

    def read_labels(self) -> dict[str, np.ndarray]:
        """{"true_label", "train_label", "is_noisy"} arrays indexed by example id."""
        try:
            with np.load(io.BytesIO(self._get(LABELS)), allow_pickle=False) as z:
                return {k: z[k] for k in ("true_label", "train_label", "is_noisy")}
        except (ValueError, KeyError, OSError) as e:
            raise RunError(f"{self.path / LABELS} is not a valid labels file ({e}); run precompute again") from None

    # tables ------------------------------------------------------------------
    @staticmethod
    def _table_rel(name: str) -> str:
        return f"tables/{_name('table', name)}.parquet"

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        self._put(self._table_rel(name), _table_bytes(df))

    def read_table(self, name: str) -> pd.DataFrame:
        return self._get_table(self._table_rel(name))

    def has_table(self, name: str) -> bool:
        return self.has(self._table_rel(name))

    def tables(self) -> list[str]:
        return tables_of(self.manifest())


class Sweep:
    """One sweep directory: a run directory per point, the record of the points, their logs and
    the summary over them.

    ```
    runs/<sweep>/
      sweep.json                 the grid and, per point, its overrides, status, timing, log, error
      <point>/                   an ordinary run directory per point (`noise_frac=0.2,seed=1`)
      logs/<point>.log           everything the point printed, its traceback if it failed
      summary.parquet            key numbers per point and per setting (`memloc.summary`)
    ```

    Only the sweep's driver writes `sweep.json` and the summary (inside `with sweep.lock():`);
    the points' runs are written by the workers, each under its own run lock.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._locked = False

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / SWEEP).is_file()

    @contextlib.contextmanager
    def lock(self) -> Iterator["Sweep"]:
        """Hold the sweep's lock; a second sweep on the same directory gets a clear error."""
        with _flock(self.path, "sweep"):
            self._locked = True
            try:
                yield self
            finally:
                self._locked = False

    def record(self) -> dict[str, Any]:
        """The sweep's record (`sweep.json`), checked for its schema version."""
        file = self.path / SWEEP
        if not file.is_file():
            raise RunError(f"{self.path} is not a memloc sweep (no {SWEEP}); make one with `python -m precompute sweep`")
        try:
            record = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunError(f"{file} is not valid JSON (truncated or edited); run the sweep again into a new --out") from None
        if not isinstance(record, dict) or not isinstance(record.get("points"), dict):
            raise RunError(f"{file} is not a memloc sweep record; run the sweep again into a new --out")
        if record.get("schema_version") != SCHEMA_VERSION:
            raise RunError(f"{self.path} was written by another memloc (sweep schema {record.get('schema_version')!r}; "
                           f"this memloc reads {SCHEMA_VERSION}); run the sweep again into a new --out")
        return record

    def write_record(self, record: dict[str, Any]) -> None:
        if not self._locked:
            raise RuntimeError("writing a sweep requires `with sweep.lock():`")
        atomic_write(self.path / SWEEP, json.dumps({**record, "schema_version": SCHEMA_VERSION}, indent=2).encode())

    def run(self, point: str) -> Run:
        """The run directory of `point` (a key of the record's points)."""
        return Run(self.path / _point_name(point))

    def log_file(self, point: str) -> Path:
        return self.path / "logs" / f"{_point_name(point)}.log"

    def log_rel(self, point: str) -> str:
        return self.log_file(point).relative_to(self.path).as_posix()

    def write_summary(self, table: pd.DataFrame) -> None:
        """Write `summary.parquet` and record its sha256 in the record."""
        data = _table_bytes(table)
        atomic_write(self.path / SUMMARY, data)
        record = self.record()
        record["summary"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        self.write_record(record)

    def has_summary(self) -> bool:
        return "summary" in self.record() and (self.path / SUMMARY).is_file()

    def read_summary(self) -> pd.DataFrame:
        """The summary, verified against the sha256 in the record."""
        file, recorded = self.path / SUMMARY, self.record().get("summary")
        if recorded is None or not file.is_file():
            raise RunError(f"sweep {self.name} has no summary yet; make it with `python -m precompute summarize {self.path}`")
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() != recorded["sha256"]:
            raise RunError(f"{file} does not match the checksum in {SWEEP} (truncated, tampered or replaced); "
                           f"make it again with `python -m precompute summarize {self.path}`")
        try:
            return pd.read_parquet(io.BytesIO(data))
        except (OSError, ValueError) as e:
            raise RunError(f"{file} is not a valid Parquet table ({e}); "
                           f"make it again with `python -m precompute summarize {self.path}`") from None

    def runs(self) -> list[Run]:
        """The run directories of the sweep's points that exist, in the record's order."""
        return [run for run in (self.run(p) for p in self.record()["points"]) if run.exists()]

    def status_counts(self) -> dict[str, int]:
        """How many points are pending, running, complete and failed."""
        statuses = [point.get("status", "pending") for point in self.record()["points"].values()]
        return {status: statuses.count(status) for status in POINT_STATUSES}


#: The states of a sweep point: not started, handed to a worker, done, raised an error.
POINT_STATUSES = ("pending", "running", "complete", "failed")


def _point_name(point: str) -> str:
    """A point's key as a directory name: one path component of plain characters."""
    if not point or point in (".", "..") or not re.fullmatch(r"[\w.,=+\-]+", point):
        raise ValueError(f"sweep point name must be one path component of letters, digits and . , = + - _, got {point!r}")
    return point


def list_sweeps(root: str | os.PathLike | None = None) -> list[Sweep]:
    """Sweep directories directly under the runs root, by name."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return [Sweep(p) for p in sorted(base.iterdir()) if (p / SWEEP).is_file()]


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Run directories directly under the runs root, by name (a sweep's points: `Sweep.runs`)."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return [Run(p) for p in sorted(base.iterdir()) if (p / MANIFEST).is_file()]
