"""The localization benchmark on a run's models, with its timing (stage `localize`'s work).

On a complete run (stages `train` and `dropout`) it chooses each benchmark's targets as the
stage does, runs every method on them with the current code and settings (the defaults, or
`--set key=value` of the `localize` section), and prints

- recall@k per method on the `dropout` and `injection` ground truths, with the chance level;
- the `deletion` table: share of targets that lose memorization, accuracy changes, per rate;
- seconds per target per method, and each benchmark's wall time (the stage is their sum);
- with `--reference N`: for N deletion targets, the naive reference of each method
  (`memloc.localization_reference`) against the fast path in the same process: time ratio
  and largest score difference.

    .venv/bin/python benchmarks/localize.py --run runs/demo
    .venv/bin/python benchmarks/localize.py --run runs/fashion-mnist --set n_targets=20 --reference 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from memloc import localization as loc  # noqa: E402
from memloc import localization_reference as ref  # noqa: E402
from memloc.evaluate import predict  # noqa: E402
from memloc.runs import open_run  # noqa: E402
from precompute.localize import targets  # noqa: E402


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--set", action="append", default=[], help="a localize setting, e.g. n_targets=20")
    parser.add_argument("--reference", type=int, default=0, help="deletion targets timed against the naive reference")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    opened = open_run(args.run)
    changes = {key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}
    for key, value in changes.items():
        if isinstance(value, list):
            changes[key] = tuple(value)
    settings = dataclasses.replace(opened.config.localize, **changes)
    opened.config = dataclasses.replace(opened.config, localize=settings)
    flip = opened.config.flip
    x, y, noisy = opened.data.train_x, opened.labels.train_labels, opened.labels.is_noisy
    model, dropout = opened.model(), opened.model(variant="dropout")
    plain_pred = predict(model, x).argmax(1)
    memorized = noisy & (plain_pred == y)
    print(f"run {opened.run.name}: {opened.config.model.name} on {opened.config.data.name}, {settings.n_targets} targets per benchmark")

    tables, walls = {}, {}
    for benchmark in loc.BENCHMARKS:
        chosen = targets(opened, benchmark, plain_pred, dropout)
        start = time.perf_counter()
        if benchmark == "dropout":
            rows, _ = loc.dropout_benchmark(dropout, x, y, chosen, settings, flip)
        elif benchmark == "injection":
            rows, _ = loc.injection_benchmark(model, x, y, chosen, opened.data.num_classes, settings, flip)
        else:
            rows, _ = loc.deletion_benchmark(model, x, y, noisy, memorized, opened.data.test_x, opened.data.test_labels,
                                             chosen, settings, flip)
        walls[benchmark] = time.perf_counter() - start
        tables[benchmark] = loc.table(rows)
    pd.set_option("display.width", 200)
    for benchmark in ("dropout", "injection"):
        t = tables[benchmark]
        ok = t[t["truth_ok"].astype(bool)]
        print(f"\n{benchmark}: {ok['example_id'].nunique()} of {t['example_id'].nunique()} targets with a valid truth "
              f"({walls[benchmark]:.1f} s)")
        print(ok.groupby("method")[["recall_at_k", "chance", "k"]].mean().sort_values("recall_at_k", ascending=False).round(3).to_string())
    t = tables["deletion"]
    print(f"\ndeletion: {t['example_id'].nunique()} memorized noisy targets ({walls['deletion']:.1f} s)")
    table = t.groupby(["method", "rate"])[["lost_memorization", "memorized_acc_change", "clean_acc_change", "test_acc_change"]].mean()
    print(table.astype(float).round(3).to_string())
    seconds = pd.DataFrame({b: tables[b].groupby("method")["seconds"].mean() for b in loc.BENCHMARKS})
    print("\nseconds per target\n" + seconds.round(4).to_string())
    print(f"\nstage total: {sum(walls.values()):.1f} s  (" + ", ".join(f"{b} {w:.1f} s" for b, w in walls.items()) + ")")

    if args.reference:
        _reference(model, x, y, targets(opened, "deletion", plain_pred, dropout)[: args.reference], settings, flip)


def _reference(model, x, y, chosen, settings, flip) -> None:
    """Fast path against the naive reference on the plain model, one target at a time."""
    print(f"\nfast path vs naive reference on {len(chosen)} targets (plain model)")
    naive = {
        "zero_out": lambda e: ref.zero_out(model, x[e : e + 1], int(y[e])),
        "integrated_gradients": lambda e: ref.integrated_gradients(model, x[e : e + 1], int(y[e]), settings.ig_steps),
        "slimming": lambda e: ref.slimming(model, x[e : e + 1], int(y[e]), settings),
        "hard_concrete": lambda e: ref.hard_concrete(model, x[e : e + 1], e, int(y[e]), settings),
    }
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for method, reference in naive.items():
        start = time.perf_counter()
        expected = torch.stack([reference(e) for e in chosen])
        slow = time.perf_counter() - start
        for p, flag in flags:
            p.requires_grad_(flag)
        subject = loc.Subject(model, None, torch.tensor(chosen), y[chosen], x, y)
        start = time.perf_counter()
        fast = loc.score(method, subject, settings, flip)
        quick = time.perf_counter() - start
        print(f"  {method:22s} reference {slow:7.2f} s  fast {quick:6.2f} s  ratio {slow / quick:6.1f}x  "
              f"largest difference {float((fast - expected).abs().max()):.2e}")


if __name__ == "__main__":
    main()
