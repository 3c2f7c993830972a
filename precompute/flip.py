"""Stage `flip`: neuron-level localization by greedy flipping (PAPER.md section 4).

Wires `memloc.flipping` to the run store: on the final checkpoint it flips the configured
examples (memorized noisy and correctly predicted clean ones, or a list of ids), evaluates the
collateral accuracy of each edit and of its random control, and writes the tables

- `flipping`: one row per example (see `memloc.flipping.flip_table`);
- `flip_units`: per unit, how many flipped examples' flip sets contain it.

The `flipping` rows so far are saved every `flip.save_every` targets, so an interrupted stage
resumes with the targets not yet done (in the same chunks, so with the same results).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from memloc import flipping
from memloc.evaluate import predict
from precompute.stage import Resumable, StageContext, concat


def _targets(ctx: StageContext, model: torch.nn.Module) -> list[int]:
    cfg = ctx.config.flip
    n_train = ctx.data.num_train
    if cfg.example_ids:
        cfg.check_example_ids(n_train)
        return list(dict.fromkeys(cfg.example_ids))  # each example once, in the given order
    preds = predict(model, ctx.data.train_x, ctx.config.train.eval_batch_size).argmax(1)
    return flipping.select_targets(preds, ctx.labels.train_labels, ctx.labels.is_noisy, cfg.n_noisy, cfg.n_clean, cfg.seed)


def flip_stage(ctx: StageContext) -> dict[str, Any]:
    """Greedy flipping of the chosen examples; tables `flipping` and `flip_units`."""
    settings = ctx.config.flip
    model = ctx.model()
    x, y, noisy = ctx.data.train_x, ctx.labels.train_labels, ctx.labels.is_noisy
    targets = _targets(ctx, model)
    evals = flipping.eval_set(x, y, noisy, ctx.data.test_x, ctx.data.test_labels, settings.eval_train,
                              settings.eval_test, settings.seed)

    state = Resumable(ctx, "flip")
    parts = state.parts("flipping")
    if parts and parts[0]["example_id"].tolist() != targets[: len(parts[0])]:
        state.restart()  # the targets changed (another model or data): start over
        parts = []
    done = len(parts[0]) if parts else 0
    bar = tqdm(total=len(targets), initial=done, desc="flip", unit="example", disable=None)
    try:
        for start in range(done, len(targets), settings.save_every):
            chunk = targets[start : start + settings.save_every]
            results = flipping.flip_examples(model, x, y, chunk, settings, on_result=lambda _: bar.update())
            parts.append(flipping.flip_table(model, results, x, y, noisy, evals, settings))
            state.append({"flipping": parts[-1]})
    finally:
        bar.close()
    table = concat(parts, flipping.COLUMNS) if parts else flipping.flip_table(model, [], x, y, noisy, evals, settings)
    state.finish({"flipping": table, "flip_units": flipping.unit_table(table, model)})
    return flipping.summary(table)
