"""Example-tied dropout: training-step time with and without it, and mask memory vs the dense layout.

In one process:

1. Step time: training epochs (`memloc.train.train_epoch`, so the ids reach the layers exactly as
   in precompute) of the plain model and of the same model with example-tied dropout after
   every place the zoo offers (same initial weights, same batches). Each repeat runs both in
   turn, so a busy machine slows both alike; the script prints the median time per step of
   each and the ratio dropout / plain (also the median of the per-repeat ratios). The dropout
   model reads its masks from the training loop's mask table, built once per training: its
   build is timed apart and also spread over `--epochs` of a whole training. Defaults: the
   `demo-mlp` preset's model and data (MLP 512-512 on the 1,437 training digits, batch 64; the `demo` preset until Dec 2026).
2. Memory: for `--examples` examples (default 50,000: CIFAR-10) and ResNet-9 at `--mem-width`
   (default 1, 3x32x32 inputs), per dropout place the bytes of the authors' dense float32 table
   (N, C, H, W), of a per-channel bit table (N x C bits, the most a cache may hold), and what
   memloc's layer holds: per-channel constants (the same for any N) plus transient per-batch
   hashes, and while the training loop runs, its bit table (`mask_table`). The dense and
   N x C tables are computed from their shapes (building a 15 GB table to measure it is the
   problem this layer removes); memloc's bytes are measured on the built layers after a batch
   with ids up to N and after building the training loop's tables for N examples.

    .venv/bin/python benchmarks/example_tied_dropout.py                      # demo MLP
    .venv/bin/python benchmarks/example_tied_dropout.py --model resnet9 --width 0.25 --data fashion-mnist --batch 512
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
from memloc.data import DataError, apply_label_noise, load, subsample  # noqa: E402
from memloc.train import TrainSettings, make_optimizer, train_epoch  # noqa: E402
from models.example_tied_dropout import dropout_layers, mask_table  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_steps(args, device: torch.device) -> None:
    try:
        ds = load(args.data)
    except DataError as e:
        sys.exit(f"{e}")
    ds = subsample(ds, args.train_size, None, seed=0).to(device)
    train_labels, _ = apply_label_noise(ds.true_labels.cpu(), ds.num_classes, 0.1, seed=0)
    train_labels = train_labels.to(device)
    options = {"hidden": [args.hidden, args.hidden]} if args.model == "mlp" else {"width": args.width}
    dropout = {"p_gen": 0.2, "p_mem": 0.1, "seed": 0}
    torch.manual_seed(0)
    plain_init = models.build(args.model, ds.input_shape, ds.num_classes, **options).to(device)
    torch.manual_seed(0)
    dropout_init = models.build(args.model, ds.input_shape, ds.num_classes, **options,
                                example_tied_dropout=dropout).to(device)
    cfg = TrainSettings(epochs=10, batch_size=args.batch, peak_epoch=2.0)
    steps = -(-ds.num_train // args.batch)

    def epoch_seconds(init) -> float:
        model = copy.deepcopy(init)
        optimizer = make_optimizer(model.parameters(), cfg)
        _sync(device)
        t0 = time.perf_counter()
        train_epoch(model, optimizer, ds, train_labels, cfg, 2)
        _sync(device)
        return time.perf_counter() - t0

    # The training loop keeps the masks of the training set as a bit table, built once per
    # training (its first epoch); it is built here, timed, and copied with the model. A first
    # build on a copy loads the kernels (on a GPU the first use of an op costs far more).
    with mask_table(copy.deepcopy(dropout_init), ds.num_train, ds.train_x.device):
        pass
    _sync(device)
    t0 = time.perf_counter()
    with mask_table(dropout_init, ds.num_train, ds.train_x.device):
        pass
    _sync(device)
    build = time.perf_counter() - t0

    epoch_seconds(plain_init), epoch_seconds(dropout_init)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "dropout": []}
    for _ in range(args.repeats):
        times["plain"].append(epoch_seconds(plain_init) / steps)
        times["dropout"].append(epoch_seconds(dropout_init) / steps)
    places = list(dropout_init.dropout)
    print(f"step time: {args.model} {options} on {args.data} ({ds.num_train} examples, batch {args.batch}, "
          f"{steps} steps/epoch), device {device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"  example-tied dropout after {places} (p_gen 0.2, p_mem 0.1)")
    for kind, ts in times.items():
        print(f"  {kind:<8} median {statistics.median(ts) * 1e3:8.3f} ms/step  "
              f"(min {min(ts) * 1e3:.3f}, max {max(ts) * 1e3:.3f})")
    plain, dropout = statistics.median(times["plain"]), statistics.median(times["dropout"])
    amortized = dropout + build / (args.epochs * steps)
    print(f"  mask bit table, built once per training: {build * 1e3:.1f} ms")
    paired = statistics.median(d / p for d, p in zip(times["dropout"], times["plain"]))
    print(f"  ratio dropout / plain: {dropout / plain:.3f} per step (median of paired repeats {paired:.3f}), "
          f"{amortized / plain:.3f} with the table's build spread over {args.epochs} epochs")


def bench_memory(args) -> None:
    shape = (3, 32, 32)
    model = models.build("resnet9", shape, 10, width=args.mem_width,
                         example_tied_dropout={"p_gen": 0.2, "p_mem": 0.1}).train()
    maps: dict[str, tuple[int, ...]] = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, n=name: maps.__setitem__(n, tuple(o.shape[1:])))
             for name, layer in model.dropout.items()]
    batch = 2
    ids = torch.tensor([0, args.examples - 1])  # the largest id: memloc's memory does not depend on it
    try:
        with torch.no_grad():
            model(torch.zeros(batch, *shape), example_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    n = args.examples
    held = [sum(t.numel() * t.element_size() for pair in layer._constants.values() for t in pair)
            for layer in dropout_layers(model)]
    with mask_table(model, n, torch.device("cpu")):  # one table for all layers: ceil(C/8) bytes per layer and row
        tables = [n * -(-layer.channels // 8) for layer in dropout_layers(model)]
        assert sum(tables) == model.dropout["prep"]._table.bits.nbytes
    print(f"mask memory: ResNet-9 width {args.mem_width}, {shape} inputs, {n:,} examples")
    print(f"  {'place':<8} {'C,H,W':<14} {'dense float32 (N,C,H,W)':>24} {'bits (N,C)':>12} {'memloc held':>12} "
          f"{'memloc per batch of 512':>24} {'memloc training table':>22}")
    totals = [0, 0, 0, 0, 0]
    for layer, (name, chw), kept, table in zip(dropout_layers(model), maps.items(), held, tables):
        dense = n * chw[0] * chw[1] * chw[2] * 4
        bits = n * chw[0] // 8
        transient = 512 * (layer.blocks * 8 + layer.channels * 4 * 2)  # int64 hashes, float32 fields and mask
        for i, value in enumerate((dense, bits, kept, transient, table)):
            totals[i] += value
        print(f"  {name:<8} {str(chw):<14} {dense / 2**30:>20.2f} GiB {bits / 2**20:>8.2f} MiB {kept:>10,} B "
              f"{transient / 2**10:>20.1f} KiB {table / 2**20:>18.2f} MiB")
    print(f"  {'total':<23} {totals[0] / 2**30:>20.2f} GiB {totals[1] / 2**20:>8.2f} MiB {totals[2]:>10,} B "
          f"{totals[3] / 2**10:>20.1f} KiB {totals[4] / 2**20:>18.2f} MiB")
    print(f"  dense / memloc held: {totals[0] / totals[2]:,.0f}x; dense / memloc while training: {totals[0] / totals[4]:,.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet9"])
    parser.add_argument("--hidden", type=int, default=512, help="mlp hidden width (two layers)")
    parser.add_argument("--width", type=float, default=0.25, help="cnn / resnet9 width")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--train-size", type=int, default=None, help="training examples (default: all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--epochs", type=int, default=60,
                        help="epochs of a whole training, over which the mask table's one-time build is spread (demo: 60)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int, default=50_000, help="N of the memory comparison")
    parser.add_argument("--mem-width", type=float, default=1.0, help="ResNet-9 width of the memory comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_memory(args)
    bench_steps(args, torch.device(args.device))


if __name__ == "__main__":
    main()
