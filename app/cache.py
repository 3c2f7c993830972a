"""Cached access to runs for the explorer's pages: the runs root, the selected run, its
manifest and tables, its models and the live computations on them.

Caching: tables and manifests are data (`st.cache_data`, keyed by the run directory and its
manifest's modification time, so a run that precompute is still writing is re-read when it
changes); opened runs and models are resources keyed the same way. A cached model is shared by
every session and never changed for good: live interventions run inside `intervene(...)`,
which restores it, while holding the model's lock so two sessions never edit it at the same
time. A run whose files are corrupt raises `RunError`; pages show it as an error card and the
other runs stay usable. File names are the run store's business: this module asks it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from app.url import decode_interventions, encode_interventions
from memloc import scorecard
from memloc.attribution import attribute, layers_for, methods_for
from memloc.config import STAGES, TABLE_STAGE
from memloc.data import DataError
from memloc.flipping import flip_examples
from memloc.interventions import Intervention, UnitIndex, ZeroUnits, intervene, unit_count
from memloc.live import live_evaluation
from memloc.overrides import command_for
from memloc.runs import OpenRun, open_run
from memloc.store import (Problem, Run, RunError, Sweep, checkpoints_of, inside, list_runs, list_sweeps, runs_root,
                          tables_of)
from memloc.summary import key_numbers
from models.example_tied_dropout import dropout_mode

#: The models a page can show (`?model=`): the plain variant, or the dropout variant in one of
#: its evaluation modes (PAPER.md section 5), as (variant, mode) and a label.
MODEL_CHOICES = {
    "plain": (("plain", None), "plain model"),
    "test": (("dropout", "test"), "dropout model, test mode"),
    "drop": (("dropout", "drop"), "dropout model, drop mode (memorization units off)"),
}
#: The stage that writes each table (for the "how to add it" message).


# ---------------------------------------------------------------------- runs root and selected run
def selected_runs_root() -> Path:
    """`streamlit run app/main.py -- --runs DIR`, else $MEMLOC_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return runs_root(known.runs)


def create_run_command(root: Path) -> str:
    """The command that creates the demo run where the explorer looks for runs."""
    return f"python -m precompute run --preset demo --out {root / 'demo'}"


def run_names(root: Path) -> list[str]:
    """The runs under `root` by name: its run directories, then each sweep's points as `sweep/point`."""
    names = [run.name for run in list_runs(root)]
    for target in list_sweeps(root):
        try:
            names += [f"{target.name}/{run.name}" for run in target.runs()]
        except RunError:  # a damaged sweep record: the Compare page says why
            continue
    return names


def run_in_root(root: Path, name: str) -> Run | None:
    """The run called `name` under `root` (`run` or `sweep/point`) by the rule that lists them
    (`memloc.store.inside`); None for names that would leave the root or do not name a run there."""
    parts = name.split("/")
    if len(parts) == 2:
        target = sweep_in_root(root, parts[0])
        run = Run(target.path / parts[1]) if target else None
        return run if run and run.exists() and inside(run.path, target.path) else None
    run = Run(root / name)
    return run if len(parts) == 1 and run.exists() and inside(run.path, root) else None


def sweep_names(root: Path) -> list[str]:
    return [target.name for target in list_sweeps(root)]


def sweep_in_root(root: Path, name: str) -> Sweep | None:
    """The sweep called `name` directly under `root`; None for names that would leave the root."""
    target = Sweep(root / name)
    return target if "/" not in name and target.exists() and inside(target.path, root) else None


def _sweep_stamp(target: Sweep) -> tuple[int, ...]:
    return target.stamp()


@st.cache_data(show_spinner=False, max_entries=32)
def _sweep_record(path: str, stamp: tuple[int, ...]) -> dict:
    return Sweep(path).record()


def sweep_record(target: Sweep) -> dict:
    """The sweep's record (`sweep.json`), cached until it changes."""
    return _sweep_record(str(target.path), _sweep_stamp(target))


@st.cache_data(show_spinner=False, max_entries=32)
def _sweep_summary(path: str, stamp: tuple[int, ...]) -> pd.DataFrame:
    return Sweep(path).read_summary()


def sweep_summary(target: Sweep) -> pd.DataFrame:
    """The sweep's `summary.parquet` (RunError when it has none or it is damaged)."""
    return _sweep_summary(str(target.path), _sweep_stamp(target))


