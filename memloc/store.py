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
one, never a mix. A file written again under its old name (a table of a stage that runs again)
is first announced in the manifest (its `pending` sha256), then renamed into place, then
recorded: either content is accepted in between, so a kill at any instant cannot block a
resume. A run written by another schema version is refused with the command that recreates
it (`StaleRunError`).

The manifest is checked as a schema when read (`RunError` naming the key), and it can only
list names of the store's own forms (`_OWN_FILES`): no `..`, no absolute path. Every file the
store reads, writes or deletes is inside its run directory, not behind a symbolic link.
`Run.verify` checks every listed file against the manifest (size, and sha256 with
`checksums=True`), for `precompute verify`, `precompute list`, the runner before it skips a
stage, and the explorer's run health.
"""

from __future__ import annotations

import contextlib
import errno
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
from safetensors import SafetensorError

from memloc.lazy import lazy

pd = lazy("pandas")
torch = lazy("torch")
safetensors_io = lazy("safetensors.torch")  # safetensors, never pickle

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
#: The only names a manifest may list (relative to the run directory).
_OWN_FILES = re.compile(
    r"labels\.npz"
    r"|checkpoints/(dropout/)?epoch_\d{3,}\.safetensors"
    r"|tables/[A-Za-z_]\w*\.parquet"
    r"|state/[A-Za-z_]\w*/[A-Za-z_]\w*/\d{6}\.(parquet|safetensors)",
    re.ASCII,
)
#: The manifest's keys and their types (`Run.manifest` refuses any other shape).
_MANIFEST_KEYS = {"schema_version": int, "created": str, "config": dict, "seed": int, "data_fingerprint": str,
                  "versions": dict, "stages": dict, "files": dict}
_SHA256 = re.compile(r"[0-9a-f]{64}")


class RunError(Exception):
    """A run directory that cannot be used as asked; the message says why and what to do."""


class DiskFullError(RunError):
    """The device of a run directory is full; what is on disk stays resumable."""


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
        return self.command_for(self.path, self.config)

    @staticmethod
    def command_for(path: Path, config: Any) -> str:
        """The command that recreates a run of `config` at `path` (a generic one for a config
        this memloc cannot read)."""
        from memloc.overrides import command_for  # the override engine knows presets; the store does not

        try:
            return command_for(config, str(path))
        except Exception:  # a config this memloc cannot read at all
            return f"python -m precompute run --preset <preset> --out {path}"


class StageState(NamedTuple):
    """What an unfinished stage saved: partial tables by name, and tensors (maybe none)."""

    tables: dict[str, pd.DataFrame]
    tensors: dict[str, torch.Tensor]


class Problem(NamedTuple):
    """Something wrong with one file of a run (`Run.verify`): its name in the run, what is
    wrong, and what the file is: `kind` manifest, labels, checkpoint (`name` its variant),
    table (`name` the table) or state (`name` the stage)."""

    rel: str
    what: str
    kind: str
    name: str = ""


def _problem(rel: str, what: str) -> Problem:
    """A `Problem` of the file `rel`, with what kind of file it is."""
    parts = rel.split("/")
    if rel == MANIFEST or rel == LABELS:
        return Problem(rel, what, rel.split(".")[0])
    if parts[0] == "checkpoints":
        return Problem(rel, what, "checkpoint", "dropout" if parts[1] == "dropout" else "plain")
    if parts[0] == "tables":
        return Problem(rel, what, "table", parts[1][: -len(".parquet")])
    return Problem(rel, what, "state", parts[1])


def _record_problem(record: Any) -> str | None:
    """What is wrong with one `files` entry of a manifest (None when nothing)."""
    def digest_problem(entry: Any) -> str | None:
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
            return "needs a sha256 (64 hex digits)"
        size = entry.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return "needs a size in bytes (an integer >= 0)"
        return None

    if not isinstance(record, dict) or set(record) - {"sha256", "bytes", "pending"}:
        return "must be {sha256, bytes[, pending]}"
    if "pending" in record and digest_problem(record["pending"]):
        return "pending " + digest_problem(record["pending"])
    return digest_problem(record)


def _manifest_problem(manifest: Any) -> str | None:
    """The first violation of the manifest schema, naming the key (None when it is valid)."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    for key, kind in _MANIFEST_KEYS.items():
        if key not in manifest:
            return f"has no {key!r}"
        value = manifest[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key!r} must be a JSON {'object' if kind is dict else kind.__name__}, got {type(value).__name__}"
    for name, stage in manifest["stages"].items():
        if not isinstance(stage, dict):
            return f"stages[{name!r}] must be a JSON object"
        if not isinstance(stage.get("status", ""), str):
            return f"stages[{name!r}].status must be a string"
    for rel, record in manifest["files"].items():
        if not _OWN_FILES.fullmatch(rel):
            return f"files lists {rel!r}, which is not a file name of a memloc run"
        problem = _record_problem(record)
        if problem:
            return f"files[{rel!r}] {problem}"
    return None


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


