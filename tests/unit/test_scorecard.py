"""The scorecard's rules on hand-made tables: every verdict of every claim is reachable, and each
rule reads the numbers it says it reads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from memloc import scorecard as sc

GROUPS = ["fc1", "fc2", "fc3", "fc4", "out"]
UNIT_LAYERS = ["fc1", "fc2", "fc3", "fc4"]


def paper_like() -> dict[str, pd.DataFrame]:
    """Tables of a run on which every claim holds: memorization 100%, test accuracy kept,
    comparable and opposing gradients, fc1 the only critical group, 3-unit flip sets over two
    layers that cost 1 point, drop mode at 2%."""
    training = pd.DataFrame({"epoch": [0, 1, 2, 3], "noisy_acc": [0.1, 0.5, 0.9, 1.0], "clean_acc": [0.1, 0.9, 0.97, 0.99],
                             "test_acc": [0.1, 0.93, 0.95, 0.94]})
    gradients = pd.DataFrame([{"epoch": e, "group": g, "group_index": i, "clean_norm": 1.0, "noisy_norm": 0.8,
                               "total_norm": 1.2, "cosine": -0.5} for e in (1, 2, 3) for i, g in enumerate(GROUPS)])
    rewinding = pd.DataFrame([{"group": g, "group_index": i, "epoch": e, "noisy_acc": (0.05 if g == "fc1" else 0.9) if e == 0 else 1.0}
                              for i, g in enumerate(GROUPS) for e in (0, 2)])
    retraining = pd.DataFrame([{"group": g, "group_index": i, "epoch": e, "noisy_acc": 0.02 if g == "fc1" else 0.8}
                               for i, g in enumerate(GROUPS) for e in (1, 2)])
    flips = []
    for t in range(4):
        flips.append({"example_id": t, "kind": "noisy", "n_units": 3, "flipped": True, "units": [f"fc1[{t}]", "fc4[1]", "fc2[2]"],
                      "acc_clean_before": 0.99, "acc_test_before": 0.94, "acc_clean_after": 0.98, "acc_test_after": 0.93,
                      "random_flipped": False})
        flips.append({"example_id": 10 + t, "kind": "clean", "n_units": 20 if t else 200, "flipped": bool(t), "units": [],
                      "acc_clean_before": 0.99, "acc_test_before": 0.94, "acc_clean_after": 0.9, "acc_test_after": 0.9,
                      "random_flipped": False})
    flipping = pd.DataFrame(flips)
    flipping["random_flipped"] = flipping["random_flipped"].astype("boolean")
    dropout = pd.DataFrame({"mode": ["train", "test", "drop", "plain"], "clean_acc": [0.99, 0.97, 0.96, 1.0],
                            "noisy_acc": [1.0, 0.3, 0.02, 1.0], "test_acc": [math.nan, 0.93, 0.93, 0.92]})
    return {"training": training, "gradients": gradients, "rewinding": rewinding, "retraining": retraining,
            "flipping": flipping, "dropout": dropout}


def verdict(key: str, tables: dict[str, pd.DataFrame]) -> str:
    claim = next(c for c in sc.CLAIMS if c.key == key)
    return sc.judge(claim, sc.measure(tables, peak_epoch=1.0, unit_layers=UNIT_LAYERS))[0]


def edited(table: str, column: str, where, value) -> dict[str, pd.DataFrame]:
    tables = paper_like()
    t = tables[table]
    t.loc[where(t) if callable(where) else slice(None), column] = value
    return tables


def test_every_claim_holds_on_paper_like_tables_and_states_its_number():
    numbers = sc.measure(paper_like(), 1.0, UNIT_LAYERS)
    for claim in sc.CLAIMS:
        result, value, detail = sc.judge(claim, numbers)
        assert result == "holds", (claim.key, detail)
        assert math.isfinite(value) and detail
    assert numbers["redundant_share"] == 0.8 and numbers["deepest_critical"] == 0.2
    assert numbers["noisy_units_median_all"] == 3 and numbers["clean_units_median_all"] == 20
    assert numbers["noisy_edit_test_drop"] == pytest.approx(0.01)
    assert numbers["noisy_outside_last"] == pytest.approx(2 / 3)
    assert numbers["plain_gap"] == pytest.approx(0.08) and numbers["drop_gap"] == pytest.approx(0.03)


@pytest.mark.parametrize("key,tables,expected", [
    # memorized: 100% -> 90% is partly (with a collapsed test accuracy too it does not hold: below)
    ("memorized", edited("training", "noisy_acc", lambda t: t["epoch"] == 3, 0.9), "partly"),
    # gradient norm: small in one group (partly), small everywhere (does not hold)
    ("gradient_norm", edited("gradients", "noisy_norm", lambda t: t["group"] == "out", 0.1), "partly"),
    ("gradient_norm", edited("gradients", "noisy_norm", None, 0.1), "does not hold"),
    ("cosine", edited("gradients", "cosine", lambda t: t["group"] == "fc2", 0.3), "partly"),
    ("cosine", edited("gradients", "cosine", None, 0.3), "does not hold"),
    # redundant: retraining brings nothing back (partly); every group critical (does not hold)
    ("redundant", edited("retraining", "noisy_acc", None, 0.0), "partly"),
    ("not_last", edited("rewinding", "noisy_acc", lambda t: (t["group"] == "out") & (t["epoch"] == 0), 0.0), "partly"),
    ("not_last", edited("rewinding", "noisy_acc", None, 1.0), "does not hold"),
    ("few_units", edited("flipping", "n_units", lambda t: t["kind"] == "noisy", 12), "partly"),
    ("few_units", edited("flipping", "n_units", lambda t: t["kind"] == "noisy", 250), "does not hold"),
    ("cheap_edit", edited("flipping", "acc_test_after", None, 0.5), "partly"),
    ("dropout", edited("dropout", "noisy_acc", lambda t: t["mode"] == "drop", 0.5), "partly"),
])
def test_each_rule_reaches_partly_and_does_not_hold(key, tables, expected):
    assert verdict(key, tables) == expected


def test_redundant_does_not_hold_when_every_group_is_critical():
    tables = edited("rewinding", "noisy_acc", lambda t: t["epoch"] == 0, 0.0)
    tables["retraining"]["noisy_acc"] = 0.0
    assert verdict("redundant", tables) == "does not hold"


def test_memorized_does_not_hold_when_neither_condition_does():
    tables = paper_like()
    tables["training"].loc[3, ["noisy_acc", "test_acc"]] = [0.3, 0.5]
    assert verdict("memorized", tables) == "does not hold"


def test_cheap_edit_does_not_hold_when_the_edit_is_costly_and_random_units_flip():
    tables = edited("flipping", "acc_test_after", None, 0.5)
    tables["flipping"]["random_flipped"] = pd.array([True] * len(tables["flipping"]), dtype="boolean")
    assert verdict("cheap_edit", tables) == "does not hold"


def test_spread_partly_and_does_not_hold():
    tables = paper_like()
    noisy = tables["flipping"]["kind"] == "noisy"
    tables["flipping"].loc[noisy, "units"] = pd.Series([["fc4[1]", "fc4[2]", "fc4[3]", "fc4[4]", "fc1[0]"]] * 4,
                                                       index=tables["flipping"].index[noisy])
    assert verdict("spread", tables) == "partly"  # 1 of 5 outside fc4: some, but under a quarter
    tables["flipping"].loc[noisy, "units"] = pd.Series([["fc4[1]"]] * 4, index=tables["flipping"].index[noisy])
    assert verdict("spread", tables) == "does not hold"


def test_dropout_does_not_hold_when_nothing_changes():
    tables = paper_like()
    tables["dropout"].loc[tables["dropout"]["mode"] == "drop", ["noisy_acc", "clean_acc", "test_acc"]] = [1.0, 0.5, 0.4]
    assert verdict("dropout", tables) == "does not hold"


@pytest.mark.parametrize("drop,keys", [
    ("training", ["memorized", "redundant", "not_last"]),
    ("gradients", ["gradient_norm", "cosine"]),
    ("rewinding", ["redundant", "not_last"]),
    ("retraining", ["redundant"]),
    ("flipping", ["few_units", "cheap_edit", "spread"]),
    ("dropout", ["dropout"]),
])
def test_a_missing_table_is_not_measured(drop, keys):
    tables = paper_like()
    del tables[drop]
    numbers = sc.measure(tables, 1.0, UNIT_LAYERS)
    for claim in sc.CLAIMS:
        assert (sc.judge(claim, numbers)[0] == "not measured") == (claim.key in keys), claim.key


def test_a_run_without_noisy_examples_measures_no_claim_about_them():
    tables = paper_like()
    tables["gradients"]["noisy_norm"] = 0.0
    tables["gradients"]["cosine"] = math.nan
    tables["training"]["noisy_acc"] = math.nan
    for table in ("rewinding", "retraining", "dropout"):
        tables[table]["noisy_acc"] = math.nan
    tables["flipping"] = tables["flipping"][tables["flipping"]["kind"] == "clean"]
    numbers = sc.measure(tables, 1.0, UNIT_LAYERS)
    for claim in sc.CLAIMS:
        assert sc.judge(claim, numbers)[0] == "not measured", claim.key


def test_over_seeds_a_claim_holds_on_all_partly_on_some():
    good, bad = sc.measure(paper_like(), 1.0, UNIT_LAYERS), sc.measure(edited("dropout", "noisy_acc", None, 1.0), 1.0, UNIT_LAYERS)
    card = sc.scorecard([good, good, bad]).set_index("claim")
    assert card.loc["memorized", "verdict"] == "holds" and card.loc["memorized", "holds_on"] == "3 of 3"
    assert card.loc["dropout", "verdict"] == "partly" and card.loc["dropout", "holds_on"] == "2 of 3"
    values = [0.02, 0.02, 1.0]
    assert card.loc["dropout", "mean"] == pytest.approx(np.mean(values))
    assert card.loc["dropout", "std"] == pytest.approx(np.std(values, ddof=1)) and card.loc["dropout", "n"] == 3
    assert sc.scorecard([bad, bad]).set_index("claim").loc["dropout", "verdict"] != "holds"


def test_numbers_read_as_percent_units_or_plain():
    row = {"mean": 0.97, "std": 0.012, "n": 5, "unit": "%"}
    assert sc.format_number(row) == "97% ± 1.2% (n=5)"
    assert sc.format_number({"mean": 4.0, "std": math.nan, "n": 1, "unit": "units"}) == "4.0 units"
    assert sc.format_number({"mean": -0.314, "std": math.nan, "n": 1, "unit": ""}) == "-0.31"
    assert sc.format_number({"mean": 0.0132, "std": 0.004, "n": 3, "unit": "points"}) == "1.3 ± 0.4 points lost (n=3)"
    assert sc.format_number({"mean": math.nan, "std": math.nan, "n": 0, "unit": "%"}) == "—"
