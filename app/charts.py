"""Charts and widgets the explorer's pages share: Altair charts with downloads, heatmaps,
accuracy metrics, images and class names.

Population names come from `memloc.evaluate.POPULATIONS`, so every page labels clean,
memorized, noisy-vs-true and test examples the same way; `COLOURS` gives each (and each model,
mode and control) one colour on every page, `LABELS` each table column its human name.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from memloc.evaluate import POPULATIONS, accuracy_column
from memloc.live import LIVE_TEST_LIMIT, LIVE_TRAIN_LIMIT
from memloc.store import Run

# ---------------------------------------------------------------------- one palette, one vocabulary
# Okabe & Ito's colours, told apart with every common colour-vision deficiency (and in greyscale
# mostly by lightness): a concept keeps its colour on every page.
BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY, BLACK, GREY = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
#: The unedited model (trained, nothing rewound or zeroed; the plain model; a random control)
#: and the model with memorization taken out (an edit; drop mode).
UNEDITED, EDITED = GREY, BLACK

#: The rows of the `dropout` table: the dropout model in each mode, and the plain model.
DROPOUT_MODES = {"plain": "plain model", "train": "dropout: train mode (own masks)", "test": "dropout: test mode",
                 "drop": "dropout: drop mode"}

#: Each label a chart shows for a population, a kind of example, a model or a control, and its colour.
COLOURS = {
    POPULATIONS["clean"]: BLUE, "clean examples": BLUE,
    POPULATIONS["noisy"]: VERMILLION, "noisy": VERMILLION, "noisy examples": VERMILLION,
    POPULATIONS["noisy_true"]: GREEN,
    POPULATIONS["test"]: PURPLE,
    DROPOUT_MODES["plain"]: UNEDITED, DROPOUT_MODES["train"]: ORANGE, DROPOUT_MODES["test"]: SKY, DROPOUT_MODES["drop"]: EDITED,
    "trained model": UNEDITED, "greedy (flip set)": EDITED, "random (same number)": UNEDITED,
}

#: Colours for series that are none of those concepts (a sweep's settings), in Okabe and Ito's order.
SERIES = [BLUE, ORANGE, GREEN, VERMILLION, SKY, PURPLE, BLACK]  # (not its yellow: unreadable on white)

#: Human names of the tables' columns, for every axis, legend, tooltip and table a page shows
#: (downloads keep the columns' own names).
LABELS = {
    **{accuracy_column(p): label for p, label in POPULATIONS.items()},
    "example_id": "example", "group": "layer group", "kind": "kind", "epoch": "epoch",
    "clean_norm": "clean gradient norm", "noisy_norm": "noisy gradient norm", "total_norm": "gradient norm",
    "grad_norm": "gradient norm", "cosine": "cosine(clean, noisy gradient)", "noisy_share": "noisy share of the gradient norm",
    "n_units": "units to flip", "new_prediction": "new prediction", "train_label": "training label",
    "training_label": "training label", "true_label": "true label", "memorized_from": "memorized from epoch",
    "n_examples": "examples", "n_noisy": "noisy examples", "n_clean": "clean examples",
}


def human(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with its columns under their human names (`LABELS`), to show it."""
    return table.rename(columns=LABELS)


def colour(field: str, labels: list[str], colours: list[str] | None = None, title: str | None = None) -> alt.Color:
    """A colour encoding of `field`, whose values are `labels`, each in its colour of `COLOURS`
    (or of `colours`), in the legend's order, under the chart (long labels are never cut)."""
    return alt.Color(f"{field}:N", title=title, sort=labels, legend=alt.Legend(orient="bottom", labelLimit=0),
                     scale=alt.Scale(domain=labels, range=colours or [COLOURS[label] for label in labels]))


#: Viridis sampled from input (dark) to 85% (its last pale yellows read badly on white).
_RAMP = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30"]


