"""Localizers: a benchmark of localization methods against ground truth (stage `localize`,
`memloc.localization`). Which method really finds the units that hold one example's memorization?

- recall@k on the two ground truths where the answer is known in advance, example-tied dropout
  (each memorized example's own memorization units) and injection (the units a wrong label was
  fine-tuned into), against the chance level of picking at random; and per unit layer;
- deletion: each method's top r % of every layer's units zeroed, the share of targets that lose
  their memorized label against the accuracy the model loses elsewhere;
- the seconds each method takes per target.
"""

import json
import textwrap
from graphlib import TopologicalSorter

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import page_run, require_tables
from app.charts import bar_labels, show_chart
from memloc.localization import METHOD_NAMES

#: The benchmarks with a known answer: their title and what the answer is, for the audience.
GROUND_TRUTHS = {
    "dropout": ("Example-tied dropout",
                "the dropout model put each memorized example into its own few units, known from training"),
    "injection": ("Injection",
                  "a clean example is taught a wrong label through a random {share:g}% of the plain model's units only"),
}
#: The deletion benchmark's collateral accuracies (after minus before) and whose they are.
DAMAGE = {"test_acc_change": "test examples", "clean_acc_change": "clean training examples",
          "memorized_acc_change": "the other memorized examples"}
CONTROL, BAR, CONTROL_BAR = "random", "#4c78a8", "#bab0ac"
LOG_SPREAD = 100  # seconds on a log scale when the slowest method takes this many times the fastest

run, info = page_run()
st.title("Localizers")
st.markdown(
    "Many methods claim to name the units (channels or neurons) that hold one training example's memorization: "
    "**do they name the right ones?** Here the methods are checked where the answer is known. Each method scores "
    "every unit for one example and picks, in each layer, as many units as hold the answer there (k); *recall@k* is "
    "the share of the true units it picks. Random picks are the control: they reach the *chance* level."
)
tables = require_tables(run, info, "localizers", "localizer_units")
if tables is None:
    st.stop()
rows, units = tables["localizers"], tables["localizer_units"]
rows = rows.assign(name=rows["method"].map(METHOD_NAMES))
units = units.assign(name=units["method"].map(METHOD_NAMES))


def recall_summary(benchmark_rows: pd.DataFrame) -> pd.DataFrame:
    """Per method: its mean recall@k and chance over the benchmark's targets, best first."""
    summary = (benchmark_rows.groupby(["method", "name"], as_index=False)
               .agg(recall_at_k=("recall_at_k", "mean"), chance=("chance", "mean"), targets=("example_id", "nunique")))
    return summary.sort_values("recall_at_k", ascending=False, na_position="last", kind="stable", ignore_index=True)


def method_axis(names: list[str]) -> alt.Axis:
    """An x axis of method names, each wrapped to lines of about 16 characters (readable from the
    back of a room without tilting the head), in the given order."""
    lines = {name: textwrap.wrap(name, 16) for name in names}
    return alt.Axis(labelAngle=0, labelLimit=0, labelExpr=f"{json.dumps(lines)}[datum.label] || datum.label")


