"""Stage `localize`: a benchmark of localization methods against ground truth (`memloc.localization`).

On the run's final models it scores every method on each benchmark's targets:

- `dropout`: noisy examples the dropout model (stage `dropout`) memorized, against their own
  memorization units;
- `injection`: clean examples of the plain model, each given a wrong label through a random 1%
  of its units, against those units;
- `deletion`: memorized noisy examples of the plain model, each method's top units zeroed;

and writes the tables `localizers` and `localizer_units`. The rows so far are saved every
`localize.save_every` targets, so an interrupted stage resumes with the targets not yet done
(in the same chunks, so with the same results; only `seconds` differs).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from memloc import localization as loc
from memloc.dropout import predict_mode
from memloc.evaluate import predict
from memloc.flipping import select_targets
from memloc.store import RunError
from precompute.stage import Resumable, StageContext, concat

TABLES = ("localizers", "localizer_units")


def targets(ctx: StageContext, benchmark: str, plain_pred: torch.Tensor, dropout_model: torch.nn.Module | None) -> list[int]:
    """A benchmark's targets, chosen as the flip stage chooses (`memloc.flipping.select_targets`,
    seeded with `localize.seed`): memorized noisy examples of the dropout model in its mode
    `train` (dropout) or of the plain model (deletion), correctly predicted clean ones (injection)."""
    settings, labels = ctx.config.localize, ctx.labels
    pred = plain_pred
    if benchmark == "dropout":
        ids = torch.arange(ctx.data.num_train, device=ctx.device)
        pred = predict_mode(dropout_model, ctx.data.train_x, "train", ctx.config.train.eval_batch_size, ids).argmax(1)
    n_noisy, n_clean = (0, settings.n_targets) if benchmark == "injection" else (settings.n_targets, 0)
    return select_targets(pred, labels.train_labels, labels.is_noisy, n_noisy, n_clean, settings.seed)


def localize_stage(ctx: StageContext) -> dict[str, Any]:
    """Every method on every benchmark's targets; tables `localizers` and `localizer_units`."""
    cfg, settings = ctx.config, ctx.config.localize
    if "dropout" in settings.benchmarks and not ctx.run.is_complete("dropout"):
        raise RunError("the localize benchmark `dropout` needs the dropout model: run stage dropout first, "
                       "or leave it out (localize.benchmarks=[\"injection\",\"deletion\"])")
    model = ctx.model()
    dropout_model = ctx.model(variant="dropout") if "dropout" in settings.benchmarks else None
    x, y, noisy = ctx.data.train_x, ctx.labels.train_labels, ctx.labels.is_noisy
    plain_pred = predict(model, x, cfg.train.eval_batch_size).argmax(1)
    memorized = noisy & (plain_pred == y)

    state = Resumable(ctx, "localize")
    parts = {name: state.parts(name) for name in TABLES}
    done = set(zip(parts["localizers"][0]["benchmark"], parts["localizers"][0]["example_id"])) if parts["localizers"] else set()
    for benchmark in settings.benchmarks:
        chosen = targets(ctx, benchmark, plain_pred, dropout_model)
        todo = [e for e in chosen if (benchmark, e) not in done]
        bar = tqdm(total=len(chosen), initial=len(chosen) - len(todo), desc=f"localize {benchmark}", unit="example", disable=None)
        try:
            for start in range(0, len(todo), settings.save_every):
                chunk = todo[start : start + settings.save_every]
                if benchmark == "dropout":
                    rows, units = loc.dropout_benchmark(dropout_model, x, y, chunk, settings, cfg.flip)
                elif benchmark == "injection":
                    rows, units = loc.injection_benchmark(model, x, y, chunk, ctx.data.num_classes, settings, cfg.flip)
                else:
                    rows, units = loc.deletion_benchmark(model, x, y, noisy, memorized, ctx.data.test_x, ctx.data.test_labels,
                                                         chunk, settings, cfg.flip)
                new = {"localizers": loc.table(rows), "localizer_units": loc.unit_table(units)}
                state.append(new)
                for name in TABLES:
                    parts[name].append(new[name])
                bar.update(len(chunk))
        finally:
            bar.close()
    localizers = concat(parts["localizers"], loc.COLUMNS) if parts["localizers"] else loc.table([])
    units = concat(parts["localizer_units"], loc.UNIT_COLUMNS) if parts["localizer_units"] else loc.unit_table([])
    state.finish({"localizers": localizers, "localizer_units": units})
    return loc.summary(localizers)
