"""Summaries of run tables and the live sample: memorization epochs, noisy share, sample ids."""

from __future__ import annotations

import numpy as np
import pandas as pd

from memloc.gradients import noisy_share
from memloc.live import sample_ids
from memloc.train import memorized_from


def test_memorized_from_is_the_start_of_the_final_run_of_correct_epochs():
    correct = {  # example -> correct in epochs 1..5
        0: [False, True, False, True, True],  # memorized for good from epoch 4
        1: [True, True, True, True, True],  # from epoch 1
        2: [True, True, True, True, False],  # forgotten in the last epoch: never
        3: [False, False, False, False, False],  # clean: not reported
    }
    table = pd.DataFrame([{"example_id": i, "epoch": e + 1, "loss": 0.0, "correct": c}
                          for i, cs in correct.items() for e, c in enumerate(cs)])
    out = memorized_from(table, np.array([True, True, True, False]))
    assert out["example_id"].tolist() == [0, 1, 2]
    assert out["memorized_from"].tolist()[:2] == [4, 1]
    assert pd.isna(out["memorized_from"].iloc[2])


def test_noisy_share():
    out = noisy_share(pd.DataFrame({"clean_norm": [3.0, 1.0], "noisy_norm": [1.0, 1.0]}))
    assert out["noisy_share"].tolist() == [0.25, 0.5]


def test_sample_ids_keeps_small_sets_whole_and_samples_large_ones_the_same_way():
    assert sample_ids(5, 10).tolist() == [0, 1, 2, 3, 4]
    a, b = sample_ids(50_000, 5000), sample_ids(50_000, 5000)
    assert len(a) == 5000 and len(set(a.tolist())) == 5000 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
