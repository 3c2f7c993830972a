"""Charts and widgets the explorer's pages share: Altair charts with downloads, heatmaps,
accuracy metrics, images and class names.

Population names come from `memloc.evaluate.POPULATIONS`, so every page labels clean,
memorized, noisy-vs-true and test examples the same way.
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


@st.cache_data(show_spinner=False, max_entries=32)
def _svg(spec: str) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec)


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, run: Run | str) -> None:
    """An Altair chart with downloads of its data (CSV) and of the figure (SVG), named after the
    run (or sweep) and `name`; both files are made only when clicked, so a rerun does not pay."""
    prefix = run if isinstance(run, str) else run.name
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


def bar_labels(base: alt.Chart, value: str, fmt: str = ".0%") -> alt.Chart:
    """Each bar's value written above it, for the bars drawn from `base` (the chart with the
    bars' x / offset encodings, without their y): a bar of height 0 is invisible, so 0% is
    written "0%" and a missing value (NaN) "n/a" at the baseline. Layer it on the bars."""
    return (
        base.transform_calculate(
            bar_label=f"isValid(datum['{value}']) && isFinite(datum['{value}']) ? format(datum['{value}'], '{fmt}') : 'n/a'",
            bar_top=f"isValid(datum['{value}']) && isFinite(datum['{value}']) ? datum['{value}'] : 0",
        )
        .mark_text(baseline="bottom", dy=-3, fontSize=13, color="#333333")
        .encode(y=alt.Y("bar_top:Q"), text="bar_label:N")
    )


def heatmap(data: pd.DataFrame, x: str, y: str, value: str, title: str, domain=(0, 1), scheme="viridis",
            y_sort: list | None = None, tooltip: list | None = None, legend: str | None = None) -> alt.Chart:
    return (
        alt.Chart(data, title=title)
        .mark_rect()
        .encode(
            x=alt.X(f"{x}:O"),
            y=alt.Y(f"{y}:N", sort=y_sort),
            color=alt.Color(f"{value}:Q", scale=alt.Scale(domain=list(domain), scheme=scheme), title=legend or value),
            tooltip=tooltip or [f"{y}:N", f"{x}:O", alt.Tooltip(f"{value}:Q", format=".3f")],
        )
        # Sizes in steps per cell: a fixed pixel height squashes a discrete axis in Streamlit.
        .properties(width=alt.Step(max(4, min(36, 360 // max(1, data[x].nunique())))), height=alt.Step(22))
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


__all__ = ["show_chart", "legend_pick", "epoch_x", "bar_labels", "heatmap", "populations_long", "accuracy_metrics", "image_of", "class_name"]
