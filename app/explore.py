"""Helpers the analysis pages share: the page's run, charts with downloads, missing tables,
cached models, and the URL state of examples and interventions.

Caching: tables are data (`app.common.table`, keyed by the manifest's modification time);
opened runs and models are resources keyed the same way. A cached model is shared by every
session and never changed for good: live interventions run inside `intervene(...)`, which
restores it, while holding the model's lock so two sessions never edit it at the same time.
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch
from torch import nn

from app.common import RunError, current_run, manifest, show_run_error, table
from memloc.attribution import attribute, layers_for, methods_for
from memloc.data import DataError
from memloc.explore import LIVE_TEST_LIMIT, LIVE_TRAIN_LIMIT, live_evaluation, stage_command
from memloc.interventions import Intervention, Rewind, ZeroUnits, intervene, parse_unit, unit_count
from memloc.runs import OpenRun, open_run
from memloc.store import MANIFEST, Run

#: The stage that writes each table (for the "how to add it" message).
TABLE_STAGE = {
    "gradients": "train",
    "gradient_tensors": "train",
    "example_gradients": "example_gradients",
    "rewinding": "rewind",
    "rewinding_examples": "rewind",
    "retraining": "retrain",
    "flipping": "flip",
    "flip_units": "flip",
    "dropout": "dropout",
    "dropout_examples": "dropout",
}


# ---------------------------------------------------------------------- the page's run
def page_run() -> tuple[Run, dict]:
    """The selected run and its manifest; a corrupt run gets an error card and stops the page."""
    run = current_run()
    try:
        info = manifest(run)
    except RunError as error:
        show_run_error(run, error)
        st.stop()
    return run, info


def has_table(info: dict, name: str) -> bool:
    return f"tables/{name}.parquet" in info["files"]


def require_tables(run: Run, info: dict, *names: str) -> dict[str, pd.DataFrame] | None:
    """The named tables; if the run lacks one, a note with the command that adds it, and None."""
    missing = [n for n in names if not has_table(info, n)]
    if missing:
        stages = sorted({TABLE_STAGE.get(n, "?") for n in missing})
        st.info(
            f"Run **{run.name}** has no `{'`, `'.join(missing)}` table{'s' if len(missing) > 1 else ''} yet: it was made before the "
            f"`{'`, `'.join(stages)}` stage existed, or without it. With the current memloc, this "
            "command adds the missing stages (complete ones are skipped):"
        )
        st.code(stage_command(info["config"], str(run.path)), language="bash")
        return None
    try:
        return {n: table(run, n) for n in names}
    except RunError as error:
        show_run_error(run, error)
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def _labels(path: str, stamp: float) -> dict[str, np.ndarray]:
    return Run(path).read_labels()


def run_labels(run: Run) -> dict[str, np.ndarray]:
    """true_label, train_label, is_noisy per training example (cached as data)."""
    return _labels(str(run.path), _stamp(run))


# ---------------------------------------------------------------------- charts
@st.cache_data(show_spinner=False, max_entries=32)
def _svg(spec: str) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec)


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, run: Run) -> None:
    """An Altair chart with downloads of its data (CSV) and of the figure (SVG); both files are
    made only when clicked, so a rerun does not pay for them."""
    st.altair_chart(chart, width="stretch")
    row = st.container(horizontal=True)
    row.download_button("Data (CSV)", lambda: data.to_csv(index=False), file_name=f"{run.name}_{name}.csv",
                         mime="text/csv", key=f"csv_{name}", on_click="ignore")
    spec = chart.to_json()
    row.download_button("Figure (SVG)", lambda: _svg(spec), file_name=f"{run.name}_{name}.svg",
                          mime="image/svg+xml", key=f"svg_{name}", on_click="ignore")


def legend_pick(field: str) -> alt.Parameter:
    """Click a legend entry to highlight its series (shift-click for several)."""
    return alt.selection_point(fields=[field], bind="legend")


def heatmap(data: pd.DataFrame, x: str, y: str, value: str, title: str, domain=(0, 1), scheme="viridis",
            y_sort: list | None = None, tooltip: list | None = None) -> alt.Chart:
    return (
        alt.Chart(data, title=title)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O"),
            y=alt.Y(f"{y}:N", sort=y_sort),
            color=alt.Color(f"{value}:Q", scale=alt.Scale(domain=list(domain), scheme=scheme)),
            tooltip=tooltip or [f"{y}:N", f"{x}:O", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        # Sizes in steps per cell: a fixed pixel height squashes a discrete axis in Streamlit.
        .properties(width=alt.Step(max(4, min(36, 360 // max(1, data[x].nunique())))), height=alt.Step(22))
    )


# ---------------------------------------------------------------------- models
def _stamp(run: Run) -> float:
    return (run.path / MANIFEST).stat().st_mtime


@st.cache_resource(show_spinner="Loading the run's data ...", max_entries=4)
def _opened(path: str, stamp: float) -> OpenRun:
    return open_run(Run(path), "cpu")


def opened(run: Run) -> OpenRun:
    """The run's config, data and labels on the CPU (cached as a resource); a run whose data or
    labels cannot be loaded gets an error card and stops the page."""
    try:
        return _opened(str(run.path), _stamp(run))
    except (RunError, DataError) as error:
        show_run_error(run, error)
        st.stop()


def layout(run: Run) -> tuple[list[str], dict[str, int]]:
    """The model's layer groups (input to output) and its unit layers with their unit counts."""
    with model_in_use(run) as model:
        modules = dict(model.named_modules())
        return list(model.layer_groups), {layer: unit_count(modules[layer]) for layer in model.unit_layers}


