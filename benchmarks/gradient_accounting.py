"""Gradient accounting and per-example gradient norms: fast paths against their naive references.

In one process, on the same model and data:

1. Accounting (PAPER.md section 1): one training epoch (`memloc.train.train_epoch`) with the
   plain backward, with `memloc.gradients.GradientAccounting` (fast), and with
   `memloc.gradients_reference.ReferenceAccounting` (three backward passes per batch, host
   copies). Each repeat starts all three from the same initial model and runs them in turn, so
   a busy machine slows all of them alike; the script prints medians and the ratios
   fast / plain and naive / fast. It also prints fast / plain for a whole training epoch,
   i.e. including the evaluation pass over the training and test examples that follows every
   training epoch there.
2. Per-example norms: `memloc.example_gradients.example_gradient_norms` against the per-example
   backward loop `reference_example_norms`, by default on the `demo-mlp` preset's model and data
   (MLP 512-512 on the 1,437 training digits), with the largest relative difference.

    .venv/bin/python benchmarks/gradient_accounting.py --model resnet9 --width 0.25 --batch 512
    .venv/bin/python benchmarks/gradient_accounting.py --model mlp --train-size 10240
    .venv/bin/python benchmarks/gradient_accounting.py --threads 1 --clock cpu   # a busy machine
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import models  # noqa: E402
from memloc import overrides  # noqa: E402
from memloc.data import DataError, Labels, apply_label_noise, load, load_data, make_labels, subsample  # noqa: E402
from memloc.evaluate import evaluate  # noqa: E402
from memloc.example_gradients import example_gradient_norms  # noqa: E402
from memloc.gradients import GradientAccounting  # noqa: E402
from memloc.gradients_reference import ReferenceAccounting, reference_example_norms  # noqa: E402
from memloc.runs import build_model  # noqa: E402
from memloc.train import TrainSettings, make_optimizer, mean_backward, train_epoch  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: "wall": elapsed time; "cpu": this process's CPU time, which other processes on a shared
#: machine do not inflate (with --threads 1; more threads add their spin-waiting to it).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    t0 = clock()
    fn()
    _sync(device)
    return clock() - t0


def _data(args, device):
    try:
        ds = load(args.data)
    except DataError as e:
        sys.exit(f"{e}")
    ds = subsample(ds, args.train_size, args.test_size, seed=0).to(device)
    train, noisy = apply_label_noise(ds.true_labels.cpu(), ds.num_classes, 0.1, seed=0)
    return ds, Labels(ds.true_labels, train.to(device), noisy.to(device))


def bench_accounting(args, device) -> None:
    ds, labels = _data(args, device)
    options = {"hidden": [args.hidden, args.hidden]} if args.model == "mlp" else (
        {"width": args.width} if args.model in ("resnet9", "cnn") else {})
    torch.manual_seed(0)
    init = models.build(args.model, ds.input_shape, ds.num_classes, **options).to(device)
    cfg = TrainSettings(epochs=10, batch_size=args.batch, peak_epoch=2.0)

    def epoch(kind: str) -> float:
        model = copy.deepcopy(init)
        opt = make_optimizer(model.parameters(), cfg)
        if kind == "plain":
            return _timed(lambda: train_epoch(model, opt, ds, labels.train_labels, cfg, 2, backward=mean_backward), device)
        if kind == "fast":
            with GradientAccounting(model, labels.train_labels, labels.is_noisy) as acc:
                return _timed(lambda: (train_epoch(model, opt, ds, labels.train_labels, cfg, 2, backward=acc), acc.epoch_values()), device)
        ref = ReferenceAccounting(model, labels.is_noisy)
        return _timed(lambda: (train_epoch(model, opt, ds, labels.train_labels, cfg, 2, backward=ref), ref.end_epoch(2)), device)

    def evaluation() -> float:
        return _timed(lambda: evaluate(init, ds.train_x, labels, ds.test_x, ds.test_labels, cfg.eval_batch_size), device)

    kinds = ["plain", "fast"] + ([] if args.skip_naive else ["naive"])
    for kind in kinds:  # warm-up
        epoch(kind)
    times = {kind: [] for kind in (*kinds, "eval")}
    for _ in range(args.repeats):
        for kind in kinds:
            times[kind].append(epoch(kind))
        times["eval"].append(evaluation())
    med = {kind: statistics.median(ts) for kind, ts in times.items()}
    low = {kind: min(ts) for kind, ts in times.items()}
    params = sum(p.numel() for p in init.parameters())
    noisy_share = float(labels.is_noisy.float().mean())
    print(f"accounting: {args.model} {options} ({params:,} parameters), {args.data} {ds.num_train} train / "
          f"{len(ds.test_labels)} test, batch {args.batch}, {noisy_share:.0%} noisy, device {device}, "
          f"threads {torch.get_num_threads()}, {args.repeats} repeats, {args.clock} clock")
    for kind in (*kinds, "eval"):
        print(f"  {kind:>5} epoch: median {med[kind]:.3f} s, min {low[kind]:.3f} s, max {max(times[kind]):.3f} s")

    def ratio(name: str, num, den) -> None:
        # median of epoch times, fastest epochs (a shared machine only ever adds time), and the
        # median of the per-repeat ratios (the kinds of one repeat run back to back)
        paired = statistics.median(num(i) / den(i) for i in range(args.repeats))
        print(f"  {name:<36} = {num('med') / den('med'):.3f} (medians)  {num('min') / den('min'):.3f} (minimums)  "
              f"{paired:.3f} (median of paired ratios)")

    def pick(kind: str, plus_eval: bool = False):
        def value(which):
            src = med if which == "med" else low if which == "min" else {k: ts[which] for k, ts in times.items()}
            return src[kind] + (src["eval"] if plus_eval else 0.0)
        return value

    ratio("fast / plain (training epoch)", pick("fast"), pick("plain"))
    ratio("fast / plain (epoch + its evaluation)", pick("fast", True), pick("plain", True))
    if "naive" in med:
        ratio("naive / fast (training epoch)", pick("naive"), pick("fast"))


def bench_example_norms(args, device) -> None:
    cfg = overrides.resolve(args.per_example_preset)
    ds = load_data(cfg.data).to(device)
    labels = make_labels(cfg.data, ds.to("cpu")).to(device)
    model = build_model(cfg, ds).to(device)
    x, y = ds.train_x, labels.train_labels
    fast_times, ref_times = [], []
    example_gradient_norms(model, x[:64], y[:64], cfg.gradients.chunk_size)  # warm-up
    for _ in range(args.repeats):
        fast_times.append(_timed(lambda: example_gradient_norms(model, x, y, cfg.gradients.chunk_size), device))
        ref_times.append(_timed(lambda: reference_example_norms(model, x, y), device))
    _, fast = example_gradient_norms(model, x, y, cfg.gradients.chunk_size)
    _, ref = reference_example_norms(model, x, y)
    rel = ((fast.double().cpu() - ref).abs() / ref.abs()).max().item()
    f, r = statistics.median(fast_times), statistics.median(ref_times)
    print(f"per-example norms: preset {args.per_example_preset} ({cfg.model.name} {dict(cfg.model.options)}, "
          f"{len(x)} examples), device {device}, {args.repeats} repeats, {args.clock} clock")
    print(f"  fast  median {f:.3f} s  (range {min(fast_times):.3f}..{max(fast_times):.3f})")
    print(f"  naive median {r:.3f} s  (range {min(ref_times):.3f}..{max(ref_times):.3f})")
    print(f"  naive / fast = {r / f:.1f} (medians), {min(ref_times) / min(fast_times):.1f} (minimums)   "
          f"largest relative difference {rel:.2e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet9", choices=models.NAMES)
    p.add_argument("--width", type=float, default=0.25, help="resnet9 / cnn width")
    p.add_argument("--hidden", type=int, default=512, help="mlp hidden width (two layers)")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--test-size", type=int, default=800)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--clock", choices=CLOCKS, default="wall", help="wall time, or process CPU time (a busy shared machine)")
    p.add_argument("--skip-naive", action="store_true", help="time plain and fast accounting only")
    p.add_argument("--per-example-preset", default="demo-mlp", help="preset whose model and data time the per-example norms")
    p.add_argument("--only", choices=("accounting", "per-example"), help="run one of the two benchmarks")
    args = p.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.only != "per-example":
        bench_accounting(args, device)
    if args.only != "accounting":
        bench_example_norms(args, device)


if __name__ == "__main__":
    main()