def recall_chart(summary: pd.DataFrame, title: str) -> alt.LayerChart:
    """recall@k per method as bars with their values, and the chance level as a labelled dashed rule."""
    base = alt.Chart(summary, title=title).encode(
        x=alt.X("name:N", title=None, sort=summary["name"].tolist(), axis=method_axis(summary["name"].tolist())),
        tooltip=["name:N", alt.Tooltip("recall_at_k:Q", format=".1%", title="recall@k"),
                 alt.Tooltip("chance:Q", format=".1%"), "targets:Q"])
    bars = base.mark_bar().encode(
        y=alt.Y("recall_at_k:Q", title="recall@k (share of true units picked)", scale=alt.Scale(domain=[0, 1.08]),
                axis=alt.Axis(format=".0%")),
        color=alt.condition(f"datum.method == '{CONTROL}'", alt.value(CONTROL_BAR), alt.value(BAR)))
    level = alt.Chart(summary).transform_aggregate(chance="mean(chance)").transform_calculate(
        label="isValid(datum.chance) && isFinite(datum.chance) ? 'chance ' + format(datum.chance, '.0%') : ''")
    rule = level.mark_rule(strokeDash=[6, 4], color="#333333", size=2).encode(y="chance:Q")
    # Right of the plot, where no bar's value can sit on it.
    text = level.mark_text(align="left", dx=6, fontSize=14, fontWeight="bold", color="#333333").encode(
        y="chance:Q", x=alt.value("width"), text="label:N")
    return alt.layer(bars, rule, bar_labels(base, "recall_at_k"), text).properties(height=360)  # values over the rule


def layer_order(picks: pd.DataFrame) -> list[str]:
    """The unit layers of `picks`, input to output. Each target's picks are listed layer by layer
    in the model's order, skipping a layer where it has no true unit (dropout), so the model's
    order is the one order consistent with every target's."""
    order = TopologicalSorter()
    for _, one in picks.groupby(["method", "example_id"], sort=False):
        layers = list(dict.fromkeys(one["layer"]))
        order.add(layers[0])
        for before, after in zip(layers, layers[1:]):
            order.add(after, before)
    return list(order.static_order())