def group_colours(order: list[str]) -> alt.Scale:
    """Layer groups in depth order, input dark to output light; `none` (the control: no group
    changed) in the unedited model's grey."""
    groups = [g for g in order if g != "none"]
    at = np.linspace(0, len(_RAMP) - 1, max(2, len(groups)))[: len(groups)]
    rgb = [np.array([int(h[i : i + 2], 16) for i in (1, 3, 5)]) for h in _RAMP]
    mixed = [rgb[int(a)] + (a - int(a)) * (rgb[min(int(a) + 1, len(rgb) - 1)] - rgb[int(a)]) for a in at]
    colours = {g: "#" + "".join(f"{round(v):02x}" for v in c) for g, c in zip(groups, mixed)}
    return alt.Scale(domain=order, range=[colours.get(g, UNEDITED) for g in order])


def projector(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """A chart legible at the back of a room: large type, taller plots, horizontal x labels,
    legend and y labels never cut."""
    return (chart.configure_axis(labelFontSize=16, titleFontSize=16)
            .configure_axisX(labelAngle=0)
            .configure_axisY(labelLimit=0)
            .configure_legend(labelFontSize=16, titleFontSize=16, labelLimit=0, titleLimit=0, symbolSize=200)
            .configure_header(labelFontSize=16, titleFontSize=16)
            .configure_title(fontSize=19, anchor="start", offset=10)
            # Streamlit fits the whole chart, axes and legend included, into this height.
            .configure_view(continuousHeight=440))


@st.cache_data(show_spinner=False, max_entries=32)
def _svg(spec: str) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec)


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, run: Run | str) -> None:
    """An Altair chart, full width and `projector`-sized, with downloads of its data (CSV) and of
    the figure (SVG), named after the run (or sweep) and `name`; both files are made only when
    clicked, so a rerun does not pay."""
    prefix = run if isinstance(run, str) else run.name
    chart = projector(chart)
    st.altair_chart(chart, width="stretch")
    row = st.container(horizontal=True)
    row.download_button("Data (CSV)", lambda: data.to_csv(index=False), file_name=f"{prefix}_{name}.csv",
                        mime="text/csv", key=f"csv_{name}", on_click="ignore")
    spec = chart.to_json()
    row.download_button("Figure (SVG)", lambda: _svg(spec), file_name=f"{prefix}_{name}.svg",
                        mime="image/svg+xml", key=f"svg_{name}", on_click="ignore")


def legend_pick(field: str) -> alt.Parameter:
    """Click a legend entry to highlight its series (shift-click for several)."""
    return alt.selection_point(fields=[field], bind="legend")


def epoch_x(field: str = "epoch", title: str = "epoch") -> alt.X:
    """An x axis of epochs: integer ticks (1, 2, 3, never 0.0, 0.5, 1.0)."""
    return alt.X(f"{field}:Q", title=title, axis=alt.Axis(format="d", tickMinStep=1))


def bar_labels(base: alt.Chart, value: str, fmt: str = ".0%", size: int = 16) -> alt.Chart:
    """Each bar's value written above it, for the bars drawn from `base` (the chart with the
    bars' x / offset encodings, without their y): a bar of height 0 is invisible, so 0% is
    written "0%" and a missing value (NaN) "n/a" at the baseline. Layer it on the bars."""
    return (
        base.transform_calculate(
            bar_label=f"isValid(datum['{value}']) && isFinite(datum['{value}']) ? format(datum['{value}'], '{fmt}') : 'n/a'",
            bar_top=f"isValid(datum['{value}']) && isFinite(datum['{value}']) ? datum['{value}'] : 0",
        )
        .mark_text(baseline="bottom", dy=-3, fontSize=size, color="#333333")
        .encode(y=alt.Y("bar_top:Q"), text="bar_label:N")
    )