def dropout_variant_available() -> bool:
    """Whether this memloc can load a run's example-tied dropout model (`OpenRun.model(variant=)`)."""
    return "variant" in inspect.signature(OpenRun.model).parameters


@st.cache_resource(show_spinner="Loading the model ...", max_entries=16)
def _model(path: str, stamp: float, epoch: int | None, variant: str | None) -> tuple[nn.Module, threading.Lock]:
    run = _opened(path, stamp)
    model = run.model(epoch) if variant is None else run.model(epoch, variant=variant)
    for p in model.parameters():  # attributions need input gradients only, never weight gradients
        p.requires_grad_(False)
    return model, threading.Lock()


@contextmanager
def model_in_use(run: Run, epoch: int | None = None, variant: str | None = None) -> Iterator[nn.Module]:
    """The cached model of `run` at `epoch` (default: last), held for this session alone."""
    opened(run)  # a run whose data cannot be loaded stops here with its error card
    try:
        model, lock = _model(str(run.path), _stamp(run), epoch, variant)
    except RunError as error:
        show_run_error(run, error)
        st.stop()
    with lock:
        yield model


#: The models an example page can show: the plain model, or the example-tied dropout model in one
#: of its evaluation modes (PAPER.md section 5).
VARIANTS = {
    "plain": "plain model",
    "test": "dropout model, test mode",
    "drop": "dropout model, drop mode (memorization units off)",
}


def dropout_modes(run: Run, info: dict) -> dict[str, str]:
    """The variants this run offers: the dropout ones once its `dropout` stage wrote that model."""
    if dropout_variant_available() and any(f.startswith("checkpoints/dropout/") for f in info["files"]):
        return VARIANTS
    return {"plain": VARIANTS["plain"]}


@contextmanager
def variant_model(run: Run, variant: str = "plain") -> Iterator[nn.Module]:
    """The final model of a variant, in the variant's evaluation mode, held for this session."""
    if variant == "plain":
        with model_in_use(run) as model:
            yield model
        return
    from models.example_tied_dropout import dropout_mode

    with model_in_use(run, variant="dropout") as model, dropout_mode(model, variant):
        yield model


@st.cache_data(show_spinner=False, max_entries=128)
def _live(path: str, stamp: float, items: str, example_ids: tuple[int, ...], variant: str) -> tuple[dict, list]:
    run = Run(path)
    data = opened(run)
    with variant_model(run, variant) as model:
        result = live_evaluation(model, decode_interventions(items), data.data.train_x, data.labels,
                                 data.data.test_x, data.data.test_y, list(example_ids), checkpoint=data.checkpoint)
    return {**result.metrics, "sampled": result.sampled}, result.probabilities.tolist()


def live(run: Run, items: list[Intervention], example_ids: list[int], variant: str = "plain") -> tuple[dict, np.ndarray]:
    """Accuracies of the run's final model under `items` and the chosen examples' probabilities
    (N, K), computed with `memloc.explore.live_evaluation` and cached by the intervention values."""
    ids = tuple(int(i) for i in example_ids)
    metrics, probs = _live(str(run.path), _stamp(run), encode_interventions(items), ids, variant)
    return metrics, np.asarray(probs, dtype=float).reshape(len(ids), -1)


def method_names(run: Run, variant: str = "plain") -> list[str]:
    """Attribution methods usable on the run's model (`memloc.attribution.methods_for`)."""
    with variant_model(run, variant) as model:
        return methods_for(model)


def layer_names(run: Run, variant: str, method: str) -> list[str]:
    with variant_model(run, variant) as model:
        return layers_for(model, method)