@st.cache_data(show_spinner=False, max_entries=256)
def _numbers(path: str, stamp: tuple[int, ...]) -> dict[str, float]:
    return key_numbers(Run(path))


def run_numbers(run: Run) -> dict[str, float]:
    """The run's key numbers (`memloc.summary.key_numbers`), cached until the run changes."""
    return _numbers(str(run.path), _stamp(run))


@st.cache_data(show_spinner=False, max_entries=32)
def _scorecards(path: str, stamp: tuple[int, ...]) -> list[scorecard.Section]:
    return scorecard.scorecards(path)


def scorecards(path: Path) -> list[scorecard.Section]:
    """`memloc.scorecard.scorecards` of a run or sweep directory, cached until it or a point changes."""
    target = Sweep(path)
    stamp = (*target.stamp(), *(s for run in target.runs() for s in run.stamp())) if target.exists() else Run(path).stamp()
    return _scorecards(str(path), stamp)


def current_run() -> Run | None:
    """The run picked in the sidebar (main.py's `run_name` widget), or None when there is none."""
    name = st.session_state.get("run_name")
    return run_in_root(selected_runs_root(), name) if name else None


@st.cache_data(show_spinner=False, max_entries=256)
def _problems(path: str, stamp: tuple[int, ...]) -> list[Problem]:
    return Run(path).verify(checksums=False)


def run_problems(run: Run) -> list[Problem]:
    """What `Run.verify` finds wrong with the run's files (sizes, not checksums: a changed file
    of the same size is refused when it is read), cached until the run changes."""
    return _problems(str(run.path), _stamp(run))


@st.cache_data(show_spinner=False, max_entries=256)
def _health(path: str, stamp: tuple[int, ...]) -> str:
    run = Run(path)
    if run.verify(checksums=False):
        return "damaged"
    stages = run.manifest()["stages"]
    missing = [s for s in STAGES if stages.get(s, {}).get("status") != "complete"]
    return f"lacks {', '.join(missing)}" if missing else "complete"


def run_health(run: Run | None) -> str:
    """A run's health in a word or two, for the run picker: `complete` (every stage of
    `precompute run`), `lacks flip, dropout` (the stages it has not completed: their pages say
    how to add them) or `damaged` (a file missing or of another size, or an unreadable
    manifest); cached until the run changes."""
    return "damaged" if run is None else _health(str(run.path), _stamp(run))


def damage_note(run: Run) -> str | None:
    """A line for the audience and the speaker when the run is damaged (None when it is not)."""
    problems = run_problems(run)
    if not problems:
        return None
    shown = "; ".join(f"`{p.rel}` {p.what}" for p in problems[:3])
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    return (f"Run **{run.name}** is damaged: {shown}{more}. What needs these files cannot be shown. "
            f"Recreate them with `{run.heal_command()}`.")


def show_run_error(run: Run, error: Exception) -> None:
    st.error(f"Run **{run.name}** cannot be shown: {error}")


def _stamp(run: Run) -> tuple[int, ...]:
    return run.stamp()


@st.cache_data(show_spinner=False, max_entries=64)
def _manifest(path: str, stamp: tuple[int, ...]) -> dict:
    return Run(path).manifest()


def manifest(run: Run) -> dict:
    return _manifest(str(run.path), _stamp(run))


def page_run() -> tuple[Run, dict]:
    """The selected run and its manifest; a corrupt run gets an error card and stops the page."""
    run = current_run()
    try:
        info = manifest(run)
    except RunError as error:
        show_run_error(run, error)
        st.stop()
    return run, info


# ---------------------------------------------------------------------- tables
@st.cache_data(show_spinner=False, max_entries=64)
def _table(path: str, name: str, stamp: tuple[int, ...]) -> pd.DataFrame:
    return Run(path).read_table(name)


def table(run: Run, name: str) -> pd.DataFrame:
    """A run's table, cached until the run changes."""
    return _table(str(run.path), name, _stamp(run))


def has_table(info: dict, name: str) -> bool:
    return name in tables_of(info)


