"""Opening a run: its config, data, labels and models, as precompute, the explorer and notebooks need them.

The run store (`memloc.store`) knows the files; this module knows what they mean: it rebuilds
the config from the manifest, reloads the same data subset (checked against the manifest's
fingerprint), applies the recorded labels, and builds either of the run's models (its
*variants*, `plain` and `dropout`) from their checkpoints. In a notebook:

    import memloc
    opened = memloc.open_run("runs/demo")
    model = opened.model()          # the plain variant at its last epoch, eval mode
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import models
from memloc import data as data_mod
from memloc.config import RunConfig
from memloc.data import Labels
from memloc.lazy import lazy
from memloc.overrides import from_dict
from memloc.store import Run, RunError

torch = lazy("torch")
nn = lazy("torch.nn")


def build_model(cfg: RunConfig, ds: data_mod.Dataset, variant: str = "plain") -> nn.Module:
    """A freshly initialized model of the run's architecture, seeded by `train.seed` (the
    dropout variant adds no parameters, so it starts from the same weights as the plain one)."""
    torch.manual_seed(cfg.train.seed)
    return models.build(cfg.model.name, ds.input_shape, ds.num_classes, **cfg.model_options(variant))


def checkpoint_disk(cfg: RunConfig) -> dict[str, tuple[int, int]]:
    """What a run's checkpoints take on disk, per variant it trains: (how many are kept, bytes
    of one), from the model built once on the CPU (the tables come on top, usually far less)."""
    out = {}
    variants = ["plain", *(["dropout"] if "dropout" in cfg.stages else [])]
    for variant in variants:
        model = models.build(cfg.model.name, data_mod.INPUT_SHAPES[cfg.data.name], 10, **cfg.model_options(variant))
        size = sum(math.prod(t.shape) * t.element_size() for t in model.state_dict().values())
        epochs = cfg.train.epochs if variant == "plain" else cfg.dropout.train_settings(cfg.train).epochs
        out[variant] = (len(cfg.train.kept_epochs(epochs)), size)
    return out


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
        """The plain variant's state dict of checkpoint `epoch` on the device, read once and then
        cached (the loader that `memloc.interventions.intervene` takes for `Rewind`)."""
        if epoch not in self._checkpoints:
            self._checkpoints[epoch] = self.run.read_checkpoint(epoch, self.device)
        return self._checkpoints[epoch]

    def model(self, epoch: int | None = None, variant: str = "plain") -> nn.Module:
        """A variant's model at checkpoint `epoch` (default: the last), in eval mode on the device.

        `variant="dropout"`: the example-tied dropout model of stage `dropout`; choose its mode
        with `models.example_tied_dropout.set_mode(model, "test" | "drop" | "train")` before use.
        """
        try:
            options = self.config.model_options(variant)
        except ValueError as e:
            raise RunError(str(e)) from None
        epochs = self.run.checkpoint_epochs(variant)
        if not epochs:
            stage = "train" if variant == "plain" else "dropout"
            raise RunError(f"run {self.run.name} has no checkpoints of its {variant} model yet (stage {stage}); "
                           f"run `python -m precompute run --out {self.run.path}`")
        epoch = epochs[-1] if epoch is None else epoch
        if epoch not in epochs:
            raise RunError(f"run {self.run.name} has no checkpoint for epoch {epoch} (it keeps {_ranges(epochs)}; "
                           "train.keep_epochs says which are kept)")
        model = models.build(self.config.model.name, self.data.input_shape, self.data.num_classes, **options)
        model.load_state_dict(self.run.read_checkpoint(epoch, "cpu", variant))
        return model.to(self.device).eval()


def _ranges(epochs: list[int]) -> str:
    """[0, 1, 2, 5, 10, 15] -> "0-2, 5, 10, 15"."""
    parts, start = [], epochs[0]
    for prev, e in zip(epochs, [*epochs[1:], None]):
        if e is None or e != prev + 1:
            parts.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = e
    return ", ".join(parts)


def open_run(run: Run | str | os.PathLike, device: str | torch.device = "cpu") -> OpenRun:
    """Load a run's config, data (checked against its fingerprint) and recorded labels."""
    run = run if isinstance(run, Run) else Run(run)
    manifest = run.manifest()
    cfg = from_dict(manifest["config"])
    ds = data_mod.load_data(cfg.data)
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
    if not torch.equal(labels.true_labels, ds.true_labels):
        raise RunError(f"labels.npz of run {run.name} does not match its data set; run precompute again")
    device = torch.device(device)
    return OpenRun(run, cfg, ds.to(device), labels.to(device), device)