@st.cache_data(show_spinner=False, max_entries=256)
def _attributions(path: str, stamp: float, variant: str, example: int, method: str, layer: str | None,
                  targets: tuple[int, ...], units: tuple[str, ...], baseline: str) -> np.ndarray:
    run = Run(path)
    data = opened(run)
    x = data.data.train_x[example : example + 1].expand(len(targets), -1, -1, -1)  # (T, C, H, W): one row per target
    kwargs = {}
    if method in ("IntegratedGradients", "GradientShap", "Occlusion", "LayerConductance") and baseline == "blank image":
        kwargs["baselines"] = torch.full_like(x, float(data.data.train_x.min()))
    target = torch.as_tensor(targets)
    with variant_model(run, variant) as model, intervene(model, [ZeroUnits(units)] if units else []):
        values = attribute(model, method, x, target, layer=layer, **kwargs)  # (T, C, H, W), (T, units) or (T, 1|units, H', W')
    values = values.float().cpu().numpy()
    if values.ndim == 4 and method == "LayerConductance":
        return values.sum(axis=(2, 3))  # a conv layer's units, positions summed: (T, units)
    return values if values.ndim == 2 else values.sum(axis=1)  # channels summed: (T, H, W)


def attributions(run: Run, variant: str, example: int, method: str, layer: str | None, targets: list[int],
                 units: tuple[str, ...], baseline: str) -> np.ndarray:
    """Captum attributions (`memloc.attribution.attribute`) of one training example for each class
    in `targets` (one batched call), with `units` zeroed: (T, H, W) maps (input pixels with channels
    summed, or LayerGradCam's map) or LayerConductance per unit (T, units)."""
    return _attributions(str(run.path), _stamp(run), variant, int(example), method, layer,
                         tuple(int(t) for t in targets), tuple(units), baseline)


def accuracy_metrics(after: dict, before: dict | None = None) -> None:
    """Clean / memorized / test accuracy as metrics, with the change from `before`."""
    cols = st.columns(4)
    names = [("clean_acc", "clean accuracy"), ("noisy_acc", "memorized (noisy)"),
             ("noisy_true_acc", "noisy vs true label"), ("test_acc", "test accuracy")]
    for col, (key, label) in zip(cols, names):
        delta = None if before is None else f"{(after[key] - before[key]) * 100:+.2f} pp"
        col.metric(label, f"{after[key]:.2%}", delta=delta, delta_color="off" if key == "noisy_acc" else "normal")
    if after.get("sampled"):
        st.caption(f"On a fixed sample of {LIVE_TRAIN_LIMIT:,} training and {LIVE_TEST_LIMIT:,} test examples (large run).")


# ---------------------------------------------------------------------- URL state
def url_int(param: str, key: str, valid: Callable[[int], bool], default: int) -> None:
    """Initialize widget state `key` from query parameter `param` (if valid) on first use."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    st.session_state[key] = value if value is not None and valid(value) else default


def encode_interventions(items: list[Intervention]) -> str:
    """A short, readable URL form: `rewind:fc1@0+rewind:fc2@0`, `zero:fc1[3],fc2[7]`."""
    parts = []
    for item in items:
        if isinstance(item, Rewind):
            parts.append(f"rewind:{item.group}@{item.epoch}" + ("" if item.include_buffers else "!nobuf"))
        else:
            parts.append("zero:" + ",".join(item.units))
    return "+".join(parts)


def decode_interventions(text: str | None) -> list[Intervention]:
    """The inverse of `encode_interventions`; anything malformed gives an empty list."""
    items: list[Intervention] = []
    try:
        for part in (text or "").split("+"):
            kind, _, rest = part.partition(":")
            if kind == "rewind":
                body, _, flag = rest.partition("!")
                group, _, epoch = body.rpartition("@")
                items.append(Rewind(group, int(epoch), flag != "nobuf"))
            elif kind == "zero" and rest:
                units = tuple(rest.split(","))
                for unit in units:
                    parse_unit(unit)
                items.append(ZeroUnits(units))
            elif part:
                return []
    except ValueError:
        return []
    return items


# ---------------------------------------------------------------------- images
def image_of(x: torch.Tensor) -> np.ndarray:
    """A (C, H, W) image normalized to [-1, 1] as uint8 (H*s, W*s[, 3]), enlarged by pixel
    repetition so small images stay sharp (s chosen to give about 112 pixels)."""
    c, h, w = x.shape
    s = max(1, 112 // max(h, w))
    img = ((x.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()  # (C, H, W)
    img = img.repeat(s, axis=1).repeat(s, axis=2)  # (C, H*s, W*s)
    return img[0] if c == 1 else img.transpose(1, 2, 0)


def class_name(classes: tuple[str, ...], k: int) -> str:
    return f"{k} ({classes[k]})" if classes[k] != str(k) else str(k)


__all__ = [
    "TABLE_STAGE", "page_run", "has_table", "require_tables", "run_labels", "show_chart", "legend_pick", "heatmap", "opened",
    "layout",
    "dropout_variant_available", "model_in_use", "VARIANTS", "dropout_modes", "variant_model", "live", "method_names",
    "layer_names", "attributions", "accuracy_metrics", "url_int", "encode_interventions", "decode_interventions",
    "image_of", "class_name",
]
