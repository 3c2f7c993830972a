"""Compare: a sweep's points (or runs picked by hand), each key number with its spread over seeds."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import (RunError, run_in_root, run_names, run_numbers, selected_runs_root, sweep_in_root, sweep_names,
                       sweep_record, sweep_summary, table)
from app.charts import SERIES, epoch_x, legend_pick, show_chart
from app.url import url_choice
from memloc.evaluate import POPULATIONS, accuracy_column
from memloc.grid import point_name, seed_axes, short_names
from memloc.summary import metric_label, summary_table

st.title("Compare")
st.markdown(
    "One run is one draw: the same analysis on other seeds, noise rates or widths tells how much of "
    "a finding is the setting and how much is chance. Each point of a sweep is an ordinary run; here "
    "every key number is shown per *setting* (the points that differ only in their seed) as the mean "
    "with a bar of one standard deviation over the seeds, and each seed as a faint dot."
)

root = selected_runs_root()
sweeps = sweep_names(root)
sources = (["sweep"] if sweeps else []) + ["runs"]
url_choice("source", "cmp_source", sources, "runs" if st.query_params.get("runs") and not st.query_params.get("sweep") else sources[0])
source = st.radio("Compare", sources, key="cmp_source", horizontal=True,
                  format_func={"sweep": "a sweep", "runs": "runs picked by hand"}.__getitem__)
st.query_params["source"] = source

if source == "sweep":
    url_choice("sweep", "cmp_sweep", sweeps, sweeps[0])
    name = st.selectbox("Sweep", sweeps, key="cmp_sweep", help=f"sweep directories under {root}")
    st.query_params["sweep"] = name
    target = sweep_in_root(root, name)
    try:
        record = sweep_record(target)
    except RunError as error:
        st.error(f"Sweep **{name}** cannot be shown: {error}")
        st.stop()
    counts = {s: sum(p.get("status") == s for p in record["points"].values()) for s in ("complete", "running", "pending", "failed")}
    st.caption(f"{len(record['points'])} points: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
               + f". Grid: {', '.join(record['keys']) or 'one point'} on preset `{record['grid']['preset']}`.")
    try:
        summary = sweep_summary(target)
    except RunError as error:
        st.info(f"{error}")
        st.code(f"python -m precompute summarize {target.path}", language="bash")
        st.stop()
    axes, source_name = list(record["keys"]), name
    runs = {p: target.run(p) for p in record["points"] if target.run(p).exists()}
    values = {p: record["points"][p]["values"] for p in runs}
else:
    names = run_names(root)
    wanted = [n for n in (st.query_params.get("runs") or "").split(";") if n in names]  # point names hold commas
    if "cmp_runs" not in st.session_state:
        st.session_state["cmp_runs"] = wanted or names[: min(3, len(names))]
    picked = st.multiselect("Runs", names, key="cmp_runs", help="runs under the runs root, sweep points as sweep/point")
    st.query_params["runs"] = ";".join(picked)
    if not picked:
        st.info("Pick two or more runs to compare.")
        st.stop()
    runs = {n: run_in_root(root, n) for n in picked}
    try:
        rows = [(n, {"run": n}, run_numbers(r)) for n, r in runs.items()]
    except RunError as error:
        st.error(f"A picked run cannot be shown: {error}")
        st.stop()
    axes, values, source_name = ["run"], {n: {"run": n} for n in runs}, "runs"
    summary = summary_table(rows, axes)

seeds = seed_axes(axes)
setting_axes = [a for a in axes if a not in seeds]
names_of = short_names(axes)
settings = summary[summary["scope"] == "setting"]
points = summary[summary["scope"] == "point"]
if settings.empty:
    st.info("No point has key numbers yet: the sweep's points have not finished a stage.")
    st.stop()
metrics = list(dict.fromkeys(settings["metric"]))


def _axis_title(axis: str) -> str:
    return names_of.get(axis, axis).replace("_", " ")


def _setting_of(point_values: dict) -> str:
    return ", ".join(f"{names_of[a]}={point_values.get(a)}" for a in setting_axes) or "all points"


# --- a key number against a grid axis ---------------------------------------------------------
st.subheader("A key number against a setting")


@st.fragment
def numbers_panel():
    c1, c2, c3 = st.columns([3, 2, 2])
    url_choice("metric", "cmp_metric", metrics, "memorized" if "memorized" in metrics else metrics[0])
    metric = c1.selectbox("Key number", metrics, key="cmp_metric", format_func=metric_label)
    x_options = setting_axes or ["point"]
    url_choice("x", "cmp_x", x_options, x_options[0])
    x = c2.selectbox("Against", x_options, key="cmp_x", format_func=lambda a: "setting" if a == "point" else _axis_title(a))
    color_options = ["none"] + [a for a in setting_axes if a != x]
    color = c3.selectbox("Colour by", color_options, key="cmp_color",
                         format_func=lambda a: "nothing" if a == "none" else _axis_title(a))
    st.query_params.update(metric=metric, x=x)
    means = settings[settings["metric"] == metric].copy()
    dots = points[points["metric"] == metric].copy()
    numeric = x != "point" and pd.api.types.is_numeric_dtype(means[x])
    for frame in (means, dots):  # plain column names: Vega-Lite reads dots in a field name as nesting
        frame["x"] = frame["point"] if x == "point" else frame[x] if numeric else frame[x].astype(str)
        frame["group"] = frame[color].astype(str) if color != "none" else "all"
    if x == "point":  # no setting axis: every seed under its setting's mean
        dots["x"] = [point_name({a: values[p][a] for a in setting_axes}, setting_axes) for p in dots["point"]]
    means["low"], means["high"] = means["mean"] - means["std"].fillna(0), means["mean"] + means["std"].fillna(0)
    x_enc = alt.X("x:Q" if numeric else "x:N", title=_axis_title(x) if x != "point" else "setting",
                  scale=alt.Scale(zero=False) if numeric else alt.Undefined, axis=alt.Axis(labelAngle=0, labelLimit=0))
    pick = legend_pick("group")
    colour = alt.Color("group:N", title=_axis_title(color) if color != "none" else None, scale=alt.Scale(range=SERIES),
                       legend=alt.Legend(orient="bottom", labelLimit=0) if color != "none" else None)
    tip = ["point:N", alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("std:Q", format=".3g"), "n:Q"]
    base = alt.Chart(means).encode(x=x_enc, color=colour, opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)))
    bars = base.mark_rule(strokeWidth=3).encode(y=alt.Y("low:Q", title=metric_label(metric)), y2="high:Q", tooltip=tip)
    centre = base.mark_line(point=alt.OverlayMarkDef(size=120, filled=True)) if numeric else base.mark_point(size=160, filled=True)
    centre = centre.encode(y="mean:Q", tooltip=tip)
    seed_dots = alt.Chart(dots).mark_point(size=50, opacity=0.35).encode(
        x=x_enc, y="mean:Q", color=colour, tooltip=["point:N", alt.Tooltip("mean:Q", title="value", format=".4g")])
    chart = (seed_dots + bars + centre).add_params(pick).properties(
        height=360, title=f"{metric_label(metric)}: mean ± 1 std over {', '.join(map(_axis_title, seeds)) or 'points'}")
    show_chart(chart, means.drop(columns=["x", "group"]), f"compare_{metric}", source_name)


numbers_panel()

# --- training curves with a band over seeds -------------------------------------------------------
st.subheader("Training curves, mean and spread over seeds")


@st.fragment
def curves_panel():
    url_choice("population", "cmp_population", list(POPULATIONS), "noisy")
    population = st.radio("Population", list(POPULATIONS), key="cmp_population", horizontal=True,
                          format_func=POPULATIONS.__getitem__)
    st.query_params["population"] = population
    frames = []
    for point, run in runs.items():
        try:
            curve = table(run, "training")
        except RunError:
            continue  # a point that has not finished training
        frames.append(pd.DataFrame({"epoch": curve["epoch"], "accuracy": curve[accuracy_column(population)],
                                    "setting": _setting_of(values[point]), "point": point}))
    if not frames:
        st.info("No point has finished training yet.")
        return
    long = pd.concat(frames, ignore_index=True)
    band = (long.groupby(["setting", "epoch"], as_index=False)["accuracy"]
            .agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else 0.0, n="count"))
    band["low"], band["high"] = band["mean"] - band["std"], band["mean"] + band["std"]
    pick = legend_pick("setting")
    colour = alt.Color("setting:N", title=None, scale=alt.Scale(range=SERIES),
                       legend=alt.Legend(orient="bottom", labelLimit=0))
    opacity = alt.condition(pick, alt.value(1.0), alt.value(0.1))
    area = alt.Chart(band).mark_area(opacity=0.25).encode(x=epoch_x(),
                                                          y="low:Q", y2="high:Q", color=colour)
    line = alt.Chart(band).mark_line(strokeWidth=3).encode(
        x=epoch_x(), y=alt.Y("mean:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=colour, opacity=opacity,
        tooltip=["setting:N", "epoch:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f"), "n:Q"])
    chart = (area + line).add_params(pick).properties(title=f"Accuracy: {POPULATIONS[population]}")
    show_chart(chart, band, f"compare_curves_{population}", source_name)
    st.caption("Each line is the mean over the seeds of one setting after every epoch; the band is ± 1 standard "
               "deviation. Click a legend entry to highlight one setting.")


curves_panel()

# --- the summary as a table -------------------------------------------------------------------------
st.subheader("Every key number")
shown = settings.assign(value=[f"{m:.4g} ± {s:.2g} (n={n})" if np.isfinite(s) else f"{m:.4g} (n={n})"
                               for m, s, n in zip(settings["mean"], settings["std"], settings["n"])])
wide = shown.pivot(index="metric", columns="point", values="value").reindex(metrics)
wide.index = [metric_label(m) for m in wide.index]
st.dataframe(wide, width="stretch")
st.download_button("Summary (CSV)", summary.to_csv(index=False), file_name=f"{source_name}_summary.csv", mime="text/csv",
                   on_click="ignore")