def _entries(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The contents a manifest entry accepts: the recorded one and, during a write, the pending one."""
    return [r for r in (record, record.get("pending")) if r and "sha256" in r]


def _accepted(record: dict[str, Any]) -> set[str]:
    return {r["sha256"] for r in _entries(record)}


def _stamp(files: list[Path]) -> tuple[int, ...]:
    """The modification time and size of each file (-1 for one that is not there)."""
    stamps: list[int] = []
    for file in files:
        try:
            info = file.stat()
            stamps += [info.st_mtime_ns, info.st_size]
        except OSError:
            stamps += [-1, -1]
    return tuple(stamps)


def _reached(point: str, rel: str) -> None:
    """A fault-injection point: `announced` (a rewrite is in the manifest, its file not yet
    renamed) and `renamed` (the file is in place, the manifest not yet updated). Does nothing;
    the reliability tests replace it to stop the process exactly there."""


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
    """Write `data` to `path` via a temporary file in the same directory and a rename. A full
    device is a `DiskFullError` (the old file, if any, is untouched)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        _raise_full(e, path, data)
        raise
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            _raise_full(e, path, data)
        raise


def _raise_full(error: OSError, path: Path, data: bytes) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(f"no space left on the device of {path.parent} (writing {path.name}, "
                            f"{len(data) / 2**20:.1f} MiB); free space there and run the same command again: "
                            "what is on disk stays valid and resumes") from None


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
        problem = _manifest_problem(manifest)
        if problem:
            raise RunError(f"{file} {problem} (edited or written by something else); move the run directory away "
                           f"and recreate it with `{StaleRunError.command_for(self.path, manifest.get('config'))}`")
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
    def _file(self, rel: str) -> Path:
        """The path of the run's file `rel`, which must be a name of the store's own forms and
        lie inside the run directory (not behind a symbolic link)."""
        if not _OWN_FILES.fullmatch(rel):
            raise RunError(f"{rel!r} is not a file name of a memloc run")
        file = self.path / rel
        if file.is_symlink() or not file.parent.resolve().is_relative_to(self.path.resolve()):
            raise RunError(f"{file} leads out of run {self.name} (a symbolic link); remove the link and run "
                           f"`python -m precompute verify {self.path}`")
        return file

    def _put(self, rel: str, data: bytes) -> None:
        """Write the artifact `rel` and record its sha256. A file the manifest already lists is
        announced first (`pending`), so a kill between the rename and the record leaves a
        content the manifest accepts; a new one is recorded after its rename (until then it is
        not part of the run)."""
        file = self._file(rel)
        entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if rel in self.manifest()["files"]:
            self._update(lambda m: m["files"][rel].__setitem__("pending", entry))
        _reached("announced", rel)
        atomic_write(file, data)
        _reached("renamed", rel)
        self._update(lambda m: m["files"].__setitem__(rel, entry))

    def _get(self, rel: str) -> bytes:
        """The bytes of an artifact, verified against the sha256 in the manifest."""
        record = self.manifest()["files"].get(rel)
        file = self._file(rel)
        if record is None or not file.is_file():
            raise RunError(f"{file} is missing from run {self.name}; run `{self.heal_command()}` to recreate it")
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() not in _accepted(record):
            raise RunError(
                f"{file} does not match the checksum in the manifest (truncated, tampered or replaced); "
                f"run `{self.heal_command()}` to recreate it"
            )
        return data

    def heal_command(self) -> str:
        """The command that recreates a run's missing or damaged files: the run command of its
        config (`precompute run` checks what it skips)."""
        try:
            config = self.manifest()["config"]
        except RunError:
            config = None
        return StaleRunError.command_for(self.path, config)

    def has(self, rel: str) -> bool:
        return rel in self.manifest()["files"] and self._file(rel).is_file()

    def forget(self, problems: list[Problem]) -> None:
        """Take damaged files out of the manifest (and the resume states they belong to) and
        remove links out of the run, so the stages that write these files write them again."""
        files = [p.rel for p in problems if p.kind in ("labels", "checkpoint", "table")]
        self._update(lambda m: [m["files"].pop(rel, None) for rel in files])
        for problem in problems:
            self._unlink_link(problem.rel)
        for stage in sorted({p.name for p in problems if p.kind == "state"}):
            self.drop_state(stage)

    def _unlink_link(self, rel: str) -> None:
        """Remove the first symbolic link on the way to `rel` inside the run (the link only,
        never what it points to), so the file can be written in the run again."""
        path = self.path
        for part in rel.split("/"):
            path = path / part
            if path.is_symlink():
                path.unlink()
                return
            if not path.is_dir():
                return

    def verify(self, checksums: bool = True) -> list[Problem]:
        """What is wrong with the files the manifest lists: missing, behind a link, of another
        size, or (with `checksums`) of another sha256. An unreadable manifest is one problem."""
        try:
            files = self.manifest()["files"]
        except RunError as e:
            return [_problem(MANIFEST, str(e))]
        problems = []
        if LABELS not in files:
            problems.append(_problem(LABELS, "not listed in the manifest"))
        for rel, record in sorted(files.items()):
            try:
                file = self._file(rel)
            except RunError:
                problems.append(_problem(rel, "leads out of the run (a symbolic link)"))
                continue
            if not file.is_file():
                problems.append(_problem(rel, "missing"))
            elif file.stat().st_size not in {r["bytes"] for r in _entries(record)}:
                problems.append(_problem(rel, f"{file.stat().st_size} bytes, the manifest says {record['bytes']}"))
            elif checksums and hashlib.sha256(file.read_bytes()).hexdigest() not in _accepted(record):
                problems.append(_problem(rel, "does not match its sha256 (tampered or replaced)"))
        return problems

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever the manifest or a file it lists changes on disk (a cache key)."""
        return _stamp([self.path / MANIFEST, *(self.path / rel for rel in self._listed())])

    def _listed(self) -> list[str]:
        try:
            return sorted(self.manifest()["files"])
        except RunError:
            return []

    @staticmethod
    def _tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
        return safetensors_io.save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)

    def _get_tensors(self, rel: str, device: str | torch.device) -> dict[str, torch.Tensor]:
        """The tensors of a verified safetensors artifact."""
        try:
            tensors = safetensors_io.load(self._get(rel))
        except SafetensorError as e:
            raise RunError(f"{self.path / rel} is not a valid safetensors file ({e}); "
                           f"run `{self.heal_command()}` to recreate it") from None
        return {k: v.to(device) for k, v in tensors.items()}

    def _get_table(self, rel: str) -> pd.DataFrame:
        try:
            return pd.read_parquet(io.BytesIO(self._get(rel)))
        except (OSError, ValueError) as e:
            raise RunError(f"{self.path / rel} is not a valid Parquet table ({e}); "
                           f"run `{self.heal_command()}` to recreate it") from None

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
            self._file(rel).unlink(missing_ok=True)

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
            atomic_write(self._file(rel), data)

        replaced = [rel for rel in old if rel.startswith(f"{prefix}{_TENSORS}/")] if tensors is not None else []

        def switch(m: dict[str, Any]) -> None:
            for rel in replaced:
                del m["files"][rel]
            for rel, data in files.items():
                m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            m["stages"].setdefault(stage, {}).update(progress or {})

        self._update(switch)
        for rel in replaced:
            self._file(rel).unlink(missing_ok=True)

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
        folder = self.path / self._state_prefix(stage)
        if not folder.is_symlink() and folder.resolve().is_relative_to(self.path.resolve()):
            shutil.rmtree(folder, ignore_errors=True)
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
            raise RunError(f"{self.path / LABELS} is not a valid labels file ({e}); "
                           f"run `{self.heal_command()}` to recreate it") from None

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

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever the record or the summary changes on disk (a cache key)."""
        return _stamp([self.path / SWEEP, self.path / SUMMARY])

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
        return [run for run in (self.run(p) for p in self.record()["points"]) if run.exists() and inside(run.path, self.path)]

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


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, links followed, is a directory directly in `root`: the one rule by which
    runs and sweeps are listed and opened (a link out of the runs root is neither)."""
    return path.resolve().parent == root.resolve()


def list_sweeps(root: str | os.PathLike | None = None) -> list[Sweep]:
    """Sweep directories directly under the runs root, by name."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return [Sweep(p) for p in sorted(base.iterdir()) if (p / SWEEP).is_file() and inside(p, base)]


def list_runs(root: str | os.PathLike | None = None) -> list[Run]:
    """Run directories directly under the runs root, by name (a sweep's points: `Sweep.runs`)."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    return [Run(p) for p in sorted(base.iterdir()) if (p / MANIFEST).is_file() and inside(p, base)]