def require_tables(run: Run, info: dict, *names: str) -> dict[str, pd.DataFrame] | None:
    """The named tables; if the run lacks one, a note with the command that adds it, and None."""
    missing = [n for n in names if not has_table(info, n)]
    if missing:
        stages = sorted({TABLE_STAGE[n] for n in missing})
        st.info(
            f"Run **{run.name}** has no `{'`, `'.join(missing)}` table{'s' if len(missing) > 1 else ''} yet: it was made "
            f"without the `{'`, `'.join(stages)}` stage. This command adds the missing stages (complete ones are skipped):"
        )
        recorded = list(info["config"].get("stages", []))
        st.code(command_for(info["config"], str(run.path), stages=[*recorded, *[s for s in stages if s not in recorded]]),
                language="bash")
        return None
    try:
        return {n: table(run, n) for n in names}
    except RunError as error:
        show_run_error(run, error)
        return None


def optional_table(run: Run, info: dict, name: str) -> pd.DataFrame | None:
    """A table a page can do without: None, silently, when the run lacks it; when it is damaged,
    the run's error card and None (the page goes on without it)."""
    if not has_table(info, name):
        return None
    try:
        return table(run, name)
    except RunError as error:
        show_run_error(run, error)
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def _labels(path: str, stamp: tuple[int, ...]) -> dict[str, np.ndarray]:
    return Run(path).read_labels()


def run_labels(run: Run) -> dict[str, np.ndarray]:
    """true_label, train_label, is_noisy per training example (cached as data)."""
    return _labels(str(run.path), _stamp(run))


# ---------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading the run's data ...", max_entries=4)
def _opened(path: str, stamp: tuple[int, ...]) -> OpenRun:
    return open_run(Run(path), "cpu")


def opened(run: Run) -> OpenRun:
    """The run's config, data and labels on the CPU (cached as a resource); a run whose data or
    labels cannot be loaded gets an error card and stops the page."""
    try:
        return _opened(str(run.path), _stamp(run))
    except (RunError, DataError) as error:
        show_run_error(run, error)
        st.stop()


@st.cache_resource(show_spinner="Loading the model ...", max_entries=16)
def _model(path: str, stamp: tuple[int, ...], epoch: int | None, variant: str) -> tuple[nn.Module, threading.Lock]:
    model = _opened(path, stamp).model(epoch, variant=variant)
    for p in model.parameters():  # attributions need input gradients only, never weight gradients
        p.requires_grad_(False)
    return model, threading.Lock()


@contextmanager
def model_in_use(run: Run, epoch: int | None = None, variant: str = "plain") -> Iterator[nn.Module]:
    """The cached model of a variant of `run` at `epoch` (default: last), held for this session alone."""
    opened(run)  # a run whose data cannot be loaded stops here with its error card
    try:
        model, lock = _model(str(run.path), _stamp(run), epoch, variant)
    except RunError as error:
        show_run_error(run, error)
        st.stop()
    with lock:
        yield model


def layout(run: Run) -> tuple[list[str], dict[str, int]]:
    """The model's layer groups (input to output) and its unit layers with their unit counts."""
    with model_in_use(run) as model:
        modules = dict(model.named_modules())
        return list(model.layer_groups), {layer: unit_count(modules[layer]) for layer in model.unit_layers}


def model_choices(info: dict) -> dict[str, str]:
    """The models this run offers (`MODEL_CHOICES` keys and labels): the dropout ones once its
    `dropout` stage wrote that variant."""
    offered = MODEL_CHOICES if checkpoints_of(info, "dropout") else {"plain": MODEL_CHOICES["plain"]}
    return {choice: label for choice, (_, label) in offered.items()}


@contextmanager
def chosen_model(run: Run, choice: str = "plain") -> Iterator[nn.Module]:
    """The final model of a `MODEL_CHOICES` entry, in its mode, held for this session."""
    (variant, mode), _ = MODEL_CHOICES[choice]
    with model_in_use(run, variant=variant) as model:
        if mode is None:
            yield model
        else:
            with dropout_mode(model, mode):
                yield model


# ---------------------------------------------------------------------- live computations
@st.cache_data(show_spinner=False, max_entries=128)
def _live(path: str, stamp: tuple[int, ...], items: str, example_ids: tuple[int, ...], choice: str) -> tuple[dict, list]:
    run = Run(path)
    data = opened(run)
    with chosen_model(run, choice) as model:
        result = live_evaluation(model, decode_interventions(items), data.data.train_x, data.labels,
                                 data.data.test_x, data.data.test_labels, list(example_ids), checkpoint=data.checkpoint)
    return {**result.metrics, "sampled": result.sampled}, result.probabilities.tolist()


