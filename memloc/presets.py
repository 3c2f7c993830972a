"""Named starting points of a run configuration (`--preset NAME`), as overrides of the defaults.

Each preset changes only what its data needs: the smaller data sets need fewer epochs, smaller
batches or an earlier learning-rate peak to memorize every noisy label, as the paper's models
do. `memloc.overrides.resolve` applies a preset on top of the defaults of
`memloc.config.RunConfig`; users override it key by key.
"""

from __future__ import annotations

from typing import Any

#: Preset name -> overrides by section (the same shape as a TOML file of `--config`).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"name": "digits", "train_size": 400, "test_size": 200},
        "model": {"name": "mlp", "options": {"hidden": [64, 64]}},
        "train": {"epochs": 3, "batch_size": 128, "peak_epoch": 1.0},
        "flip": {"n_noisy": 4, "n_clean": 4, "batch_size": 32, "cap": 20, "eval_train": 100, "eval_test": 100, "save_every": 4},
        "retrain": {"max_epochs": 3, "peak_epoch": 1.0},
    },
    # The paper's architecture at 1/4 width on digits: with nine layer groups it can show that
    # most groups are redundant for memorization and the critical ones are not the last, which
    # the three groups of an MLP cannot (README, "The paper's claims, measured": the candidates).
    "demo": {
        "data": {"name": "digits"},
        "model": {"name": "resnet9", "options": {"width": 0.25}},
        # The paper's optimizer; batch 64 so 1,437 images give enough steps to memorize every
        # noisy label within 60 epochs (peak at 20%, as 10/50).
        "train": {"epochs": 60, "batch_size": 64, "peak_epoch": 12.0},
        # 100 noisy + 100 clean examples with the paper's batch of 512 and cap of 200; the
        # evaluation subset is the whole of digits (fewer than 2,000 examples per split).
        "flip": {"n_noisy": 100, "n_clean": 100},
    },
    # The demo until Dec 2026: an MLP 512-512, every stage in about 80 s; the model of the
    # benchmarks' recorded numbers.
    "demo-mlp": {
        "data": {"name": "digits"},
        "model": {"name": "mlp", "options": {"hidden": [512, 512]}},
        "train": {"epochs": 60, "batch_size": 64, "peak_epoch": 12.0},
        "flip": {"n_noisy": 100, "n_clean": 100},
    },
    "fashion-mnist": {
        "data": {"name": "fashion-mnist", "train_size": 5000, "test_size": 2000},
        "model": {"name": "resnet9", "options": {"width": 0.25}},
        "train": {"epochs": 30, "batch_size": 512, "peak_epoch": 6.0},
        # Greedy flipping of a ResNet-9 costs a forward and backward pass of |B| images per unit
        # zeroed: on a CPU 50 + 50 examples with |B| = 256 and a 1,000 + 1,000 evaluation subset
        # keep the stage to minutes; chunks of 1,024 rows keep its memory near 1 GB.
        "flip": {"n_noisy": 50, "n_clean": 50, "batch_size": 256, "eval_train": 1000, "eval_test": 1000, "chunk_rows": 1024},
    },
    "paper-cifar10-resnet9": {
        "data": {"name": "cifar10"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
    "paper-mnist-resnet9": {
        "data": {"name": "mnist"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
    "paper-svhn-resnet9": {
        "data": {"name": "svhn"},
        "model": {"name": "resnet9", "options": {"width": 1.0}},
    },
}
DEFAULT_PRESET = "demo"

__all__ = ["PRESETS", "DEFAULT_PRESET"]
