"""One example: its labels, learning curve, gradients, rewinding, flip set and attributions."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import (attributions, has_table, layer_names, live, method_names, model_choices, opened, page_run,
                       run_labels, table)
from app.charts import class_name, epoch_x, image_of, legend_pick, show_chart
from app.url import url_int
from memloc.attribution import METHODS

run, info = page_run()
st.title("One example")
st.markdown(
    "Everything memloc knows about one training example: its image and labels, how its loss fell "
    "during training, where its gradient pulls, which layer groups it needs, the units that hold it "
    "(its *flip set*) and, with Captum, which pixels its prediction rests on, for its training label "
    "and its true label, before and after its flip set is zeroed."
)

labels = run_labels(run)
data = opened(run)
classes = data.data.classes
n = len(labels["is_noisy"])
url_int("example", "ex_id", lambda i: 0 <= i < n, int(np.flatnonzero(labels["is_noisy"])[0]) if labels["is_noisy"].any() else 0,
        expected=f"a training example id of this run (0-{n - 1})")
choices = model_choices(info)
if "ex_model" not in st.session_state:
    st.session_state["ex_model"] = st.query_params.get("model") if st.query_params.get("model") in choices else "plain"
c1, c2 = st.columns([1, 3])
example = int(c1.number_input("Example id", min_value=0, max_value=n - 1, step=1, key="ex_id"))
choice = c2.radio("Model", list(choices), format_func=choices.__getitem__, horizontal=True, key="ex_model",
                  help="the plain model, or the model trained with example-tied dropout (Example-tied dropout page)")
st.query_params["example"] = str(example)
st.query_params["model"] = choice

noisy = bool(labels["is_noisy"][example])
train_label, true_label = int(labels["train_label"][example]), int(labels["true_label"][example])
flip_units: list[str] = []
flip_row = None
if has_table(info, "flipping") and choice == "plain":
    flips = table(run, "flipping")
    match = flips[flips["example_id"] == example]
    if len(match):
        flip_row = match.iloc[0]
        flip_units = [str(u) for u in flip_row["units"]]

# --- image, labels, probabilities --------------------------------------------------
_, probs = live(run, [], [example], choice=choice)
left, right = st.columns([1, 3])
with left:
    st.image(image_of(data.data.train_x[example]), width=160)
    st.markdown(f"**{'Noisy' if noisy else 'Clean'} example #{example}**  \ntrue label **{class_name(classes, true_label)}**  \n"
                f"training label **{class_name(classes, train_label)}**  \n"
                f"prediction **{class_name(classes, int(probs[0].argmax()))}** ({choices[choice]})")
with right:
    p = pd.DataFrame({"class": [class_name(classes, k) for k in range(len(classes))], "probability": probs[0]})
    p["label"] = np.where(np.arange(len(classes)) == train_label, "training label",
                          np.where(np.arange(len(classes)) == true_label, "true label", "other"))
    pick = legend_pick("label")
    chart = (
        alt.Chart(p, title="Predicted probabilities")
        .mark_bar()
        .encode(x=alt.X("class:N", sort=None), y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("label:N", title=None, scale=alt.Scale(domain=["training label", "true label", "other"],
                                                                      range=["#e45756", "#54a24b", "#bab0ac"])),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)),
                tooltip=["class:N", "label:N", alt.Tooltip("probability:Q", format=".3f")])
        .add_params(pick)
        .properties(height=200)
    )
    show_chart(chart, p, f"example_{example}_probabilities", run)

# --- learning curve and gradients -------------------------------------------------
left, right = st.columns(2)
with left:
    curve = table(run, "example_training")
    curve = curve[curve["example_id"] == example].assign(
        prediction=lambda d: np.where(d["correct"], "training label", "another class"))
    lc = (
        alt.Chart(curve, title="Learning curve (training pass of each epoch)")
        .mark_line(point=True, color="#999999")
        .encode(x=epoch_x(), y=alt.Y("loss:Q", title="cross-entropy vs training label"),
                tooltip=["epoch:Q", alt.Tooltip("loss:Q", format=".3f"), "prediction:N"])
    )
    lc = lc + lc.mark_point(filled=True, size=40).encode(
        color=alt.Color("prediction:N", title="predicted", legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=["training label", "another class"], range=["#e45756", "#bab0ac"])))
    show_chart(lc, curve, f"example_{example}_learning_curve", run)
with right:
    if has_table(info, "example_gradients"):
        eg = table(run, "example_gradients")
        eg = eg[eg["example_id"] == example]
        pick = legend_pick("group")
        gc = (
            alt.Chart(eg, title="Its gradient norm per layer group")
            .mark_line(point=True)
            .encode(x=epoch_x(), y=alt.Y("grad_norm:Q", title="gradient norm"), color=alt.Color("group:N", sort=None),
                    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
                    tooltip=["group:N", "epoch:Q", alt.Tooltip("grad_norm:Q", format=".4g")])
            .add_params(pick)
        )
        show_chart(gc, eg, f"example_{example}_gradients", run)
    else:
        st.caption("Per-example gradient norms: this run has no `example_gradients` table (Gradient accounting page says how to add it).")

# --- rewinding and flip set ------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.markdown("**Layer groups it needs** (rewinding to initialization)")
    if not noisy:
        st.caption("Tracked for noisy examples only.")
    elif has_table(info, "rewinding_examples"):
        rex = table(run, "rewinding_examples")
        rex = rex[rex["example_id"] == example]
        lost = rex.loc[~rex["memorized"], "group"].tolist()
        st.write(("Rewinding any of " + ", ".join(f"`{g}`" for g in lost) + " makes the model forget its noisy label.")
                 if lost else "No single group: it stays memorized whichever group is rewound.")
    else:
        st.caption("This run has no `rewinding_examples` table (Layer rewinding page says how to add it).")
with right:
    st.markdown("**Flip set** (greedy flipping)")
    if flip_row is not None:
        st.write(f"{'Flips' if flip_row['flipped'] else 'Did not flip'} after zeroing {int(flip_row['n_units'])} units "
                 f"(new prediction {class_name(classes, int(flip_row['new_prediction']))}): "
                 + ", ".join(f"`{u}`" for u in flip_units))
    elif choice != "plain":
        st.caption("Flip sets belong to the plain model.")
    else:
        st.caption("Greedy flipping did not run on this example (or the run has no `flipping` table).")

# --- attributions ----------------------------------------------------------------------
st.subheader("Attributions (Captum)")
st.markdown(
    "Which pixels raise the score of a class. Red pixels support the class, blue ones speak against it. "
    "Top row: the training label; bottom row: the true label (the same for a clean example). The right "
    "column repeats it with the example's flip set zeroed: for a memorized example the support for its "
    "noisy label should fade."
)


@st.fragment
def attribution_panel():
    with st.container():
        model_methods = method_names(run, choice)
        c1, c2, c3 = st.columns([2, 2, 2])
        method = c1.selectbox("Method", model_methods, key="ex_method",
                              help="\n".join(f"- **{m}**: {METHODS[m].summary}" for m in model_methods))
        layer = None
        if METHODS[method].layer:
            layer = c2.selectbox("Layer", layer_names(run, choice, method), key="ex_layer")
        baseline = c3.radio("Baseline", ["zeros", "blank image"], key="ex_baseline", horizontal=True,
                            help="reference input of IntegratedGradients, GradientShap, Occlusion and LayerConductance: "
                                 "all zeros (Captum's default; mid-grey here) or every pixel at the data's minimum")
        st.caption(METHODS[method].summary)
        targets = {"training label": train_label} if train_label == true_label else {"training label": train_label, "true label": true_label}
        states = {"trained model": ()} | ({f"flip set zeroed ({len(flip_units)} units)": tuple(flip_units)} if flip_units else {})
        frames = []
        for sname, units in states.items():
            values = attributions(run, choice, example, method, layer, list(targets.values()), units, baseline)
            for (tname, target), one in zip(targets.items(), values):
                frames.append(_long(one, f"{tname}: {class_name(classes, target)}", sname, one.ndim == 1))
        long = pd.concat(frames, ignore_index=True)
        show_chart(_attribution_chart(long, method, flip_units, list(states)), long, f"example_{example}_{method}", run)
        if not flip_units:
            st.caption("No flip set for this example, so only the trained model is shown.")


def _long(values: np.ndarray, target: str, state: str, units: bool) -> pd.DataFrame:
    if units:  # per-unit attributions of a linear layer: (units,)
        return pd.DataFrame({"unit": np.arange(len(values)), "attribution": values, "target": target, "model": state})
    h, w = values.shape  # (H, W) map, channels summed
    yy, xx = np.mgrid[0:h, 0:w]
    return pd.DataFrame({"x": xx.ravel(), "y": yy.ravel(), "attribution": values.ravel(), "target": target, "model": state})


def _attribution_chart(long: pd.DataFrame, method: str, flip_units: list[str], states: list[str]) -> alt.Chart:
    extent = float(np.nanmax(np.abs(long["attribution"]))) or 1.0
    color = alt.Color("attribution:Q", scale=alt.Scale(scheme="redblue", domain=[extent, -extent]), title=method)
    if "unit" in long:
        layer = st.session_state.get("ex_layer")
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
    size = 200 / max(long["x"].max() + 1, long["y"].max() + 1)
    return (
        alt.Chart(long).mark_rect()
        .encode(x=alt.X("x:O", axis=None), y=alt.Y("y:O", axis=None), color=color,
                tooltip=["x:O", "y:O", alt.Tooltip("attribution:Q", format=".4f")])
        .properties(width=size * (long["x"].max() + 1), height=size * (long["y"].max() + 1))
        .facet(row=alt.Row("target:N", title=None, sort="ascending"), column=alt.Column("model:N", title=None, sort=states))
    )


attribution_panel()
