"""One example: its labels, learning curve, gradients and rewinding, and its flip set: the
units whose zeroing flips its prediction, with its probabilities and attributions before and
after they are zeroed; for a target of stage localize, the units each localization method picks
(zeroed the same way)."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app import selection
from app.cache import (attributions, flip_set, has_table, layer_names, layout, live, method_names, model_choices,
                       model_in_use, opened, optional_table, page_run, run_labels)
from app.charts import (EDITED, GREY, UNEDITED, VERMILLION, accuracy_metrics, attribution_chart, attribution_long, bar_labels, class_name, epoch_x, image_of,
                        legend_pick, show_chart)
from app.url import url_int
from memloc.attribution import METHODS
from memloc.interventions import UnitIndex, ZeroUnits, unit_name
from memloc.localization import METHOD_NAMES, rate_counts

BEFORE = "before: trained model"
DIFFERENCE = "after − before"
MAP_SIZE = 240  # pixels per attribution map, to read from the back of a room
#: The benchmarks of stage localize whose picks are units of a model this page shows.
PICKED_ON = {"deletion": "plain model", "dropout": "dropout model (its memorization units known)"}

run, info = page_run()
st.title("One example")
st.markdown(
    "Everything memloc knows about one training example: its image and labels, how its loss fell "
    "during training, where its gradient pulls, which layer groups it needs, the units that hold it "
    "(its *flip set*: greedy flipping zeroes them one by one until the model stops predicting the "
    "example's training label) and, with Captum, which pixels its prediction rests on. Zero its flip "
    "set to compare before and after: its probabilities, the model's accuracies and the attributions."
)

data = opened(run)  # a run whose data or labels cannot be loaded stops here with its card
labels = run_labels(run)
classes = data.data.classes
n = len(labels["is_noisy"])
url_int("example", "ex_id", lambda i: 0 <= i < n, int(np.flatnonzero(labels["is_noisy"])[0]) if labels["is_noisy"].any() else 0,
        expected=f"a training example id of this run (0-{n - 1})")
choices = model_choices(info)
if "ex_model" not in st.session_state:
    st.session_state["ex_model"] = st.query_params.get("model") if st.query_params.get("model") in choices else "plain"
if "ex_units" not in st.session_state:
    st.session_state["ex_units"] = []  # the page opens on the model as trained: "before"


def _unmodified():
    st.session_state["ex_units"] = []


c1, c2 = st.columns([1, 3])
example = int(c1.number_input("Example id", min_value=0, max_value=n - 1, step=1, key="ex_id", on_change=_unmodified))
choice = c2.radio("Model", list(choices), format_func=choices.__getitem__, horizontal=True, key="ex_model",
                  on_change=_unmodified,
                  help="the plain model, or the model trained with example-tied dropout (Example-tied dropout page)")
st.query_params["example"] = str(example)
st.query_params["model"] = choice
selection.panel(run, info, n, example)

noisy = bool(labels["is_noisy"][example])
train_label, true_label = int(labels["train_label"][example]), int(labels["true_label"][example])

# --- flip set: from the flip stage, or computed now -----------------------------------
flip_units: list[str] = []
if choice == "plain":
    flips = optional_table(run, info, "flipping")  # damaged: its card, and the flip set is computed now
    match = flips[flips["example_id"] == example] if flips is not None else None
    computed_now = match is None or not len(match)
    if computed_now:
        flip_units, flipped, new_prediction = flip_set(run, example)
    else:
        row = match.iloc[0]
        flip_units, flipped, new_prediction = [str(u) for u in row["units"]], bool(row["flipped"]), int(row["new_prediction"])

st.subheader("Before and after zeroing its flip set")
if choice != "plain":
    st.caption("Flip sets belong to the plain model: choose it above to zero this example's flip set.")
elif not flip_units:
    st.markdown(f"The model does not predict its training label **{class_name(classes, train_label)}**, so it has "
                "no flip set: there is nothing to flip.")
else:
    units_text = ", ".join(f"`{u}`" for u in flip_units)
    st.markdown((f"Zeroing these **{len(flip_units)}** units flips its prediction from its training label "
                 f"**{class_name(classes, train_label)}** to **{class_name(classes, new_prediction)}**: {units_text}.")
                if flipped else
                (f"Greedy flipping did not flip it within its cap of {data.config.flip.cap} units (the prediction "
                 f"stays **{class_name(classes, train_label)}**); it zeroed {units_text}."))
    st.caption("Computed live now: this example is not among the flip stage's targets, so greedy flipping ran on the "
               "run's final model with the run's `flip` settings (cached for the session)." if computed_now else
               "From the flip stage (`flipping` table, Neurons page).")
    _, unit_counts = layout(run)
    all_units = [unit_name(layer, i) for layer, count in unit_counts.items() for i in range(count)]
    row = st.container(horizontal=True)
    row.button(f"Zero its flip set ({len(flip_units)} units)", key="ex_zero", type="primary",
               disabled=st.session_state["ex_units"] == flip_units,
               on_click=lambda: st.session_state.update(ex_units=list(flip_units)))
    row.button("Reset: zero nothing", key="ex_reset", disabled=not st.session_state["ex_units"], on_click=_unmodified)
    st.multiselect("Units zeroed", all_units, key="ex_units", placeholder="none: the model as trained; zero its flip set "
                   "above, or pick units (layer_path[index]; type to search)")

# --- the units each localization method picks for it (stage localize, Localizers page) ------------
picks = optional_table(run, info, "localizer_units")  # damaged: its card, and no such section
picks = picks[(picks["example_id"] == example) & picks["benchmark"].isin(PICKED_ON)] if picks is not None else None
if picks is not None and len(picks):
    st.subheader("What each localization method picks for this example")
    st.markdown("The Localizers page compares methods that name the units holding an example's memorization. This "
                "example was one of their targets: here are the units each method picks for it"
                + (", and zeroing them shows whether the model then forgets it." if (picks["benchmark"] == "deletion").any()
                   else "."))
    c1, c2, c3 = st.columns([2, 2, 3])
    on = c1.radio("Units of the", [b for b in PICKED_ON if (picks["benchmark"] == b).any()], format_func=PICKED_ON.__getitem__,
                  key="ex_loc_benchmark")
    picks = picks[picks["benchmark"] == on]
    method = c2.selectbox("Method", [m for m in METHOD_NAMES if (picks["method"] == m).any()],
                          format_func=METHOD_NAMES.__getitem__, key="ex_loc_method")
    picks = picks[picks["method"] == method]
    shown = pd.DataFrame({"unit": picks["unit"], "layer": picks["layer"], "rank in its layer": picks["rank"] + 1,
                          "score": picks["score"]})
    if on == "deletion":  # the top units at the largest rate, best first in each layer: a smaller rate's are a prefix
        rates = sorted(data.config.localize.rates)
        rate = c3.radio("Units per layer", rates, format_func=lambda r: f"top {r:g}%", index=len(rates) - 1,
                        horizontal=True, key="ex_loc_rate", help="each layer's top r % of its units by the method's "
                        "score, at least one (as in the deletion benchmark)")
        with model_in_use(run) as model:
            index = UnitIndex(model)
            counts = dict(zip(index.layers, rate_counts(index, rate)))
        shown = shown[picks["rank"] < picks["layer"].map(counts)]
        if choice == "plain":  # (the flip set belongs to the plain model)
            shown = shown.assign(**{"in its flip set": shown["unit"].isin(flip_units)})
        method_units = shown["unit"].tolist()
        st.button(f"Zero {METHOD_NAMES[method]}'s {len(method_units)} units", key="ex_zero_method",
                  disabled=choice != "plain" or st.session_state["ex_units"] == method_units,
                  on_click=lambda: st.session_state.update(ex_units=list(method_units)))
        st.caption("They replace the units zeroed above; the probabilities and accuracies below follow."
                   if choice == "plain" else "These are the plain model's units: choose it above to zero them.")
    else:
        shown = shown.assign(**{"its own memorization unit": picks["truth"].astype(bool)})
        st.caption("Channels of the dropout model's example-tied dropout layers, listed only: in each layer as many "
                   "as this example has memorization units there. Drop mode (Model above) switches all of those off.")
    st.dataframe(shown, hide_index=True)
zeroed = st.session_state["ex_units"] if choice == "plain" else []
items = [ZeroUnits(tuple(zeroed))] if zeroed else []
after_state = f"after: {len(zeroed)} units zeroed"
states = [BEFORE, after_state] if zeroed else [BEFORE]

# --- image, labels, probabilities before and after ---------------------------------------
before, p_before = live(run, [], [example], choice=choice)
after, p_after = live(run, items, [example], choice=choice) if items else (before, p_before)
pred_before, pred_after = int(p_before[0].argmax()), int(p_after[0].argmax())
left, right = st.columns([1, 3])
with left:
    st.image(image_of(data.data.train_x[example]), width=160)
    st.markdown(f"**{'Noisy' if noisy else 'Clean'} example #{example}**  \ntrue label **{class_name(classes, true_label)}**  \n"
                f"training label **{class_name(classes, train_label)}**  \n"
                f"prediction **{class_name(classes, pred_before)}** ({choices[choice]})"
                + (f"  \nafter zeroing **{class_name(classes, pred_after)}**" if items else ""))
with right:
    marks = {train_label: "training label"} | ({true_label: "true label"} if true_label != train_label else {})
    # A class axis label of two lines (`|`): the class and, under it, which of the example's labels it is.
    names = [class_name(classes, k) + (f"|{marks[k]}" if k in marks else "") for k in range(len(classes))]
    p = pd.DataFrame({"class": names * len(states), "model": np.repeat(states, len(classes)),
                      "probability": np.concatenate([p_before[0], p_after[0]][: len(states)])})
    pick = legend_pick("model")
    base = alt.Chart(p, title="Predicted probabilities" + (" before and after zeroing" if items else "")).encode(
        x=alt.X("class:N", sort=None, title=None, axis=alt.Axis(labelAngle=0, labelExpr="split(datum.label, '|')")),
        xOffset=alt.XOffset("model:N", sort=states),
        tooltip=["class:N", "model:N", alt.Tooltip("probability:Q", format=".3f")])
    bars = (
        base.mark_bar()
        .encode(y=alt.Y("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1.1])),
                color=alt.Color("model:N", title=None, sort=states, legend=alt.Legend(orient="bottom", labelLimit=0),
                                scale=alt.Scale(domain=states, range=[UNEDITED, EDITED][: len(states)])),
                opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)))
        .add_params(pick)
    )
    show_chart(alt.layer(bars, bar_labels(base, "probability")).properties(height=420), p,
               f"example_{example}_probabilities", run)
accuracy_metrics(after, before if items else None)
st.caption("The whole model's accuracies" + (", and their change from zeroing these units: the cost of the edit."
                                             if items else " (zero units above to see what the edit costs)."))

# --- learning curve and gradients -------------------------------------------------
left, right = st.columns(2)
with left:
    curve = optional_table(run, info, "example_training")
    if curve is not None:
        curve = curve[curve["example_id"] == example].assign(
            prediction=lambda d: np.where(d["correct"], "training label", "another class"))
        lc = (
            alt.Chart(curve, title="Learning curve (training pass of each epoch)")
            .mark_line(point=True, color=UNEDITED)
            .encode(x=epoch_x(), y=alt.Y("loss:Q", title="cross-entropy vs training label"),
                    tooltip=["epoch:Q", alt.Tooltip("loss:Q", format=".3f"), "prediction:N"])
        )
        lc = lc + lc.mark_point(filled=True, size=40).encode(
            color=alt.Color("prediction:N", title="predicted", legend=alt.Legend(orient="bottom"),
                            scale=alt.Scale(domain=["training label", "another class"], range=[VERMILLION, GREY])))
        show_chart(lc, curve, f"example_{example}_learning_curve", run)
with right:
    eg = optional_table(run, info, "example_gradients")
    if eg is not None:
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
    elif not has_table(info, "example_gradients"):  # (a damaged one got its card)
        st.caption("Per-example gradient norms: this run has no `example_gradients` table (Gradient accounting page says how to add it).")

# --- rewinding ---------------------------------------------------------------------------
st.markdown("**Layer groups it needs** (rewinding to initialization)")
rex = optional_table(run, info, "rewinding_examples") if noisy else None
if not noisy:
    st.caption("Tracked for noisy examples only.")
elif rex is not None:
    rex = rex[rex["example_id"] == example]
    lost = rex.loc[~rex["memorized"], "group"].tolist()
    st.write(("Rewinding any of " + ", ".join(f"`{g}`" for g in lost) + " makes the model forget its noisy label.")
             if lost else "No single group: it stays memorized whichever group is rewound.")
elif not has_table(info, "rewinding_examples"):
    st.caption("This run has no `rewinding_examples` table (Layer rewinding page says how to add it).")

# --- attributions ----------------------------------------------------------------------
st.subheader("Attributions (Captum)")
st.markdown(
    "Which pixels raise the score of a class. Red pixels support the class, blue ones speak against it. "
    "Top row: the training label; bottom row: the true label (the same for a clean example). With units "
    "zeroed, the next column repeats it on the edited model and the last one shows what changed, after "
    "minus before (red: more support than before, blue: less): for a memorized example the support for "
    "its noisy label should fade."
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
        target_names = [f"{name}: {class_name(classes, k)}" for name, k in targets.items()]
        maps = {state: attributions(run, choice, example, method, layer, list(targets.values()), units, baseline)
                for state, units in zip(states, [(), tuple(zeroed)])}
        if zeroed:
            maps[DIFFERENCE] = maps[after_state] - maps[BEFORE]
        long = pd.concat([attribution_long(one, target, state, one.ndim == 1)
                          for state, values in maps.items() for target, one in zip(target_names, values)], ignore_index=True)
        if "unit" in long or not zeroed:  # a layer's units (one scale for all three columns), or before alone
            chart = attribution_chart(long, method, zeroed, list(maps), layer, size=MAP_SIZE)
        else:  # the maps before and after on one scale, the difference on its own, both centred on 0
            chart = alt.hconcat(attribution_chart(long[long["model"] != DIFFERENCE], method, zeroed, states, size=MAP_SIZE),
                                attribution_chart(long[long["model"] == DIFFERENCE], DIFFERENCE, zeroed, [DIFFERENCE],
                                                  size=MAP_SIZE)
                                ).resolve_scale(color="independent")
        show_chart(chart, long, f"example_{example}_{method}", run)
        if not zeroed:
            st.caption("Only the model as trained: zero units above (its flip set) to see after, and the difference.")


attribution_panel()