def fitted(values, centre: float | None = None) -> tuple[float, float]:
    """A colour scale's domain fitted to `values` (a fixed 0-1 paints values of 0.1-0.5, or all
    near 1, in one colour); symmetric about `centre` when given (a diverging scale)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return (0.0, 1.0)
    if centre is not None:
        reach = float(np.abs(finite - centre).max()) or 1.0
        return (centre - reach, centre + reach)
    lo, hi = float(finite.min()), float(finite.max())
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


#: The heatmaps' sequential colours: one hue, pale to dark (not its palest end: white on white).
SEQUENTIAL = alt.SchemeParams("blues", extent=[0.12, 1])


def heatmap(data: pd.DataFrame, x: str, y: str, value: str, title: str, domain: tuple[float, float] | None = None,
            scheme: str | alt.SchemeParams = SEQUENTIAL, dark_low: bool = False, y_sort: list | None = None, tooltip: list | None = None,
            legend: str | None = None, x_title: str = "epoch") -> alt.Chart:
    """`value` over `x` (epochs) and `y` (layer groups, input on top): rows tall enough to read,
    the chart's width; the colour scale spans `domain` (`fitted` to the data when None; give a
    diverging `scheme` a symmetric one), its bar with the high end on top. `SEQUENTIAL` paints
    what matters dark: high values, or low ones with `dark_low` (a rewound group's accuracy:
    forgotten is dark, intact pale)."""
    lo, hi = domain or fitted(data[value])
    rows = max(1, data[y].nunique())
    label = legend or LABELS.get(value, value)
    return (
        alt.Chart(data, title=title)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O", title=x_title, axis=alt.Axis(labelAngle=0, labelOverlap="parity")),
            y=alt.Y(f"{y}:N", sort=y_sort, title=LABELS.get(y, y), axis=alt.Axis(labelOverlap=False)),  # every group named
            color=alt.Color(f"{value}:Q", title=label,
                            scale=alt.Scale(domain=[lo, hi], scheme=scheme, reverse=dark_low, clamp=True),
                            legend=alt.Legend(format=".2~f")),
            tooltip=tooltip or [alt.Tooltip(f"{y}:N", title=LABELS.get(y, y)), alt.Tooltip(f"{x}:O", title=x_title),
                                alt.Tooltip(f"{value}:Q", title=label, format=".3f")],
        )
        # A step per row (room for a 16-pixel label): 3 groups get tall rows, 10 groups a chart of
        # 300 pixels; the width is the container's (set once the chart is shown full width).
        .properties(height=alt.Step(max(30, 240 // rows)), width="container")
    )


def training_curves(curves: pd.DataFrame, title: str = "Accuracy per epoch") -> alt.Chart:
    """The `training` table's accuracy per epoch, one line per population (Overview, Story)."""
    long = populations_long(curves, ["epoch"])
    pick = legend_pick("population")
    return (
        alt.Chart(long, title=title)
        .mark_line(point=False, strokeWidth=3)
        .encode(
            x=epoch_x(),
            y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            color=colour("population", list(POPULATIONS.values())),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=["epoch:Q", "population:N", alt.Tooltip("accuracy:Q", format=".3f")],
        )
        .add_params(pick)
    )


def dropout_modes(summary: pd.DataFrame, height: int = 440, label_size: int = 16) -> alt.LayerChart:
    """The `dropout` table as bars: each population's accuracy for the plain model and the dropout
    model in each mode, every bar's value written on it (Example-tied dropout, Story)."""
    long = populations_long(summary, ["mode"])
    long["mode"] = long["mode"].map(DROPOUT_MODES)
    pick = legend_pick("mode")
    base = alt.Chart(long, title="Accuracy of the plain model and of the dropout model in each mode").encode(
        x=alt.X("population:N", title=None, sort=list(POPULATIONS.values()), axis=alt.Axis(labelAngle=0, labelLimit=0)),
        xOffset=alt.XOffset("mode:N", sort=list(DROPOUT_MODES.values())),
        tooltip=["mode:N", "population:N", alt.Tooltip("accuracy:Q", format=".3f")],
    )
    bars = (
        base.mark_bar()
        .encode(y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1.08])),
                color=colour("mode", list(DROPOUT_MODES.values())),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)))
        .add_params(pick)
    )
    # Drop mode's 0% memorized and train mode's test accuracy (n/a: test examples own no masks)
    # would otherwise both be empty space.
    return alt.layer(bars, bar_labels(base, "accuracy", size=label_size)).properties(height=height)


def attribution_long(values: np.ndarray, target: str, state: str, units: bool) -> pd.DataFrame:
    """One attribution (an (H, W) map, or (units,) of a layer) as long rows for `attribution_chart`."""
    if units:  # per-unit attributions of a linear layer: (units,)
        return pd.DataFrame({"unit": np.arange(len(values)), "attribution": values, "target": target, "model": state})
    h, w = values.shape  # (H, W) map, channels summed
    yy, xx = np.mgrid[0:h, 0:w]
    return pd.DataFrame({"x": xx.ravel(), "y": yy.ravel(), "attribution": values.ravel(), "target": target, "model": state})