def live(run: Run, items: list[Intervention], example_ids: list[int], choice: str = "plain") -> tuple[dict, np.ndarray]:
    """Accuracies of the run's final model under `items` and the chosen examples' probabilities
    (N, K), computed with `memloc.live.live_evaluation` and cached by the intervention values."""
    ids = tuple(int(i) for i in example_ids)
    metrics, probs = _live(str(run.path), _stamp(run), encode_interventions(items), ids, choice)
    return metrics, np.asarray(probs, dtype=float).reshape(len(ids), -1 if ids else 0)  # no ids: (0, 0)


@st.cache_data(show_spinner="Flipping the example on the run's model ...", max_entries=256)
def _flip_set(path: str, stamp: tuple[int, ...], example: int) -> tuple[list[str], bool, int]:
    run = Run(path)
    data = opened(run)
    with model_in_use(run) as model:
        result = flip_examples(model, data.data.train_x, data.labels.train_labels, [example], data.config.flip)[0]
        return UnitIndex(model).names(result.units), result.flipped, result.new_prediction


def flip_set(run: Run, example: int) -> tuple[list[str], bool, int]:
    """Greedy flipping (`memloc.flipping.flip_examples`) of one training example on the run's
    final plain model, with the run's `flip` settings, computed now for an example the flip stage
    did not flip and cached: its flip set (`layer[index]`, in the order zeroed), whether its
    prediction left its training label within the cap, and the prediction then."""
    return _flip_set(str(run.path), _stamp(run), int(example))


def method_names(run: Run, choice: str = "plain") -> list[str]:
    """Attribution methods usable on the run's model (`memloc.attribution.methods_for`)."""
    with chosen_model(run, choice) as model:
        return methods_for(model)


def layer_names(run: Run, choice: str, method: str) -> list[str]:
    with chosen_model(run, choice) as model:
        return layers_for(model, method)


@st.cache_data(show_spinner=False, max_entries=256)
def _attributions(path: str, stamp: tuple[int, ...], choice: str, example: int, method: str, layer: str | None,
                  targets: tuple[int, ...], units: tuple[str, ...], baseline: str) -> np.ndarray:
    run = Run(path)
    data = opened(run)
    x = data.data.train_x[example : example + 1].expand(len(targets), -1, -1, -1)  # (T, C, H, W): one row per target
    kwargs = {}
    if method in ("IntegratedGradients", "GradientShap", "Occlusion", "LayerConductance") and baseline == "blank image":
        kwargs["baselines"] = torch.full_like(x, float(data.data.train_x.min()))
    target = torch.as_tensor(targets)
    with chosen_model(run, choice) as model, intervene(model, [ZeroUnits(units)] if units else []):
        values = attribute(model, method, x, target, layer=layer, **kwargs)  # (T, C, H, W), (T, units) or (T, 1|units, H', W')
    values = values.float().cpu().numpy()
    if values.ndim == 4 and method == "LayerConductance":
        return values.sum(axis=(2, 3))  # a conv layer's units, positions summed: (T, units)
    return values if values.ndim == 2 else values.sum(axis=1)  # channels summed: (T, H, W)


def attributions(run: Run, choice: str, example: int, method: str, layer: str | None, targets: list[int],
                 units: tuple[str, ...], baseline: str) -> np.ndarray:
    """Captum attributions (`memloc.attribution.attribute`) of one training example for each class
    in `targets` (one batched call), with `units` zeroed: (T, H, W) maps (input pixels with channels
    summed, or LayerGradCam's map) or LayerConductance per unit (T, units)."""
    return _attributions(str(run.path), _stamp(run), choice, int(example), method, layer,
                         tuple(int(t) for t in targets), tuple(units), baseline)


__all__ = [
    "MODEL_CHOICES", "TABLE_STAGE", "selected_runs_root", "create_run_command", "run_names", "run_in_root",
    "run_problems", "damage_note", "sweep_names", "sweep_in_root", "sweep_record", "sweep_summary", "run_numbers",
    "current_run", "show_run_error", "manifest", "page_run", "table", "has_table", "require_tables", "optional_table",
    "run_labels", "opened", "model_in_use", "layout", "model_choices", "chosen_model", "live", "flip_set", "method_names", "layer_names",
    "attributions", "RunError",
]
