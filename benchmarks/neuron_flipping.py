"""Greedy flipping (PAPER.md section 4): the batched fast path against the naive reference.

In one process, on the same model, data and examples:

- fast: `memloc.flipping.flip_examples` (mask gradients, many targets at once, finished targets
  dropped), timed over the whole set of examples;
- reference: `memloc.flipping_reference.reference_flip` (a model copy per example, weight
  gradients, weights zeroed), one example after the other;
- optionally (`--single`) the fast path one target at a time (`targets_per_step=1`), which
  shows what batching targets adds (large on a GPU, little on a CPU).

Prints examples per second each way, the ratio, and whether every example got the identical
unit sequence both ways. Each repeat runs all paths in turn, so a busy machine slows them
alike; times are medians over `--repeats` after a warm-up.

By default it uses the final model of a run directory (`--run`, e.g. the demo run made by
`python -m precompute run --preset demo --out runs/demo`) and flips the same kind of targets as
the stage (memorized noisy and correctly predicted clean examples, seeded). Without a run,
`--untrained --model/--width/--data` build an untrained model (speed only):

    .venv/bin/python benchmarks/neuron_flipping.py --run runs/demo --noisy 10 --clean 10
    .venv/bin/python benchmarks/neuron_flipping.py --untrained --model resnet9 --width 0.25 --data fashion-mnist \\
        --train-size 5000 --device cuda --single --no-reference --noisy 64 --clean 64 --targets-per-step 64
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import models  # noqa: E402
from memloc.data import DataError, apply_label_noise, load, subsample  # noqa: E402
from memloc.evaluate import predict  # noqa: E402
from memloc.flipping import FlipSettings, flip_examples, select_targets  # noqa: E402
from memloc.flipping_reference import reference_flip  # noqa: E402
from memloc.runs import open_run  # noqa: E402
from memloc.store import Run, RunError  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _setup(args, device):
    """(model, training images, training labels, is_noisy) on the device, in args.dtype."""
    dtype = getattr(torch, args.dtype)
    if not args.untrained:
        opened = open_run(Run(args.run), device)
        return opened.model().to(dtype), opened.data.train_x.to(dtype), opened.labels.train_labels, opened.labels.is_noisy
    ds = subsample(load(args.data), args.train_size or None, None, 0)
    y, noisy = apply_label_noise(ds.true_labels, ds.num_classes, 0.1, 0)
    torch.manual_seed(0)
    model = models.build(args.model, ds.input_shape, ds.num_classes, width=args.width).to(device, dtype).eval()
    return model, ds.train_x.to(device, dtype), y.to(device), noisy.to(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/demo", help="run directory whose final model to use")
    p.add_argument("--untrained", action="store_true", help="instead of a run: an untrained --model on --data")
    p.add_argument("--model", default="resnet9", help="with --untrained: architecture")
    p.add_argument("--width", type=float, default=0.25, help="with --untrained: width option of the model")
    p.add_argument("--data", default="fashion-mnist", help="with --untrained: data set")
    p.add_argument("--train-size", type=int, default=5000, help="with --untrained: training subset (0 = all)")
    p.add_argument("--noisy", type=int, default=10, help="memorized noisy targets")
    p.add_argument("--clean", type=int, default=10, help="correctly predicted clean targets")
    p.add_argument("--batch", type=int, default=512, help="reference batch size |B|")
    p.add_argument("--cap", type=int, default=200, help="most units per example")
    p.add_argument("--robust", action="store_true", help="robust flipping (noisy input copies)")
    p.add_argument("--targets-per-step", type=int, default=32, help="fast path: targets at once")
    p.add_argument("--chunk-rows", type=int, default=4096, help="fast path: most forward rows per pass")
    p.add_argument("--single", action="store_true", help="also time the fast path one target at a time")
    p.add_argument("--no-reference", action="store_true", help="skip the reference (e.g. large models on a GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        model, x, y, noisy = _setup(args, device)
    except (DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ids = select_targets(predict(model, x).argmax(1), y, noisy, args.noisy, args.clean, seed=0)
    settings = FlipSettings(batch_size=args.batch, cap=args.cap, robust=args.robust,
                            targets_per_step=args.targets_per_step, chunk_rows=args.chunk_rows)
    source = f"untrained {args.model} width {args.width} on {args.data}" if args.untrained else args.run
    print(f"model: {source}; {len(ids)} targets ({int(noisy[ids].sum())} noisy); |B| = {min(args.batch, len(x))}, "
          f"cap {args.cap}, robust {args.robust}, {args.dtype}, device {device}, threads {torch.get_num_threads()}")

    def fast(per_step=args.targets_per_step):
        return flip_examples(model, x, y, ids, dataclasses.replace(settings, targets_per_step=per_step))

    paths = {"fast": fast}
    if args.single:
        paths["fast, one target at a time"] = lambda: fast(1)
    if not args.no_reference:
        paths["reference"] = lambda: [reference_flip(model, x, y, e, settings) for e in ids]
    flip_examples(model, x, y, ids[:2], settings)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in paths}
    outputs = {}
    for _ in range(args.repeats):
        for name, fn in paths.items():
            seconds, outputs[name] = _timed(fn, device)
            times[name].append(seconds)
    units = [len(r.units) for r in outputs["fast"]]
    print(f"units per example: mean {statistics.mean(units):.1f}, total {sum(units)} greedy steps; "
          f"flipped {sum(r.flipped for r in outputs['fast'])}/{len(ids)}")
    rate = {name: len(ids) / statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:>28}: {rate[name]:8.2f} examples/s  (median {statistics.median(t):.2f} s of {[round(s, 2) for s in t]})")
    for name in paths:
        if name != "fast":
            print(f"fast / {name}: {rate['fast'] / rate[name]:.2f}x")
            same = sum(a == b for a, b in zip(outputs["fast"], outputs[name]))
            print(f"identical unit sequences, fast vs {name}: {same}/{len(ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
