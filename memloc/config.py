"""The configuration of a run: `RunConfig`, one section per part of memloc that has settings.

Each section's settings live with the code that uses them (`memloc.settings` says how they are
declared): `data` in `memloc.data`, `train` in `memloc.train`, `gradients` in
`memloc.gradients`, `rewind` in `memloc.rewinding`, `retrain` in `memloc.retraining`, `flip` in
`memloc.flipping`, `dropout` in `memloc.dropout` (whose example-tied dropout options are the
model zoo's), `localize` in `memloc.localization`. `model` (an architecture of the zoo and its options) is the one section declared
here. This module only composes them and checks what spans sections, building the model once
so that bad architecture options fail before anything runs (the one check that imports torch:
it comes after every section's own, `memloc.lazy`).

Presets, TOML files and `--set key=value` become a `RunConfig` through `memloc.overrides`.
The defaults are PAPER.md's training setting: SGD with momentum 0.9, weight decay 5e-4,
batch size 512, 50 epochs, one-cycle learning rate peaking at 0.1 at epoch 10, 10% label noise.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any

from memloc.data import INPUT_SHAPES, DataSettings
from memloc.dropout import DropoutSettings
from memloc.flipping import FlipSettings
from memloc.gradients import GradientsSettings
from memloc.localization import LocalizeSettings
from memloc.retraining import RetrainSettings
from memloc.rewinding import RewindSettings
from memloc.settings import ConfigError, check, plain, setting
from memloc.train import TrainSettings


@dataclass(frozen=True)
class ModelSettings:
    """The `model` section of a run: an architecture of the zoo (`models.build`) and its options."""

    name: str = setting("mlp", "architecture from the model zoo (mlp, cnn, resnet9, resnet50, vit)")
    options: dict = field(
        default_factory=lambda: types.MappingProxyType({}),  # read-only: configs are values
        metadata={"help": "architecture options, e.g. model.options.width=0.25 (resnet9, cnn) or "
                  "model.options.hidden=[256,256] (mlp); checked by building the model. Bounds: resnet9 width in "
                  "(0, 8] (1 = the paper's), resnet50 width in (0, 4], cnn width in (0, 16]; mlp hidden at most 8 layers, each in [1, 8192]; "
                  "vit patch in [1, 32], dim in [1, 1024], depth in [1, 24], heads in [1, 1024], mlp_ratio in (0, 8]"},
    )

    def __post_init__(self):
        import models

        check(self.name in models.NAMES, "name", f"one of {', '.join(models.NAMES)}", self.name)


#: Stages of `precompute run`, in the order they run. Later stages read what earlier ones wrote.
STAGES: tuple[str, ...] = ("train", "example_gradients", "rewind", "retrain", "flip", "dropout", "localize")

#: The tables each stage writes (the run store knows their files; the explorer names the stage
#: that adds a missing table).
STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "train": ("training", "example_training", "gradients", "gradient_tensors"),
    "example_gradients": ("example_gradients",),
    "rewind": ("rewinding", "rewinding_examples"),
    "retrain": ("retraining",),
    "flip": ("flipping", "flip_units"),
    "dropout": ("dropout", "dropout_examples"),
    "localize": ("localizers", "localizer_units"),
}
#: The stage that writes each table.
TABLE_STAGE: dict[str, str] = {table: stage for stage, tables in STAGE_TABLES.items() for table in tables}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run computes from, checked across sections when built (`ConfigError`)."""

    stages: tuple = setting(STAGES, f"stages to run, a subset of {', '.join(STAGES)}")
    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    gradients: GradientsSettings = field(default_factory=GradientsSettings)
    flip: FlipSettings = field(default_factory=FlipSettings)
    dropout: DropoutSettings = field(default_factory=DropoutSettings)
    rewind: RewindSettings = field(default_factory=RewindSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    localize: LocalizeSettings = field(default_factory=LocalizeSettings)

    def __post_init__(self):
        bad = [s for s in self.stages if s not in STAGES]
        check(not bad and len(self.stages) > 0, "stages", f"a non-empty list from {', '.join(STAGES)}", list(self.stages))
        epochs = self.train.epochs
        late = [e for e in self.gradients.example_epochs if e > epochs]
        check(not late, "gradients.example_epochs", f"epochs in 0..train.epochs={epochs}", list(self.gradients.example_epochs))
        late = [e for e in self.rewind.epochs if e > epochs]
        check(not late, "rewind.epochs", f"epochs in 0..train.epochs={epochs}", list(self.rewind.epochs))
        kept = set(self.train.kept_epochs())
        for stage, key, wanted in (("rewind", "rewind.epochs", self.rewind.epochs),
                                   ("example_gradients", "gradients.example_epochs", self.gradients.example_epochs)):
            lost = sorted(set(wanted) - kept) if stage in self.stages else []
            check(not lost, key, f"kept checkpoints; train.keep_epochs={self.train.keep_epochs!r} does not keep {lost}",
                  list(wanted))
        wants_dropout = "localize" in self.stages and "dropout" in self.localize.benchmarks
        check(not wants_dropout or "dropout" in self.stages, "localize.benchmarks",
              "without dropout unless stage dropout runs (its ground truth is the dropout model)", list(self.localize.benchmarks))
        self._check_models()

    def _check_models(self) -> None:
        """Build the model (and the dropout variant, if the `dropout` stage runs) once on the CPU."""
        import models

        shape = INPUT_SHAPES[self.data.name]
        own = dict(self.model.options).get("example_tied_dropout")
        check(own is None, "model.options.example_tied_dropout",
              "unset (the `dropout` stage trains its own model; configure it with dropout.*)", own)
        try:
            models.build(self.model.name, shape, 10, **dict(self.model.options))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model.options: {e}") from None
        if "dropout" not in self.stages:
            return
        dropout_epochs = self.dropout.epochs or self.train.epochs
        check(self.train.peak_epoch <= dropout_epochs, "dropout.epochs", f"at least train.peak_epoch={self.train.peak_epoch}", dropout_epochs)
        try:
            models.build(self.model.name, shape, 10, **self.model_options("dropout"))
        except ValueError as e:
            raise ConfigError(f"dropout: {e}") from None

    def model_options(self, variant: str = "plain") -> dict[str, Any]:
        """The zoo options of one of the run's models: `plain` (stage train) or `dropout` (stage
        dropout: the same architecture with this run's example-tied dropout)."""
        options = dict(self.model.options)
        if variant == "dropout":
            options["example_tied_dropout"] = self.dropout
        elif variant != "plain":
            raise ValueError(f"model variant must be plain or dropout, got {variant!r}")
        return options

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


#: The sections of a run config, by key prefix.
SECTIONS: dict[str, type] = {
    "data": DataSettings, "model": ModelSettings, "train": TrainSettings, "gradients": GradientsSettings,
    "flip": FlipSettings, "dropout": DropoutSettings, "rewind": RewindSettings, "retrain": RetrainSettings,
    "localize": LocalizeSettings,
}

__all__ = ["ModelSettings", "STAGES", "STAGE_TABLES", "TABLE_STAGE", "RunConfig", "SECTIONS"]
