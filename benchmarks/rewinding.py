"""Layer rewinding and retraining: fast paths against their naive references, and the live call.

In one process, on one run (`--run DIR`, a run directory with its checkpoints, e.g. the demo run),
or on a synthetic run built from a preset (`--preset NAME [--set KEY=VALUE ...]`: the preset's
data and model, every checkpoint a different random initialization; timing does not depend on
the weights):

1. Grid: every layer group rewound to every epoch (`--epochs`, default the config's
   `rewind.epochs`), fast (`RewindEvaluator.grid`: activations in front of the group computed
   once per group) against the naive reference (`rewind_reference`: deep copy, load the group's
   tensors, evaluate the whole network, per cell). Both give identical numbers (checked here).
2. Live: one group rewound to epoch 0 and evaluated on the full train and test sets, median per
   group: `evaluate_rewind(opened, items)` (builds the final model), the same with a kept model
   (as the explorer caches it), and a kept `RewindEvaluator` whose activations in front of the
   group are cached.
3. Retraining (`--retrain-epochs`, default 2, 0 = skip): `retrain_group` (frozen prefix cached)
   against `retrain_reference` (whole model every batch), per group, same rows (checked).

    .venv/bin/python benchmarks/rewinding.py --run runs/demo
    .venv/bin/python benchmarks/rewinding.py --preset fashion-mnist --epochs 0,10,30 --retrain-epochs 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from memloc import data as data_mod  # noqa: E402
from memloc import overrides  # noqa: E402
from memloc.data import load_data, make_labels  # noqa: E402
from memloc.interventions import Rewind  # noqa: E402
from memloc.retraining import RetrainData, retrain_group, retrain_reference  # noqa: E402
from memloc.rewinding import RewindEvaluator, evaluate_rewind, rewind_reference  # noqa: E402
from memloc.runs import build_model, open_run  # noqa: E402
from memloc.settings import ConfigError  # noqa: E402
from memloc.store import Run, RunError  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_run(preset: str, sets: list[str], path: Path) -> Run:
    """A run directory with the preset's data and labels and random checkpoints 0..epochs."""
    cfg = overrides.resolve(preset, overrides=sets)
    ds = load_data(cfg.data)
    labels = make_labels(cfg.data, ds)
    run = Run(path)
    with run.lock():
        run.create(cfg.to_dict(), data_mod.fingerprint(ds), cfg.train.seed)
        run.write_labels(labels.true_labels.numpy(), labels.train_labels.numpy(), labels.is_noisy.numpy())
        for epoch in range(cfg.train.epochs + 1):
            cfg_e = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + epoch))
            run.write_checkpoint(epoch, build_model(cfg_e, ds).state_dict())
    return run


