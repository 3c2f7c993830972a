"""Stage `localize` on the smoke run: its tables hold one row per method, benchmark and target
(and rate), the picks follow the ground truth's sizes, and bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from memloc import localization as loc
from memloc import overrides
from memloc.interventions import UnitIndex
from memloc.runs import open_run
from memloc.settings import ConfigError


def test_the_localize_tables_hold_every_method_benchmark_and_target(smoke_run):
    opened = open_run(smoke_run)
    settings = opened.config.localize
    table, units = smoke_run.read_table("localizers"), smoke_run.read_table("localizer_units")
    assert list(table.columns) == loc.COLUMNS and list(units.columns) == loc.UNIT_COLUMNS
    for benchmark in loc.BENCHMARKS:
        rows = table[table["benchmark"] == benchmark]
        targets = sorted(set(rows["example_id"]))
        assert 0 < len(targets) <= settings.n_targets
        per_target = len(settings.rates) if benchmark == "deletion" else 1
        assert len(rows) == len(settings.methods) * len(targets) * per_target
        assert set(rows["method"]) == set(settings.methods)
    recall = table[table["benchmark"] != "deletion"]
    ok = recall["truth_ok"].astype(bool) & recall["recall_at_k"].notna()
    assert recall.loc[ok, "recall_at_k"].between(0, 1).all() and (recall.loc[ok, "chance"] > 0).all()

    # Dropout benchmark: each method picks exactly as many units per layer as the target owns there.
    dropout = opened.model(variant="dropout")
    picks = units[units["benchmark"] == "dropout"]
    for (method, e), group in picks.groupby(["method", "example_id"]):
        for name, layer in dropout.named_modules():
            if name in set(group["layer"]):
                own = int(layer.keep(torch.tensor([e]))[0, layer.n_gen:].sum())
                assert (group["layer"] == name).sum() == own
        row = table[(table["benchmark"] == "dropout") & (table["method"] == method) & (table["example_id"] == e)]
        assert row["k"].item() == len(group)
        assert row["recall_at_k"].item() == pytest.approx(group["truth"].astype(bool).mean())

    # Deletion: at the largest rate each layer gives round(rate% of its units), at least one.
    index = UnitIndex(opened.model())
    counts = loc.rate_counts(index, max(settings.rates))
    deletion = units[units["benchmark"] == "deletion"]
    for _, group in deletion.groupby(["method", "example_id"]):
        assert group.groupby("layer").size().to_dict() == dict(zip(index.layers, counts))


@pytest.mark.parametrize("override, message", [
    ('localize.methods=["greedy","psychic"]', "localize.methods"),
    ("localize.rates=[0]", "localize.rates"),
    ('stages=["train","localize"]', "localize.benchmarks"),
])
def test_bad_localize_settings_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        overrides.resolve("smoke", overrides=[override])
