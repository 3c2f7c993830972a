"""The run store: the only module that knows the file names of a run directory.

```
runs/<run>/
  manifest.json        schema_version, resolved config, library versions, seed, data
                       fingerprint, per-stage status and timings, sha256 of every artifact
  labels.npz           true label, training label, is_noisy per training example
  checkpoints/epoch_NNN.safetensors     model state after epoch NNN (000 = initialization)
  checkpoints/<model>/epoch_NNN.safetensors   the same for a second model of the run (`dropout`)
  state/<name>.safetensors              resume state of an unfinished stage
  tables/<name>.parquet                 one table per analysis
```

Nothing here is pickled: weights are safetensors, arrays an npz read with
`allow_pickle=False`, tables Parquet, metadata JSON. Every write goes to a temporary file that
is renamed into place, and the manifest records each file's sha256, so a truncated, tampered or
swapped file is refused with a clear `RunError` instead of being half-read. A stage is marked
complete only after its files are in place. One process at a time may write a run (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LABELS = "labels.npz"
LOCK = ".lock"


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


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


def _atomic_write(path: Path, data: bytes) -> None:
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
        if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
            found = manifest.get("schema_version") if isinstance(manifest, dict) else None
            raise RunError(
                f"{self.path} has run schema version {found!r}, this memloc reads version {SCHEMA_VERSION}; "
                "re-run precompute into a new directory"
            )
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
        """Replace the recorded config (the runner adds settings of stages a run predates)."""
        self._update(lambda m: m.__setitem__("config", config))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _atomic_write(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def _update(self, change) -> dict[str, Any]:
        self._require_lock()
        manifest = self.manifest()
        change(manifest)
        self._write_manifest(manifest)
        return manifest

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator["Run"]:
        """Hold the run's write lock; a second process gets a clear error instead of waiting."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunError(
                    f"{self.path} is in use by another precompute process (pid {holder}); "
                    "wait for it to finish or choose another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self._locked = True
            yield self
        finally:
            self._locked = False
            os.close(fd)  # closing the descriptor releases the flock

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
        _atomic_write(self.path / rel, data)
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

    def forget(self, rel_prefix: str) -> None:
        """Drop artifacts under `rel_prefix` (e.g. a stage's resume state once it is complete)."""

        def drop(m):
            for rel in [r for r in m["files"] if r.startswith(rel_prefix)]:
                del m["files"][rel]
                with contextlib.suppress(FileNotFoundError):
                    (self.path / rel).unlink()

        self._update(drop)

    # tensors (checkpoints and resume state) ---------------------------------
    def _put_tensors(self, rel: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
        flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        self._put(rel, st_save(flat, metadata=metadata))

    def _get_tensors(self, rel: str, device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tensors of a verified safetensors artifact, and its string metadata."""
        data = self._get(rel)
        try:
            tensors = st_load(data)
        except SafetensorError as e:
            raise RunError(f"{self.path / rel} is not a valid safetensors file ({e}); run precompute again") from None
        header_len = int.from_bytes(data[:8], "little")  # safetensors: u64 header size, then a JSON header
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        return {k: v.to(device) for k, v in tensors.items()}, metadata

    @staticmethod
    def _checkpoint_prefix(model: str | None) -> str:
        """`checkpoints/epoch_` for the run's model; `checkpoints/<model>/epoch_` for a second
        model trained in the same run (e.g. `dropout`, the example-tied dropout model)."""
        if model is None:
            return "checkpoints/epoch_"
        if not model.isidentifier():
            raise ValueError(f"checkpoint model name must be an identifier, got {model!r}")
        return f"checkpoints/{model}/epoch_"

    @classmethod
    def _checkpoint_rel(cls, epoch: int, model: str | None = None) -> str:
        return f"{cls._checkpoint_prefix(model)}{epoch:03d}.safetensors"

    def write_checkpoint(self, epoch: int, state: dict[str, torch.Tensor], model: str | None = None) -> None:
        self._put_tensors(self._checkpoint_rel(epoch, model), state, {"epoch": str(epoch)})

    def read_checkpoint(self, epoch: int, device: str | torch.device = "cpu", model: str | None = None) -> dict[str, torch.Tensor]:
        return self._get_tensors(self._checkpoint_rel(epoch, model), device)[0]

    def checkpoint_epochs(self, model: str | None = None) -> list[int]:
        prefix = self._checkpoint_prefix(model)
        files = self.manifest()["files"]
        return sorted(int(r[len(prefix) : -len(".safetensors")]) for r in files if r.startswith(prefix))

    def write_state(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        self._put_tensors(f"state/{name}.safetensors", tensors, metadata)

    def read_state(self, name: str, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return self._get_tensors(f"state/{name}.safetensors", device)

    def has_state(self, name: str) -> bool:
        return self.has(f"state/{name}.safetensors")

    def drop_state(self, name: str) -> None:
        self.forget(f"state/{name}.safetensors")

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
        return f"tables/{name}.parquet"

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        self._put(self._table_rel(name), buf.getvalue())

    def read_table(self, name: str) -> pd.DataFrame:
        rel = self._table_rel(name)
        try:
            return pd.read_parquet(io.BytesIO(self._get(rel)))
        except (OSError, ValueError) as e:
            raise RunError(f"{self.path / rel} is not a valid Parquet table ({e}); run precompute again") from None

    def has_table(self, name: str) -> bool:
        return self.has(self._table_rel(name))


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Run directories directly under the runs root, by name."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return [Run(p) for p in sorted(base.iterdir()) if (p / MANIFEST).is_file()]