def timed(fn, device: torch.device):
    """Wall seconds and result of `fn()`; the process's CPU seconds go to CPU_SECONDS."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    CPU_SECONDS.append(time.process_time() - c0)
    return time.perf_counter() - t0, out


# CPU seconds of each timed call. On a machine shared with other jobs, wall time grows with the
# load while CPU time (with --threads 1) stays near what an idle core needs; both are printed.
CPU_SECONDS: list[float] = []


def bench_grid(opened, epochs: list[int], device: torch.device) -> None:
    data, labels = opened.data, opened.labels
    model = opened.model()
    groups = list(model.layer_groups)
    bs = opened.config.train.eval_batch_size
    for epoch in epochs:
        opened.checkpoint(epoch)  # both paths read cached checkpoints
    evaluator = RewindEvaluator(model, opened.checkpoint, data.train_x, labels, data.test_x, data.test_labels, bs)
    fast_s, fast = timed(lambda: list(evaluator.grid(groups, epochs)), device)

    def naive():
        return [rewind_reference(model, opened.checkpoint, Rewind(g, e), data.train_x, labels, data.test_x, data.test_labels, bs)
                for g in groups for e in epochs]

    fast_cpu = CPU_SECONDS[-1]
    naive_s, slow = timed(naive, device)
    naive_cpu = CPU_SECONDS[-1]
    for (item, a), b in zip(fast, slow, strict=True):
        if a.metrics != b.metrics or not torch.equal(a.train_pred, b.train_pred):
            sys.exit(f"fast and naive grid differ at {item}")
    print(f"grid: {len(groups)} groups x {len(epochs)} epochs = {len(fast)} cells on {data.num_train} train + "
          f"{len(data.test_x)} test examples")
    print(f"  fast {fast_s:.2f} s   naive {naive_s:.2f} s   naive/fast {naive_s / fast_s:.2f}x   (identical results)")
    print(f"  CPU seconds: fast {fast_cpu:.2f}   naive {naive_cpu:.2f}   naive/fast {naive_cpu / fast_cpu:.2f}x")


def bench_live(opened, repeats: int, device: torch.device) -> None:
    groups = list(opened.model().layer_groups)
    kept_model = opened.model()
    evaluate_rewind(opened, [Rewind(groups[0], 0)])  # warm-up: checkpoints read once, code paths loaded
    evaluator = RewindEvaluator.of(opened)
    ways = {
        "evaluate_rewind(opened, items)": lambda items: evaluate_rewind(opened, items),
        "evaluate_rewind(opened, items, model)": lambda items: evaluate_rewind(opened, items, kept_model),
        "RewindEvaluator, cut cached": evaluator.evaluate,
    }
    print(f"live rewind of one group to epoch 0 + evaluation on all train and test examples, median of {repeats} (s):")
    for name, call in ways.items():
        per_group, cpu = {}, {}
        for group in groups:
            call([Rewind(group, 1)])  # the evaluator caches the activations in front of the group here
            per_group[group] = statistics.median(timed(lambda: call([Rewind(group, 0)]), device)[0] for _ in range(repeats))
            cpu[group] = statistics.median(CPU_SECONDS[-repeats:])
        print(f"  {name:<38} " + "  ".join(f"{g} {t:.3f}" for g, t in per_group.items())
              + f"   slowest {max(per_group.values()):.3f}   (CPU s: slowest {max(cpu.values()):.3f})")


def bench_retrain(opened, epochs: int, device: torch.device) -> None:
    cfg = dataclasses.replace(opened.config.retrain, max_epochs=epochs, peak_epoch=min(opened.config.retrain.peak_epoch, epochs))
    bs = cfg.batch_size or opened.config.train.batch_size
    data = RetrainData(opened.data.train_x, opened.labels, opened.data.test_x, opened.data.test_labels)
    model, init = opened.model(), opened.checkpoint(0)
    seed, ebs = opened.config.train.seed, opened.config.train.eval_batch_size
    print(f"retraining, {epochs} epoch(s) per group on the clean examples, batch {bs} (s):")
    total_fast = total_naive = 0.0
    for group in model.layer_groups:
        fast_s, fast = timed(lambda: retrain_group(copy.deepcopy(model), init, group, data, cfg, bs, seed, ebs), device)
        naive_s, (slow, _) = timed(lambda: retrain_reference(model, init, group, data, cfg, bs, seed, ebs), device)
        close = all(abs(a[k] - b[k]) <= 1e-6 for a, b in zip(fast, slow, strict=True) for k in a if k != "epoch")
        print(f"  {group:<8} fast {fast_s:.2f}  naive {naive_s:.2f}  naive/fast {naive_s / fast_s:.2f}x  rows {'equal' if close else 'DIFFER'}")
        total_fast, total_naive = total_fast + fast_s, total_naive + naive_s
    print(f"  all groups: fast {total_fast:.2f} s  naive {total_naive:.2f} s  naive/fast {total_naive / total_fast:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="an existing run directory (with its checkpoints)")
    source.add_argument("--preset", help="build a synthetic run (random checkpoints) of this preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for --preset")
    parser.add_argument("--epochs", help="rewind epochs, e.g. 0,10,30 (default: the config's rewind epochs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2, this machine's cores)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each live timing (median)")
    parser.add_argument("--retrain-epochs", type=int, default=2, help="retraining epochs per group to time; 0 = skip")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Run(args.run) if args.run else synthetic_run(args.preset, args.overrides, Path(tmp) / "run")
            opened = open_run(run, device)
            epochs = ([int(e) for e in args.epochs.split(",")] if args.epochs
                      else opened.config.rewind.epochs_for(opened.config.train))
            cfg = opened.config
            print(f"{run.path.name}: {cfg.model.name} {dict(cfg.model.options)} on {cfg.data.name}, device {device}, "
                  f"{torch.get_num_threads()} threads, eval batch {cfg.train.eval_batch_size}")
            bench_grid(opened, epochs, device)
            bench_live(opened, args.repeats, device)
            if args.retrain_epochs:
                bench_retrain(opened, args.retrain_epochs, device)
    except (RunError, ConfigError, data_mod.DataError) as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
