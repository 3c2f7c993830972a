"""Opening a run: its config, data, labels and models, as precompute and the explorer need them.

The run store (`memloc.store`) knows the files; this module knows what they mean: it rebuilds
the config from the manifest, reloads the same data subset (checked against the manifest's
fingerprint), applies the recorded labels, and builds models from checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import models
from memloc import data as data_mod
from memloc.config import RunConfig, from_dict
from memloc.evaluate import Labels
from memloc.store import Run, RunError


def load_data(cfg: RunConfig) -> data_mod.Dataset:
    """The data set of a run config: loaded from the data root and subsampled as configured."""
    ds = data_mod.load(cfg.data.name, cfg.data.root or None, cfg.data.download)
    return data_mod.subsample(ds, cfg.data.train_size or None, cfg.data.test_size or None, cfg.data.subset_seed)


def make_labels(cfg: RunConfig, ds: data_mod.Dataset) -> Labels:
    """PAPER.md's label noise on the training labels, seeded by `data.noise_seed`."""
    train, is_noisy = data_mod.apply_label_noise(ds.train_y, ds.num_classes, cfg.data.noise_frac, cfg.data.noise_seed)
    return Labels(ds.train_y, train, is_noisy)


#: The models a run trains: `main` (stage train) and `dropout` (stage dropout: the same
#: architecture with example-tied dropout, PAPER.md section 5), and their checkpoint folders.
VARIANTS = {"main": None, "dropout": "dropout"}


def _model_options(cfg: RunConfig, variant: str) -> dict:
    if variant not in VARIANTS:
        raise RunError(f"model variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    options = dict(cfg.model.options)
    if variant == "dropout":
        options["example_tied_dropout"] = cfg.dropout.model_option()
    return options


def build_model(cfg: RunConfig, ds: data_mod.Dataset, variant: str = "main") -> nn.Module:
    """A freshly initialized model of the run's architecture, seeded by `train.seed` (the
    dropout variant adds no parameters, so it starts from the same weights as the main model)."""
    torch.manual_seed(cfg.train.seed)
    return models.build(cfg.model.name, ds.input_shape, ds.num_classes, **_model_options(cfg, variant))


@dataclass
class OpenRun:
    """A run with its config, data and labels loaded on one device."""

    run: Run
    config: RunConfig
    data: data_mod.Dataset
    labels: Labels
    device: torch.device

    def __post_init__(self):
        self._checkpoints: dict[int, dict[str, torch.Tensor]] = {}

    def checkpoint(self, epoch: int) -> dict[str, torch.Tensor]:
        """The state dict of checkpoint `epoch` on the device, read once and then cached
        (the loader that `memloc.interventions.intervene` takes for `Rewind`)."""
        if epoch not in self._checkpoints:
            self._checkpoints[epoch] = self.run.read_checkpoint(epoch, self.device)
        return self._checkpoints[epoch]

    def model(self, epoch: int | None = None, variant: str = "main") -> nn.Module:
        """The model at checkpoint `epoch` (default: the last), in eval mode on the device.

        `variant="dropout"`: the example-tied dropout model of stage `dropout`; choose its mode
        with `models.example_tied_dropout.set_mode(model, "test" | "drop" | "train")` before use.
        """
        options = _model_options(self.config, variant)
        epochs = self.run.checkpoint_epochs(VARIANTS[variant])
        if not epochs:
            raise RunError(f"run {self.run.name} has no checkpoints yet; run `python -m precompute run --out {self.run.path}`")
        epoch = epochs[-1] if epoch is None else epoch
        if epoch not in epochs:
            raise RunError(f"run {self.run.name} has no checkpoint for epoch {epoch} (it has {epochs[0]}..{epochs[-1]})")
        model = models.build(self.config.model.name, self.data.input_shape, self.data.num_classes, **options)
        model.load_state_dict(self.run.read_checkpoint(epoch, "cpu", VARIANTS[variant]))
        return model.to(self.device).eval()


def open_run(run: Run, device: str | torch.device = "cpu") -> OpenRun:
    """Load a run's config, data (checked against its fingerprint) and recorded labels."""
    manifest = run.manifest()
    cfg = from_dict(manifest["config"])
    ds = load_data(cfg)
    if data_mod.fingerprint(ds) != manifest["data_fingerprint"]:
        raise RunError(
            f"the {cfg.data.name} data found now differs from the data run {run.name} was trained on "
            "(fingerprint mismatch); point --data-root / $MEMLOC_DATA at the original files"
        )
    recorded = run.read_labels()
    labels = Labels(
        torch.from_numpy(recorded["true_label"]),
        torch.from_numpy(recorded["train_label"]),
        torch.from_numpy(recorded["is_noisy"]),
    )
    if not torch.equal(labels.true, ds.train_y):
        raise RunError(f"labels.npz of run {run.name} does not match its data set; run precompute again")
    device = torch.device(device)
    return OpenRun(run, cfg, ds.to(device), labels.to(device), device)
