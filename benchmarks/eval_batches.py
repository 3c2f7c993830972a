"""Batch size and memory order of evaluation and training passes, on one model in one process.

Why `train.eval_batch_size` and `flip.chunk_rows` default to 256 rows on a CPU and why the zoo
keeps convolution weights channels-last (`models.build`): for a model of the zoo at the input
size of a data set, with random weights and inputs (the timing does not depend on them), it
times

- the eval-mode forward of `--rows` images, split into batches of each `--batches` size, with
  the weights in the default (contiguous) order and in channels-last order;
- one training step (forward and backward of the mean cross-entropy) of `--train-batch` images,
  in both orders;

and prints milliseconds and the ratio to the old defaults (one batch of 4,096, contiguous).
Medians over `--repeats` after a warm-up; the orders alternate, so a busy machine slows both.

    .venv/bin/python benchmarks/eval_batches.py                                  # ResNet-9 1/4, 28x28
    .venv/bin/python benchmarks/eval_batches.py --shape 3,32,32 --width 1 --rows 1024
    .venv/bin/python benchmarks/eval_batches.py --shape 1,8,8 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import models  # noqa: E402

ORDERS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--shape", default="1,28,28", help="C,H,W of the images")
    parser.add_argument("--rows", type=int, default=4096, help="images evaluated")
    parser.add_argument("--batches", default="4096,1024,256,64", help="evaluation batch sizes")
    parser.add_argument("--train-batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(s) for s in args.shape.split(","))
    torch.manual_seed(0)
    options = {"width": args.width} if args.model in ("resnet9", "resnet50", "cnn") else {}
    model = models.build(args.model, shape, 10, **options).to(device)
    x = torch.randn(args.rows, *shape, device=device)
    xt, yt = torch.randn(args.train_batch, *shape, device=device), torch.randint(0, 10, (args.train_batch,), device=device)
    sizes = [int(b) for b in args.batches.split(",")]

    def evaluate(rows: int) -> None:
        with torch.no_grad():
            for xb in x.split(rows):
                model(xb)

    def step() -> None:
        F.cross_entropy(model(xt), yt).backward()

    cases = [(f"eval {args.rows} in batches of {rows}", order, lambda r=rows: evaluate(r)) for rows in sizes for order in ORDERS]
    cases += [(f"training step of {args.train_batch}", order, step) for order in ORDERS]
    times: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, order, fn in cases:
            model.to(memory_format=ORDERS[order])
            model.eval() if name.startswith("eval") else model.train()
            ms = _timed(fn, device)
            if repeat:
                times.setdefault((name, order), []).append(ms)
    print(f"{args.model} {options} on {shape}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}")
    base_eval = statistics.median(times[(f"eval {args.rows} in batches of {max(sizes)}", "contiguous")])
    base_step = statistics.median(times[(f"training step of {args.train_batch}", "contiguous")])
    print("| pass | order | ms | vs contiguous, largest batch |\n|---|---|---:|---:|")
    for (name, order), values in times.items():
        ms = statistics.median(values)
        base = base_eval if name.startswith("eval") else base_step
        print(f"| {name} | {order} | {ms:.0f} | {base / ms:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
