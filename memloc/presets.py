"""Named starting points of a run configuration (`--preset NAME`), as overrides of the defaults.

Each preset changes only what its data needs: the smaller data sets need fewer epochs, smaller
batches or an earlier learning-rate peak to memorize every noisy label, as the paper's models
do. `memloc.overrides.resolve` applies a preset on top of the defaults of
`memloc.config.RunConfig`; users override it key by key.

A preset also sizes every architecture of the zoo for its data (`MODEL_OPTIONS`): the model
options a run gets when it does not set `model.options` itself, for the preset's own model and
for any other picked with `model.name`. So `--preset smoke --set model.name=vit` trains a
two-block ViT in seconds, not the default six blocks of width 192 in minutes; options given
with `--set model.options.KEY=...` or a TOML file replace the preset's (all of them).
"""

from __future__ import annotations

from typing import Any

#: Preset name -> overrides by section (the same shape as a TOML file of `--config`).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"name": "digits", "train_size": 400, "test_size": 200},
        "model": {"name": "mlp"},
        "train": {"epochs": 3, "batch_size": 128, "peak_epoch": 1.0},
        "flip": {"n_noisy": 4, "n_clean": 4, "batch_size": 32, "cap": 20, "eval_train": 100, "eval_test": 100, "save_every": 4},
        "retrain": {"max_epochs": 3, "peak_epoch": 1.0},
        "localize": {"n_targets": 4, "save_every": 2, "slimming_steps": 20, "hard_concrete_steps": 20, "inject_steps": 50,
                     "inject_lr": 0.1, "unitmem_others": 64, "eval_train": 100, "eval_test": 100},
    },
    # The paper's architecture at 1/4 width on digits: with nine layer groups it can show that
    # most groups are redundant for memorization and the critical ones are not the last, which
    # the three groups of an MLP cannot (README, "The paper's claims, measured": the candidates).
    "demo": {
        "data": {"name": "digits"},
        "model": {"name": "resnet9"},
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
        "model": {"name": "mlp"},
        "train": {"epochs": 60, "batch_size": 64, "peak_epoch": 12.0},
        "flip": {"n_noisy": 100, "n_clean": 100},
    },
    "fashion-mnist": {
        "data": {"name": "fashion-mnist", "train_size": 5000, "test_size": 2000},
        "model": {"name": "resnet9"},
        "train": {"epochs": 30, "batch_size": 512, "peak_epoch": 6.0},
        # Greedy flipping of a ResNet-9 costs a forward and backward pass of |B| images per unit
        # zeroed: on a CPU 50 + 50 examples with |B| = 256 and a 1,000 + 1,000 evaluation subset
        # keep the stage to a minute.
        "flip": {"n_noisy": 50, "n_clean": 50, "batch_size": 256, "eval_train": 1000, "eval_test": 1000},
    },
    "paper-cifar10-resnet9": {
        "data": {"name": "cifar10"},
        "model": {"name": "resnet9"},
    },
    "paper-mnist-resnet9": {
        "data": {"name": "mnist"},
        "model": {"name": "resnet9"},
    },
    "paper-svhn-resnet9": {
        "data": {"name": "svhn"},
        "model": {"name": "resnet9"},
    },
}
DEFAULT_PRESET = "demo"

# Small models for small data: digits (8x8, 1,437 training images) and the fashion-mnist subset
# (28x28, 5,000); each architecture at roughly the size of the demo's ResNet-9 at 1/4 width.
_SMALL = {
    "mlp": {"hidden": [512, 512]},
    "cnn": {"width": 0.5},
    "resnet9": {"width": 0.25},
    "resnet50": {"width": 0.25},
    "vit": {"dim": 64, "depth": 4, "heads": 4},
}
#: Preset -> architecture -> the model options a run of that preset gets when it sets none.
#: Architectures a preset leaves out get their defaults (the paper presets: full size).
MODEL_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # A few seconds per stage on a CPU for every architecture (tests).
    "smoke": {
        "mlp": {"hidden": [64, 64]},
        "cnn": {"width": 0.25},
        "resnet9": {"width": 0.125},
        "resnet50": {"width": 0.0625},
        "vit": {"dim": 32, "depth": 2, "heads": 2},
    },
    "demo": _SMALL,
    "demo-mlp": _SMALL,
    "fashion-mnist": _SMALL,
    "paper-cifar10-resnet9": {"resnet9": {"width": 1.0}},
    "paper-mnist-resnet9": {"resnet9": {"width": 1.0}},
    "paper-svhn-resnet9": {"resnet9": {"width": 1.0}},
}


def model_options(preset: str, arch: str) -> dict[str, Any]:
    """The options preset `preset` gives architecture `arch` (a copy; {} for its defaults)."""
    return {key: list(value) if isinstance(value, list) else value
            for key, value in MODEL_OPTIONS.get(preset, {}).get(arch, {}).items()}


__all__ = ["PRESETS", "DEFAULT_PRESET", "MODEL_OPTIONS", "model_options"]