def layer_recall(benchmark_units: pd.DataFrame, order: list[str]) -> alt.LayerChart:
    """Per method and unit layer: the share of its picks there that are true units (hits / picks)."""
    layers = layer_order(benchmark_units)
    cells = (benchmark_units.assign(hit=benchmark_units["truth"].astype(float))
             .groupby(["name", "layer"], as_index=False).agg(recall=("hit", "mean"), picks=("hit", "size")))
    base = alt.Chart(cells).encode(
        x=alt.X("layer:N", sort=layers, title="unit layer (input to output)",
                axis=alt.Axis(labelAngle=-45, labelLimit=0, labelOverlap=False)),
        y=alt.Y("name:N", sort=order, title=None, axis=alt.Axis(labelLimit=0)),
        tooltip=["name:N", "layer:N", alt.Tooltip("recall:Q", format=".1%"), "picks:Q"])
    rect = base.mark_rect().encode(color=alt.Color("recall:Q", title="recall", scale=alt.Scale(domain=[0, 1], scheme="viridis"),
                                                   legend=alt.Legend(format=".0%")))
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text("recall:Q", format=".0%"),
        color=alt.condition("datum.recall > 0.6", alt.value("black"), alt.value("white")))
    return alt.layer(rect, text).properties(height=alt.Step(26), width=alt.Step(max(40, min(90, 480 // max(1, len(layers))))))


#: Where a scatter point's name may go: text alignment and offset (pixels), tried in this order.
SIDES = {"right": ("left", 10, 4), "left": ("right", -10, 4), "above": ("center", 0, -12), "below": ("center", 0, 20)}
SCATTER_W, SCATTER_H, CHAR_W = 1000, 440, 7.5  # the plot's pixels as shown on a 1600-pixel screen; a character at 13 px


def label_sides(x: np.ndarray, y: np.ndarray, names: list[str], x_domain: tuple[float, float],
                y_domain: tuple[float, float]) -> list[str]:
    """A side (`SIDES`) for each point's name where it overlaps no other name, no point and stays
    in the plot, if there is one (else right): methods often land close together."""
    px = (x - x_domain[0]) / (x_domain[1] - x_domain[0]) * SCATTER_W
    py = (1 - (y - y_domain[0]) / (y_domain[1] - y_domain[0])) * SCATTER_H
    taken = [(a - 8, b - 8, a + 8, b + 8) for a, b in zip(px, py)]  # the points
    sides = []
    for a, b, name in zip(px, py, names):
        width = CHAR_W * len(name)
        for side, (align, dx, dy) in SIDES.items():
            left = a + dx - {"left": 0, "right": width, "center": width / 2}[align]
            box = (left, b + dy - 14, left + width, b + dy + 2)
            inside = box[0] >= 0 and box[2] <= SCATTER_W and box[1] >= 0 and box[3] <= SCATTER_H
            if inside and not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
                break
        else:
            side, box = "right", None
        sides.append(side)
        if box is not None:
            taken.append(box)
    return sides


# --- recall@k on the two ground truths ---------------------------------------------------
st.subheader("Do they find the units that hold it?")
recall_rows = {b: rows[rows["benchmark"] == b] for b in GROUND_TRUTHS}
summaries = {b: recall_summary(r) for b, r in recall_rows.items() if len(r)}
for benchmark, (title, truth) in GROUND_TRUTHS.items():
    st.markdown(f"**{title}**: {truth.format(share=info['config']['localize']['inject_share'])}.")
    if benchmark not in summaries:
        st.info(f"Not measured in this run (`localize.benchmarks` leaves out `{benchmark}`).")
        continue
    summary, targets = summaries[benchmark], recall_rows[benchmark].drop_duplicates("example_id")
    show_chart(recall_chart(summary, f"{title}: recall@k per method"), summary, f"localizers_{benchmark}", run)
    ok = int(targets["truth_ok"].fillna(False).astype(bool).sum())
    st.caption(f"Mean over {len(targets)} targets; k = {targets['k'].mean():.1f} true units per target on average. "
               + (f"For {ok} of {len(targets)} targets zeroing their own memorization units does remove their "
                  "memorized label (the ground truth holds)." if benchmark == "dropout" else
                  f"The injection succeeded for {ok} of {len(targets)} targets; recall is measured on those (n/a: none)."))

st.markdown("**Where they find them: recall@k per unit layer** (hits / picks in that layer)")
for benchmark, column in zip(summaries, st.columns(len(GROUND_TRUTHS))):
    title = GROUND_TRUTHS[benchmark][0]
    picked = units[(units["benchmark"] == benchmark) & units["truth"].notna()]
    with column:
        if not len(picked):
            st.caption(f"{title}: no picks to score (no target with a ground truth).")
            continue
        hits = picked.groupby(["method", "layer"], as_index=False).agg(hits=("truth", "sum"), picks=("truth", "size"))
        show_chart(layer_recall(picked, summaries[benchmark]["name"].tolist()).properties(title=f"{title}: recall@k per layer"),
                   hits, f"localizers_{benchmark}_layers", run)

# --- deletion: does zeroing the picks make the model forget, and at what cost? -----------------
st.subheader("Deletion: zero what each method picks")
st.markdown(
    "On the plain model, for memorized noisy examples: zero each method's top units in every layer. Does the example "
    "lose its memorized label (*effectiveness*), and how much accuracy does the model lose elsewhere (*collateral "
    "damage*)? Best is the top right: the example is forgotten, nothing else changes."
)
deletion = rows[rows["benchmark"] == "deletion"]
if not len(deletion):
    st.info("Not measured in this run (`localize.benchmarks` leaves out `deletion`).")
else:
    c1, c2 = st.columns(2)
    rates = sorted(deletion["rate"].dropna().unique().tolist())
    rate = c1.radio("Units zeroed per layer", rates, format_func=lambda r: f"top {r:g}%", horizontal=True,
                    key="loc_rate", index=len(rates) - 1, help="each layer's top r % of its units by the method's "
                    "score, at least one unit per layer")
    damage = c2.radio("Collateral damage on", list(DAMAGE), format_func=DAMAGE.__getitem__, horizontal=True, key="loc_damage")
    at_rate = (deletion[deletion["rate"] == rate].assign(lost=lambda d: d["lost_memorization"].astype(float))
               .groupby(["method", "name"], as_index=False)
               .agg(lost_memorization=("lost", "mean"), **{c: (c, "mean") for c in DAMAGE}, targets=("example_id", "nunique")))
    lo, hi = min(0.0, at_rate[damage].min()), max(0.0, at_rate[damage].max())
    x_domain, y_domain = (lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1)), (0.0, 1.08)
    sides = label_sides(at_rate[damage].to_numpy(), at_rate["lost_memorization"].to_numpy(), at_rate["name"].tolist(),
                        x_domain, y_domain)
    title = f"Effectiveness against collateral damage, top {rate:g}% of each layer zeroed"
    base = alt.Chart(at_rate.assign(side=sides), title=title).encode(
        x=alt.X(f"{damage}:Q", title=f"accuracy change of {DAMAGE[damage]} (after − before)", axis=alt.Axis(format="+.0%"),
                scale=alt.Scale(domain=list(x_domain), nice=False)),
        y=alt.Y("lost_memorization:Q", title="share of targets that lose their memorized label", axis=alt.Axis(format=".0%"),
                scale=alt.Scale(domain=list(y_domain), nice=False)),
        tooltip=["name:N", alt.Tooltip("lost_memorization:Q", format=".0%", title="lose memorization"),
                 *[alt.Tooltip(f"{c}:Q", format="+.1%", title=DAMAGE[c]) for c in DAMAGE], "targets:Q"])
    points = base.mark_point(filled=True, size=160, opacity=1).encode(
        color=alt.Color("name:N", legend=None, sort=list(METHOD_NAMES.values()), scale=alt.Scale(scheme="tableau10")))
    names = [base.transform_filter(alt.datum.side == side).mark_text(align=align, dx=dx, dy=dy, fontSize=13, color="#333333")
             .encode(text="name:N") for side, (align, dx, dy) in SIDES.items()]
    show_chart(alt.layer(points, *names).properties(height=SCATTER_H), at_rate, f"localizers_deletion_{rate:g}", run)
    st.caption(f"{at_rate['targets'].max()} memorized targets; the accuracies on a fixed subset (`localize.eval_train`, "
               "`localize.eval_test`). Units per layer: round(r% of the layer), at least one, so in small layers "
               "several rates zero the same units.")

# --- cost ---------------------------------------------------------------------------------
st.subheader("What each method costs")
per_target = rows.drop_duplicates(["method", "benchmark", "example_id"])  # deletion has a row per rate, one time
cost = (per_target.groupby(["method", "name"], as_index=False).agg(seconds=("seconds", "mean"), targets=("seconds", "size"))
        .sort_values("seconds", kind="stable", ignore_index=True))
cost["milliseconds"] = cost["seconds"] * 1000
log = (cost["seconds"] > 0).all() and cost["seconds"].max() > LOG_SPREAD * cost["seconds"].min()
scale = alt.Scale(type="log") if log else alt.Scale()
base = alt.Chart(cost, title="Time per target" + (" (log scale)" if log else "")).encode(
    x=alt.X("name:N", title=None, sort=cost["name"].tolist(), axis=method_axis(cost["name"].tolist())),
    tooltip=["name:N", alt.Tooltip("milliseconds:Q", format=".3~r"), "targets:Q"])
bars = base.mark_bar().encode(
    y=alt.Y("milliseconds:Q", title="milliseconds per target", scale=scale, stack=None),  # unstacked: a log scale has no 0
    color=alt.condition(f"datum.method == '{CONTROL}'", alt.value(CONTROL_BAR), alt.value(BAR)))
labels = bar_labels(base, "milliseconds", fmt=".3~r").encode(y=alt.Y("bar_top:Q", scale=scale))
show_chart(alt.layer(bars, labels).properties(height=340), cost, "localizers_seconds", run)
st.caption(f"Mean over every benchmark's targets ({int(cost['targets'].max())} per method) on this machine; a method "
           "that scores several targets in one pass counts its time divided by them.")
