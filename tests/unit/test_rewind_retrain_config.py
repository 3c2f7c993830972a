"""Config sections `rewind` and `retrain`: defaults, auto epochs, bad values rejected."""

from __future__ import annotations

import pytest

from memloc import overrides
from memloc.presets import PRESETS
from memloc.settings import ConfigError


def test_defaults_follow_the_paper_and_every_preset_runs_both_stages():
    cfg = overrides.resolve("demo")
    assert (cfg.retrain.lr, cfg.retrain.max_epochs, cfg.retrain.patience, cfg.retrain.peak_epoch) == (0.01, 20, 3, 10.0)
    assert (cfg.retrain.momentum, cfg.retrain.weight_decay) == (0.9, 5e-4)
    assert cfg.rewind.include_buffers
    for preset in PRESETS:
        stages = overrides.resolve(preset).stages
        assert stages.index("train") < stages.index("rewind") < stages.index("retrain")


def test_auto_rewind_epochs_are_0_1_then_every_second_and_the_last():
    cfg = overrides.resolve("smoke", overrides=["train.epochs=9"])
    assert cfg.rewind.epochs_for(cfg.train) == [0, 1, 2, 4, 6, 8, 9]
    cfg = overrides.resolve("smoke", overrides=["rewind.epochs=3,0"])
    assert cfg.rewind.epochs_for(cfg.train) == [0, 3]


@pytest.mark.parametrize("override,message", [
    ("rewind.epochs=[0, 4]", "rewind.epochs: epochs in 0..train.epochs=3"),
    ("rewind.epochs=[-1]", "rewind.epochs: a list of epochs"),
    ("rewind.include_buffers=1", "rewind.include_buffers: true or false"),
    ("retrain.max_epochs=0", r"retrain.max_epochs: an integer in \[1, 10000\]"),
    ("retrain.peak_epoch=30.0", "retrain.peak_epoch: in \\(0, retrain.max_epochs=3\\]"),
    ("retrain.patience=0", r"retrain.patience: an integer in \[1, 10000\]"),
    ("retrain.lr=0", r"retrain.lr: a number in \(0, 10\]"),
    ("retrain.batch_size=-2", "retrain.batch_size"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        overrides.resolve("smoke", overrides=[override])
