"""Neurons: how few units hold one memorized example, and what zeroing them does."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import layout, live, opened, page_run, require_tables, run_labels
from app.charts import (EDITED, UNEDITED, accuracy_metrics, bar_labels, class_name, colour, human, image_of, legend_pick,
                        show_chart)
from app.url import decode_interventions, encode_interventions, url_int, url_notice
from memloc.interventions import ZeroUnits, unit_name

run, info = page_run()
st.title("Neurons")
st.markdown(
    "Greedy flipping: for one training example, repeatedly zero the unit (neuron or channel) whose "
    "removal most raises that example's loss while keeping the others' low, until the model stops "
    "predicting the example's training label. Memorized (noisy) examples flip after a handful of "
    "units, clean ones need many more; zeroing the same number of *random* units (the control) rarely "
    "flips anything."
)

tables = require_tables(run, info, "flipping", "flip_units")
if tables is None:
    st.stop()
flips, units_table = tables["flipping"], tables["flip_units"]
flips = flips.assign(units=flips["units"].map(lambda u: [str(x) for x in u]))
labels = run_labels(run)
data = opened(run)
classes = data.data.classes

# --- distribution -------------------------------------------------------------------
flipped = flips[flips["flipped"]]
# Side by side, not overlaid: examples per flip-set size, in bins of `width` units when sizes spread wide.
largest = int(flipped["n_units"].max()) if len(flipped) else 1
width = -(-largest // 30)  # at most 30 bins


def _size(first: int) -> str:
    return str(first) if width == 1 else f"{first}-{first + width - 1}"


sizes = [_size(first) for first in range(1, largest + 1, width)]
counts = (flipped.assign(size=[_size(first) for first in (flipped["n_units"] - 1) // width * width + 1])
          .groupby(["size", "kind"]).size()
          .reindex(pd.MultiIndex.from_product([sizes, ["clean", "noisy"]], names=["size", "kind"]), fill_value=0)
          .reset_index(name="examples"))
pick = legend_pick("kind")
hist = (
    alt.Chart(counts, title="Units zeroed until the prediction flips")
    .mark_bar()
    .encode(
        x=alt.X("size:N", sort=sizes, title="units zeroed"), xOffset=alt.XOffset("kind:N", sort=["clean", "noisy"]),
        y=alt.Y("examples:Q", title="examples"),
        color=colour("kind", ["clean", "noisy"]),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)),
        tooltip=["kind:N", alt.Tooltip("size:N", title="units zeroed"), "examples:Q"],
    )
    .add_params(pick)
)
show_chart(hist, flipped[["example_id", "kind", "n_units"]], "units_to_flip", run)
rates = pd.concat([
    flips.groupby("kind", as_index=False)["flipped"].mean().assign(units="greedy (flip set)"),
    flips.groupby("kind", as_index=False)["random_flipped"].mean().rename(columns={"random_flipped": "flipped"})
    .assign(units="random (same number)"),
])
pick2 = legend_pick("units")
controls = ["greedy (flip set)", "random (same number)"]
base = alt.Chart(rates, title="Share of examples whose prediction flips").encode(
    x=alt.X("kind:N", title=None, sort=["clean", "noisy"]), xOffset=alt.XOffset("units:N", sort=controls),
    tooltip=["kind:N", "units:N", alt.Tooltip("flipped:Q", format=".1%")])
bars = (
    base.mark_bar()
    .encode(y=alt.Y("flipped:Q", title="share flipped", scale=alt.Scale(domain=[0, 1.08]),
                    axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1])),
            color=colour("units", controls),
            opacity=alt.condition(pick2, alt.value(1.0), alt.value(0.2)))
    .add_params(pick2)
)
# The random control's share is often 0%: written, not an empty space.
show_chart(alt.layer(bars, bar_labels(base, "flipped")), rates, "flip_rates", run)
cost = flips.groupby("kind")[["acc_clean_after", "acc_test_after", "random_acc_clean_after", "random_acc_test_after"]].mean()
st.caption(
    "Cost of the edit (mean over examples): " + "; ".join(
        f"{kind}: clean {row.acc_clean_after:.1%} / test {row.acc_test_after:.1%} after zeroing its flip set "
        f"(random units: {row.random_acc_clean_after:.1%} / {row.random_acc_test_after:.1%})" for kind, row in cost.iterrows())
)

# --- units by layer -----------------------------------------------------------------
st.subheader("Where the units are")
by_layer = units_table.groupby(["layer", "layer_index"], as_index=False)[["n_noisy", "n_clean"]].sum()
long = by_layer.melt(id_vars=["layer", "layer_index"], value_vars=["n_noisy", "n_clean"], var_name="kind", value_name="uses")
kinds = ["clean examples", "noisy examples"]
long["kind"] = long["kind"].map({"n_clean": kinds[0], "n_noisy": kinds[1]})
pick3 = legend_pick("kind")
layer_order = by_layer.sort_values("layer_index")["layer"].tolist()
layer_chart = (
    alt.Chart(long, title="Flip-set memberships per layer (input to output)")
    .mark_bar()
    .encode(x=alt.X("layer:N", sort=layer_order), xOffset=alt.XOffset("kind:N", sort=kinds),
            y=alt.Y("uses:Q", title="units x examples"),
            color=colour("kind", kinds), opacity=alt.condition(pick3, alt.value(1.0), alt.value(0.2)),
            tooltip=["layer:N", "kind:N", "uses:Q"])
    .add_params(pick3)
)
show_chart(layer_chart, by_layer, "flip_units_by_layer", run)


@st.fragment
def unit_panel():
    st.markdown("**Which examples depend on a unit?** Pick a unit (most used first).")
    ranked = units_table.sort_values(["n_examples", "unit"], ascending=[False, True])
    uses = dict(zip(ranked["unit"], ranked["n_examples"]))
    unit = st.selectbox("Unit", list(uses), key="nr_unit", format_func=lambda u: f"{u}  ({int(uses[u])} examples)")
    users = flips[flips["units"].map(lambda us: unit in us)]
    shown = users[["example_id", "kind", "n_units", "new_prediction"]].assign(
        training_label=[class_name(classes, labels["train_label"][i]) for i in users["example_id"]])
    st.dataframe(human(shown), hide_index=True, height=min(400, 36 * (len(shown) + 1)))


unit_panel()

# --- live ---------------------------------------------------------------------------
st.subheader("Live: zero units yourself")
st.markdown("Pick an example: its flip set is preselected. Add or remove units, and see the example's "
            "predicted probabilities and the accuracies of the whole model change.")
_, unit_counts = layout(run)
all_units = [unit_name(layer, i) for layer, n in unit_counts.items() for i in range(n)]
targets = flips.sort_values(["kind", "example_id"], ascending=[False, True])["example_id"].tolist()
url_int("example", "nr_example", lambda i: i in targets, targets[0], expected="an example the flip stage flipped")
if "nr_units" not in st.session_state:
    raw = st.query_params.get("intervention")
    zeros = [i for i in decode_interventions(raw) if isinstance(i, ZeroUnits)]
    asked = [u for z in zeros for u in z.units]
    from_url = [u for u in asked if u in set(all_units)]
    if raw and (not zeros or len(from_url) < len(asked)):
        dropped = ", ".join(u for u in asked if u not in set(all_units)) or raw
        url_notice(f"`intervention={raw}`: {dropped} is not a set of this model's units; ignored.")
    st.session_state["nr_units"] = from_url or None  # None: the example's flip set


def _reset_units():
    st.session_state["nr_units"] = None


@st.fragment
def live_panel():
    row_of = flips.set_index("example_id")
    names = {i: f"{i} ({kind}, {n} units)" for i, kind, n in zip(flips["example_id"], flips["kind"], flips["n_units"])}
    example = st.selectbox("Example", targets, key="nr_example", on_change=_reset_units, format_func=names.__getitem__)
    if st.session_state["nr_units"] is None:
        st.session_state["nr_units"] = list(row_of.at[example, "units"])
    chosen = st.multiselect("Units to zero", all_units, key="nr_units", help="layer_path[index]; type to search")
    items = [ZeroUnits(tuple(chosen))] if chosen else []
    st.query_params["example"] = str(example)
    st.query_params["intervention"] = encode_interventions(items)
    before, p_before = live(run, [], [example])
    after, p_after = live(run, items, [example])
    accuracy_metrics(after, before)
    train_label, true_label = int(labels["train_label"][example]), int(labels["true_label"][example])
    states = ["trained model", f"{len(chosen)} units zeroed"]
    probs = pd.DataFrame({
        "class": [class_name(classes, k) for k in range(len(classes))] * 2,
        "model": [states[0]] * len(classes) + [states[1]] * len(classes),
        "probability": np.concatenate([p_before[0], p_after[0]]),
    })
    probs["label"] = ""
    probs.loc[probs["class"] == class_name(classes, train_label), "label"] = "training label"
    if true_label != train_label:
        probs.loc[probs["class"] == class_name(classes, true_label), "label"] = "true label"
    pick = legend_pick("model")
    chart = (
        alt.Chart(probs, title=f"Example {example}: predicted probabilities")
        .mark_bar()
        .encode(x=alt.X("class:N", sort=None), xOffset=alt.XOffset("model:N", sort=states),
                y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
                color=colour("model", states, [UNEDITED, EDITED]),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)),
                tooltip=["class:N", "model:N", "label:N", alt.Tooltip("probability:Q", format=".3f")])
        .add_params(pick)
    )
    c1, c2 = st.columns([1, 3])
    with c1:
        st.image(image_of(data.data.train_x[example]), caption=f"training label {class_name(classes, train_label)}, "
                 f"true label {class_name(classes, true_label)}")
        pred_before, pred_after = int(p_before[0].argmax()), int(p_after[0].argmax())
        st.metric("prediction", class_name(classes, pred_after),
                  delta=None if pred_after == pred_before else f"was {class_name(classes, pred_before)}", delta_color="off")
    with c2:
        show_chart(chart, probs, f"example_{example}_zeroed", run)
    st.page_link("views/example.py", label=f"Open example {example} (attributions)", query_params={"example": str(example)})


live_panel()