def attribution_chart(long: pd.DataFrame, method: str, flip_units: list[str], states: list[str],
                      layer: str | None = None, size: int = 200) -> alt.Chart:
    """Attribution maps (or a layer's 15 units with the largest attribution, flip-set units
    outlined) of `attribution_long` rows: a row per target, a column per model state (One example, Story)."""
    extent = float(np.nanmax(np.abs(long["attribution"]))) or 1.0
    # Centred on 0, red for support: the domain ascends (the colour bar's high end on top), the range is reversed.
    color = alt.Color("attribution:Q", scale=alt.Scale(scheme="redblue", domain=[-extent, extent], reverse=True), title=method)
    if "unit" in long:
        long["in flip set"] = [f"{layer}[{u}]" in flip_units for u in long["unit"]]
        top = long.assign(size=long["attribution"].abs()).sort_values("size", ascending=False).groupby(["target", "model"]).head(15)
        return (
            alt.Chart(top).mark_bar()
            .encode(x=alt.X("unit:N", sort="-y"), y="attribution:Q", color=color,
                    stroke=alt.condition("datum['in flip set']", alt.value("black"), alt.value(None)),
                    tooltip=["unit:Q", alt.Tooltip("attribution:Q", format=".4f"), "in flip set:N"])
            .properties(width=260, height=160)
            .facet(row=alt.Row("target:N", title=None, sort="ascending"), column=alt.Column("model:N", title=None, sort=states))
            .resolve_scale(x="independent")
            .properties(title="15 units with the largest attribution (outlined: in the flip set)")
        )
    cell = size / max(long["x"].max() + 1, long["y"].max() + 1)
    return (
        alt.Chart(long).mark_rect()
        .encode(x=alt.X("x:O", axis=None), y=alt.Y("y:O", axis=None), color=color,
                tooltip=["x:O", "y:O", alt.Tooltip("attribution:Q", format=".4f")])
        .properties(width=cell * (long["x"].max() + 1), height=cell * (long["y"].max() + 1))
        .facet(row=alt.Row("target:N", title=None, sort="ascending"), column=alt.Column("model:N", title=None, sort=states))
    )


def populations_long(table: pd.DataFrame, id_vars: list[str], populations=tuple(POPULATIONS)) -> pd.DataFrame:
    """A table's accuracy columns as long rows (`population` labelled by `POPULATIONS`, `accuracy`)."""
    long = table.melt(id_vars=id_vars, value_vars=[accuracy_column(p) for p in populations],
                      var_name="population", value_name="accuracy")
    long["population"] = long["population"].map({accuracy_column(p): POPULATIONS[p] for p in populations})
    return long


def accuracy_metrics(after: dict, before: dict | None = None) -> None:
    """The four populations' accuracies as metrics, with the change from `before`."""
    cols = st.columns(len(POPULATIONS))
    for col, (population, label) in zip(cols, POPULATIONS.items()):
        key = accuracy_column(population)
        delta = None if before is None else f"{(after[key] - before[key]) * 100:+.2f} pp"
        col.metric(label, f"{after[key]:.2%}", delta=delta, delta_color="off" if population == "noisy" else "normal")
    if after.get("sampled"):
        st.caption(f"On a fixed sample of {LIVE_TRAIN_LIMIT:,} training and {LIVE_TEST_LIMIT:,} test examples (large run).")


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


__all__ = ["BLUE", "VERMILLION", "GREEN", "PURPLE", "ORANGE", "SKY", "BLACK", "GREY", "UNEDITED", "EDITED", "DROPOUT_MODES",
           "COLOURS", "SERIES", "LABELS", "human", "colour", "group_colours", "projector", "fitted", "SEQUENTIAL", "show_chart", "legend_pick",
           "epoch_x", "bar_labels", "heatmap", "training_curves", "dropout_modes",
           "attribution_long", "attribution_chart", "populations_long", "accuracy_metrics", "image_of", "class_name"]
