"""Every stage of `precompute run` at the paper's setting: seconds, peak memory and disk per stage.

    python benchmarks/paper_scale.py [--device cuda] [--scale 1.0] [--epochs 50] [--data-root DIR]
                                     [--synthetic] [--keep DIR] [--set KEY=VALUE ...]

The preset `paper-cifar10-resnet9` (ResNet-9 at full width, 50 epochs, batch 512, 10% label
noise: 5,000 of 50,000 training labels flipped), on CIFAR-10 when the data root holds its binary
release (`memloc.data` reads it), else on synthetic CIFAR-shaped data written in that same format
into a temporary data root: 50,000 training and 10,000 test images of 3x32x32 bytes in 10
classes, seeded, each image its class's random pattern averaged with its own random noise (so
clean labels can be learned and flipped ones must be memorized, as on real data). Synthetic data
is only for timing: the output says so, and the stages whose work depends on what the model learned
(flip: units zeroed until an example flips; retrain: epochs until clean accuracy stays at 100%)
take as long as they take on that data, not as on CIFAR-10.

Each stage runs as its own `python -m precompute run --set 'stages=["<stage>"]'` process on one
run directory, in the order of `memloc.config.STAGES`; the run resumes, so a stage reads what the
ones before it wrote, exactly as a user's run does. That is the real pipeline, with no code path
of its own in memloc. Per stage:

- seconds: the stage's `seconds` in the run's manifest (`memloc.store.Run.stage`), and the whole
  process's wall time (start of Python and torch, loading the data, checking the run's files);
- peak host memory: the process's maximum resident set (`ru_maxrss` from `os.wait4`);
- peak device memory: `torch.cuda.max_memory_allocated` (and `max_memory_reserved`, what the
  caching allocator held) of the process, reported by it when `precompute.cli.main` returns.
  The process is this script with `--child`, which calls `precompute.cli.main` with the same
  arguments as `python -m precompute run` and then writes those numbers to a JSON file. One
  process per stage keeps every peak the stage's own: running the stages in this process would
  leave each stage's allocator caches, heap and imports in the next stage's peaks;
- disk: growth of the run directory, and the bytes the process wrote to storage
  (`write_bytes` of /proc/self/io: temporary and progress files included).

`--scale s` takes a seeded subset of s x 50,000 training and s x 10,000 test examples
(`data.train_size`, `data.test_size`) and, below 1, scales the flipping stage with it (targets,
reference batch, collateral-accuracy subsets). `--epochs E` trains E epochs with the learning
rate peaking at the same share of them (10/50), and retrains at most 20 E / 50 epochs per group.
So on 2 CPU cores `--scale 0.002 --epochs 2` runs every stage in about 40 s and `--scale 0.01
--epochs 2` in about 2 minutes (BENCHMARKS.md, "Paper scale"). `--set KEY=VALUE` adds any other
override. The exact `precompute run` command of a stage is printed; the run's config is
its manifest (`--keep DIR` keeps the run and the data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESET = "paper-cifar10-resnet9"
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # CIFAR-10's splits
PAPER_EPOCHS, PAPER_PEAK = 50, 10.0  # train.epochs, train.peak_epoch of the preset
PAPER_RETRAIN_EPOCHS = 20  # retrain.max_epochs
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BATCHES = 5  # data_batch_1.bin .. data_batch_5.bin
IMAGE_BYTES = 3 * 32 * 32  # one record: a label byte, then 1024 red, 1024 green, 1024 blue values


# ---------------------------------------------------------------------------------------------
# Synthetic CIFAR-10, in the binary release's format (what memloc.data reads).


def write_synthetic_cifar10(root: Path, n_train: int = TRAIN_SIZE, n_test: int = TEST_SIZE, seed: int = 0) -> Path:
    """Write a synthetic CIFAR-10 under the data root `root`: `cifar-10-batches-bin/` with
    data_batch_1..5.bin (`n_train` records in all), test_batch.bin (`n_test`) and batches.meta.txt.

    A record is a label byte (uniform in 0..9) and 3,072 image bytes: the mean of its class's
    random pattern and the image's own random noise. Seeded: the same files on every machine.
    Returns the folder.
    """
    from memloc.data import CIFAR10_FOLDER

    if n_train < CIFAR10_BATCHES or n_test < 1:
        raise ValueError(f"need at least {CIFAR10_BATCHES} training examples (one per batch file) and 1 test example")
    rng = np.random.default_rng(seed)
    patterns = rng.integers(0, 256, (len(CIFAR10_CLASSES), IMAGE_BYTES), dtype=np.uint16)  # (K, 3072)
    folder = root / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [len(part) for part in np.array_split(np.arange(n_train), CIFAR10_BATCHES)]
    for name, n in [*((f"data_batch_{i + 1}.bin", n) for i, n in enumerate(sizes)), ("test_batch.bin", n_test)]:
        labels = rng.integers(0, len(CIFAR10_CLASSES), n)
        noise = rng.integers(0, 256, (n, IMAGE_BYTES), dtype=np.uint16)
        records = np.empty((n, 1 + IMAGE_BYTES), dtype=np.uint8)  # (N, 3073)
        records[:, 0] = labels
        records[:, 1:] = (patterns[labels] + noise) // 2
        records.tofile(folder / name)
    (folder / "batches.meta.txt").write_text("".join(f"{c}\n" for c in CIFAR10_CLASSES) + "\n", encoding="ascii")
    return folder


def find_cifar10(root: Path) -> str | None:
    """None if memloc reads CIFAR-10 under `root`, else why not."""
    from memloc.data import DataError, load

    try:
        load("cifar10", root)
    except DataError as e:
        return str(e).split(". Get it in one of these ways")[0]
    return None


# ---------------------------------------------------------------------------------------------
# One stage = one `precompute run` process.


def child(report: str, argv: list[str]) -> int:
    """`python -m precompute run` with `argv`, then its CUDA peaks, GPU and write volume to `report`."""
    import torch

    from precompute.cli import main as precompute_main

    rc = precompute_main(argv)
    numbers: dict = {"rc": rc, "device_allocated": None, "device_reserved": None, "gpu": None}
    if torch.cuda.is_initialized():  # the largest over the GPUs (the stage uses one: --device cuda or cuda:N)
        gpus = range(torch.cuda.device_count())
        numbers.update(device_allocated=max(torch.cuda.max_memory_allocated(i) for i in gpus),
                       device_reserved=max(torch.cuda.max_memory_reserved(i) for i in gpus),
                       gpu=torch.cuda.get_device_name(max(gpus, key=torch.cuda.max_memory_allocated)))
    io = Path("/proc/self/io")
    if io.is_file():
        fields = dict(line.split(": ") for line in io.read_text().splitlines())
        numbers["write_bytes"] = int(fields["write_bytes"])
    Path(report).write_text(json.dumps(numbers))
    return rc


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def run_stage(stage: str, argv: list[str], out: Path, log: Path) -> dict:
    """Run one stage in its own process; its numbers (seconds, memory, disk)."""
    from memloc.store import Run

    report = log.with_suffix(".json")
    before = dir_bytes(out)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(report), *argv], stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        sys.stdout.write(log.read_text()[-4000:])
        raise SystemExit(f"stage {stage} failed (exit {rc}); its output is above, all of it in {log}")
    numbers = json.loads(report.read_text())
    return {
        "stage": stage,
        "seconds": Run(out).stage(stage)["seconds"],
        "process": wall,
        "host": usage.ru_maxrss * 1024,  # kilobytes on Linux
        "device_allocated": numbers["device_allocated"],
        "device_reserved": numbers["device_reserved"],
        "gpu": numbers["gpu"],
        "disk": dir_bytes(out) - before,
        "written": numbers.get("write_bytes"),
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def overrides(scale: float, epochs: int | None) -> list[str]:
    """The `--set` overrides of the preset that `--scale` and `--epochs` ask for (none at 1.0 and 50)."""
    sets = []
    if scale < 1:
        sets += [f"data.train_size={max(CIFAR10_BATCHES, round(TRAIN_SIZE * scale))}",
                 f"data.test_size={max(1, round(TEST_SIZE * scale))}"]
        from memloc.flipping import FlipSettings

        flip = FlipSettings()
        sets += [f"flip.{key}={max(lo, round(getattr(flip, key) * scale))}"
                 for key, lo in (("n_noisy", 1), ("n_clean", 1), ("batch_size", 2), ("eval_train", 1), ("eval_test", 1))]
    if epochs is not None and epochs != PAPER_EPOCHS:
        retrain = max(1, round(PAPER_RETRAIN_EPOCHS * epochs / PAPER_EPOCHS))
        sets += [f"train.epochs={epochs}", f"train.peak_epoch={PAPER_PEAK * epochs / PAPER_EPOCHS:g}",
                 f"retrain.max_epochs={retrain}", f"retrain.peak_epoch={retrain / 2:g}"]
    return sets


def mib(n: float | None, digits: int = 0) -> str:
    return "-" if n is None else f"{n / 2**20:,.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = ["| stage | seconds (stage) | seconds (process) | peak host MiB | peak device MiB (allocated / reserved) | "
             "disk MiB (run grew) | written MiB |", "|---|---|---|---|---|---|---|"]

    def device(a, r):
        return "-" if a is None else f"{mib(a)} / {mib(r)}"

    for r in rows:
        lines.append(f"| {r['stage']} | {r['seconds']:,.1f} | {r['process']:,.1f} | {mib(r['host'])} | "
                     f"{device(r['device_allocated'], r['device_reserved'])} | {mib(r['disk'], 1)} | {mib(r['written'], 1)} |")
    allocated = [r["device_allocated"] for r in rows if r["device_allocated"] is not None]
    reserved = [r["device_reserved"] for r in rows if r["device_reserved"] is not None]
    written = [r["written"] for r in rows if r["written"] is not None]
    lines.append(f"| **all** (peaks: the largest) | {sum(r['seconds'] for r in rows):,.1f} | "
                 f"{sum(r['process'] for r in rows):,.1f} | {mib(max(r['host'] for r in rows))} | "
                 f"{device(max(allocated) if allocated else None, max(reserved) if reserved else None)} | "
                 f"{mib(sum(r['disk'] for r in rows), 1)} | {mib(sum(written), 1) if written else '-'} |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--scale", type=float, default=1.0, help="share of CIFAR-10's 50,000 / 10,000 examples, in (0, 1]")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: the preset's {PAPER_EPOCHS})")
    p.add_argument("--data-root", help="where CIFAR-10's binary release is (default: $MEMLOC_DATA or ./data)")
    p.add_argument("--synthetic", action="store_true", help="use synthetic data even where CIFAR-10 is found")
    p.add_argument("--keep", help="write the run (and synthetic data) under this directory and keep it")
    p.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE", help="another override")
    args = p.parse_args()
    if not 0 < args.scale <= 1:
        p.error("--scale must be in (0, 1]")

    import torch

    from memloc.config import STAGES
    from memloc.data import data_root

    load_before = os.getloadavg()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="memloc-paper-scale-"))
    base.mkdir(parents=True, exist_ok=True)
    root = data_root(args.data_root)
    missing = "--synthetic given" if args.synthetic else find_cifar10(root)
    if missing:
        root = base / "data"
        t0 = time.perf_counter()
        write_synthetic_cifar10(root)
        data_note = (f"SYNTHETIC CIFAR-shaped data (3x32x32, {TRAIN_SIZE:,} train, {TEST_SIZE:,} test, 10 classes, "
                     f"written to {root} in {time.perf_counter() - t0:.1f} s), ONLY FOR TIMING: {missing}")
    else:
        data_note = f"CIFAR-10 from {root}"
    out = base / "run"
    sets = overrides(args.scale, args.epochs) + args.extra
    argv = ["run", "--preset", PRESET, "--device", args.device, "--data-root", str(root), "--out", str(out),
            *(a for s in sets for a in ("--set", s))]
    print(f"data: {data_note}")
    print(f"preset {PRESET}, overrides: {' '.join(sets) or 'none (the paper setting)'}")
    print("per stage: python -m precompute " + shlex.join(argv) + " --set 'stages=[\"<stage>\"]'", flush=True)

    rows = []
    for stage in STAGES:
        rows.append(run_stage(stage, [*argv, "--set", f'stages=["{stage}"]'], out, base / f"{stage}.log"))
        r = rows[-1]
        print(f"  {stage}: {r['seconds']:.1f} s (process {r['process']:.1f} s, {r['cpu']:.1f} CPU s), host {mib(r['host'])} MiB, "
              f"device {mib(r['device_allocated'])} MiB, disk +{mib(r['disk'], 1)} MiB", flush=True)

    gpu = next((r["gpu"] for r in rows if r["gpu"]), None)
    cores = len(os.sched_getaffinity(0))
    print()
    print(f"data: {data_note}")
    print(f"machine: {cpu_model()}, {cores} cores" + (f", GPU {gpu}" if gpu else ", no GPU used")
          + f"; torch {torch.__version__}, python {platform.python_version()}")
    print(f"load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} after; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("command: python benchmarks/paper_scale.py " + shlex.join(sys.argv[1:]))
    print()
    print(table(rows))
    if args.keep:
        print(f"\nrun and data kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        raise SystemExit(child(sys.argv[2], sys.argv[3:]))
    raise SystemExit(main())
