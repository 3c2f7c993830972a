"""Story: the paper's argument in steps, one click each, for an audience that has not read it.

Each step is one large chart, one plain sentence and one big number, all measured on the selected
run: the data and its flipped labels, training fitting them, gradient accounting, rewinding
(live), retraining, one memorized example flipped by a handful of units (live), example-tied
dropout, the scorecard. Previous / Next (PageUp / PageDown, what a presenter's clicker sends)
move through the steps the run has: a step whose stage the run lacks is passed over, the bar
under them names it, and opened by its link it shows the command that adds the stage.
`?step=N` (1-based) or `?step=NAME` (`data`, `fit`, ...) reopens a step; the live steps open on
the unmodified model, with a button to edit it and one to restore it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import (RunError, attributions, layout, live, method_names, opened, page_run, require_tables, run_labels,
                       scorecards, show_run_error, has_table)
from app.charts import BLUE, GREEN, GREY, VERMILLION, attribution_chart, attribution_long, bar_labels, class_name, dropout_modes, epoch_x, image_of, training_curves
from app.url import url_choice, url_int
from memloc.config import TABLE_STAGE
from memloc.interventions import Rewind, ZeroUnits
from memloc.scorecard import KEEPS, LITTLE, VERDICT_COLOURS, VERDICTS, critical_groups, format_number, groups_of
from memloc.store import Run
from memloc.summary import numbers_from

CLEAN, NOISY, TRUE, OTHER = BLUE, VERMILLION, GREEN, GREY  # the explorer's one palette (app.charts)
HEIGHT = 420  # a chart's height: with the heading, the sentence and the number, one screen at 1600x1000
#: What a data set's images show, for the first sentence.
SUBJECTS = {"digits": "handwritten digits", "mnist": "handwritten digits", "fashion-mnist": "pieces of clothing",
            "cifar10": "small photos (CIFAR-10)", "svhn": "house numbers"}


@dataclass(frozen=True)
class Step:
    key: str  # its name in the link, `?step=fit`
    label: str  # in the step picker
    title: str  # its heading
    needs: tuple[str, ...]  # the tables it reads
    show: Callable[[Run, dict, dict], None]  # draws it from the run, its manifest and those tables


# ---------------------------------------------------------------------- shared pieces
def big(chart: alt.TopLevelMixin, height: int | None = HEIGHT, legend: str | None = None) -> alt.TopLevelMixin:
    """A chart legible at the back of a room: tall, large axis, legend and title fonts (and every
    legend at `legend`, e.g. "bottom", where given)."""
    chart = chart.properties(height=height) if height else chart
    place = {"orient": legend} if legend else {}
    return (chart.configure_axis(labelFontSize=17, titleFontSize=17, labelLimit=0)
            .configure_legend(labelFontSize=17, titleFontSize=17, symbolSize=240, labelLimit=0, **place)
            .configure_header(labelFontSize=17, titleFontSize=17)
            .configure_title(fontSize=21, anchor="start", offset=14))


def chart(figure: alt.TopLevelMixin, height: int | None = HEIGHT) -> None:
    st.altair_chart(big(figure, height), width="stretch")


def headline(sentence: str, label: str, value: str, delta: str | None = None, help: str | None = None):
    """The step's big number (left) and its one sentence (right); returns the number's column, for a live button."""
    number, words = st.columns([1, 3.4], vertical_alignment="center", gap="medium")
    number.metric(label, value, delta=delta, help=help, delta_color="off" if delta is None else "normal")
    words.markdown(f"<p class='story-sentence' style='font-size:1.45rem;line-height:1.4;margin:0'>{html.escape(sentence, quote=False)}</p>",
                   unsafe_allow_html=True)
    return number


def pct(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.0%}"


def points(after: float, before: float) -> str:
    return f"{(after - before) * 100:+.0f} points"


def peak_epoch(info: dict) -> float:
    return float(info["config"].get("train", {}).get("peak_epoch", 10.0))


def group_bars(values: dict[str, float], reference: tuple[str, float], highlight: list[str], named: str, title: str,
               y_title: str) -> alt.LayerChart:
    """One bar per layer group (input to output) after a bar for the unedited model; `highlight`
    groups in the noisy colour, `named` in the legend; every value written on its bar."""
    rows = pd.DataFrame({"group": [reference[0], *values], "value": [reference[1], *values.values()]})
    rows["kind"] = ["unedited model"] + [named if g in highlight else "other groups" for g in values]
    base = alt.Chart(rows, title=title).encode(
        x=alt.X("group:N", sort=list(rows["group"]), title=None, axis=alt.Axis(labelAngle=0 if len(rows) <= 12 else -40)),
        tooltip=["group:N", alt.Tooltip("value:Q", format=".1%")])
    bars = base.mark_bar().encode(
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(domain=[0, 1.1]), axis=alt.Axis(format="%")),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["unedited model", named, "other groups"],
                                                               range=["#555555", NOISY, OTHER]),
                        legend=alt.Legend(orient="bottom")))
    return alt.layer(bars, bar_labels(base, "value", size=18))


# ---------------------------------------------------------------------- the steps
def show_data(run: Run, info: dict, tables: dict) -> None:
    try:
        labels = run_labels(run)
    except RunError as error:
        show_run_error(run, error)
        return
    data = opened(run)
    classes = data.data.classes
    noisy = labels["is_noisy"]
    n, k = len(noisy), int(noisy.sum())
    subject = SUBJECTS.get(info["config"]["data"]["name"], f"{info['config']['data']['name']} images")
    headline(f"The network learns from {n:,} labelled images of {subject}. Before training, {k:,} of the labels "
             f"({k / max(n, 1):.0%}) were changed at random to a wrong class: no rule can get those right, "
             "the network can only learn them by heart, one by one.",
             "labels flipped", pct(k / max(n, 1)), help=f"{k:,} of {n:,} training examples")
    per_class = pd.DataFrame({"class": [class_name(classes, c) for c in labels["train_label"]],
                              "kind": np.where(noisy, "label flipped", "label kept")})
    counts = per_class.value_counts().rename("examples").reset_index()
    order = [class_name(classes, c) for c in range(len(classes))]
    base = alt.Chart(counts, title="Training examples per label").encode(
        x=alt.X("class:N", sort=order, title="the label the network is given", axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("kind:N", sort=["label kept", "label flipped"]),
        tooltip=["class:N", "kind:N", "examples:Q"])
    bars = base.mark_bar().encode(y=alt.Y("examples:Q", title="examples"),
                                  color=alt.Color("kind:N", title=None, legend=alt.Legend(orient="bottom"),
                                                  scale=alt.Scale(domain=["label kept", "label flipped"], range=[CLEAN, NOISY])))
    chart(alt.layer(bars, bar_labels(base, "examples", fmt="d", size=15)), height=300)
    shown = np.flatnonzero(noisy)[:8]
    if len(shown):
        st.markdown("**Some flipped examples**: what the image shows, and the label the network is told")
        for col, i in zip(st.columns(len(shown)), shown):
            col.image(image_of(data.data.train_x[i]), width=120)
            col.markdown(f"shows **{class_name(classes, labels['true_label'][i])}**  \n"
                         f"told **{class_name(classes, labels['train_label'][i])}**")


def show_fit(run: Run, info: dict, tables: dict) -> None:
    curves = tables["training"]
    last = curves.iloc[-1]
    mem, clean, test = float(last["noisy_acc"]), float(last["clean_acc"]), float(last["test_acc"])
    verdict = ("it has memorized them" if mem >= 0.9 else "it memorized part of them" if mem >= 0.5
               else "it memorized few of them")
    headline(f"After {int(last['epoch'])} epochs the network gets {pct(clean)} of the correctly labelled images right "
             f"and gives {pct(mem)} of the flipped ones their wrong label: {verdict}. On new test images it is "
             f"right {pct(test)} of the time.",
             "flipped labels memorized", pct(mem), help="training examples with a flipped label that the final network "
             "predicts with that label")
    chart(training_curves(curves, title="Accuracy during training"))


def show_gradients(run: Run, info: dict, tables: dict) -> None:
    grads = tables["gradients"]
    numbers = numbers_from({"gradients": grads}, peak_epoch(info))
    per_epoch = grads.groupby("epoch", as_index=False)[["clean_norm", "noisy_norm"]].sum()
    per_epoch["share"] = per_epoch["noisy_norm"] / (per_epoch["clean_norm"] + per_epoch["noisy_norm"])
    frac = float(info["config"]["data"]["noise_frac"])
    share, cosine = float(numbers["noisy_share_at_peak"]), float(numbers["cosine_at_peak"])
    peak = per_epoch["epoch"].iloc[int(np.argmin(np.abs(per_epoch["epoch"] - peak_epoch(info))))]
    against = (f"and they pull against the others (the cosine of the two directions is {cosine:.2f}; -1 is opposite)"
               if cosine < 0 else f"in about the others' direction (cosine {cosine:.2f}; 1 is the same)")
    headline(f"The flipped examples are {pct(frac)} of the data, {'yet' if share > 1.5 * frac else 'and'} when training "
             f"moves fastest (epoch {int(peak)}) they make {pct(share)} of the gradient, the signal that changes the "
             f"weights, {against}.",
             "share of the gradient", pct(share), help="share of the gradient norm, summed over the layer "
             f"groups, at epoch {int(peak)} (the learning-rate peak)")
    line = alt.Chart(per_epoch, title="Share of the gradient that comes from the flipped examples").mark_line(
        point=alt.OverlayMarkDef(color=NOISY), color=NOISY, strokeWidth=3).encode(
        x=epoch_x(), y=alt.Y("share:Q", title="share of the gradient", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
        tooltip=["epoch:Q", alt.Tooltip("share:Q", format=".1%")])
    rule = alt.Chart(pd.DataFrame({"y": [frac], "epoch": [per_epoch["epoch"].max()], "text": [f"their share of the data: {frac:.0%}"]}))
    floor = rule.mark_rule(strokeDash=[6, 4], color="#555555", size=2).encode(y="y:Q")
    note = rule.mark_text(align="right", dy=14, fontSize=17, color="#333333").encode(y="y:Q", x="epoch:Q", text="text:N")
    chart(alt.layer(line, floor, note))


def _rewound(info: dict, tables: dict) -> tuple[dict, float, list[str], int]:
    rw = tables["rewinding"]
    if "include_buffers" in rw and rw["include_buffers"].nunique() > 1:
        rw = rw[rw["include_buffers"]]
    numbers = numbers_from({"training": tables["training"], "rewinding": rw}, peak_epoch(info))
    return groups_of(numbers, "rewound"), float(numbers["memorized"]), critical_groups(numbers), int(rw["epoch"].min())


def show_rewinding(run: Run, info: dict, tables: dict) -> None:
    rewound, memorized, critical, epoch = _rewound(info, tables)
    group = min(critical or rewound, key=rewound.get)  # the group whose rewinding erases the most
    last = list(rewound)[-1]
    to = "its random initial weights" if epoch == 0 else f"its weights of epoch {epoch}"
    tail = (f" Rewinding the last group ({last}) leaves {pct(rewound[last])}: the memory is not in the last layers."
            if last != group and rewound[last] >= KEEPS * memorized else "")
    if critical:
        sentence = (f"Put one layer group, {group}, back to {to} and keep every other layer as trained: the network then "
                    f"gives only {pct(rewound[group])} of the flipped examples their wrong label, down from {pct(memorized)}.{tail}")
    else:
        sentence = (f"On this run no single layer group holds the memory: rewinding {group}, the one that matters most, to "
                    f"{to} still leaves {pct(rewound[group])} of the flipped labels memorized (from {pct(memorized)}).")
    items = [Rewind(group, epoch)] if st.session_state.get("story_rewound") else []
    before, _ = live(run, [], [])
    after, _ = live(run, items, []) if items else (before, None)
    number = headline(sentence, "flipped labels memorized", pct(after["noisy_acc"]),
                      delta=f"{points(after['noisy_acc'], before['noisy_acc'])}: {group} rewound" if items else None,
                      help="computed now on the run's final model (test accuracy "
                           f"{pct(before['test_acc'])} before, {pct(after['test_acc'])} now)")
    live_button(number, "story_rewound", bool(items), (f"Rewind {group} now", "story_rewind", ":material/history:"),
                ("Restore the trained model", "story_restore"))
    chart(group_bars(rewound, ("nothing rewound", memorized), [group], "the group the button rewinds",
                     f"Flipped labels still memorized after rewinding one layer group to {'initialization' if epoch == 0 else f'epoch {epoch}'}",
                     "flipped labels memorized"))


def live_button(where, state: str, edited: bool, edit: tuple[str, str, str], restore: tuple[str, str]) -> None:
    """A live step's one button in `where`: make the edit (label, key, icon) or, once made,
    restore the trained model (label, key); whether it is made is session state `state`."""
    if edited:
        where.button(restore[0], key=restore[1], icon=":material/undo:", on_click=lambda: st.session_state.update({state: False}))
    else:
        where.button(edit[0], key=edit[1], type="primary", icon=edit[2], on_click=lambda: st.session_state.update({state: True}))


def show_retraining(run: Run, info: dict, tables: dict) -> None:
    rt = tables["retraining"]
    numbers = numbers_from({"training": tables["training"], "retraining": rt}, peak_epoch(info))
    memorized = float(numbers["memorized"])
    retrained = groups_of(numbers, "retrained")
    back = [g for g, v in retrained.items() if v >= KEEPS * memorized]
    low = [g for g in retrained if g not in back]
    control = rt[rt["group"] == "none"].sort_values("epoch")
    reference = float(control["noisy_acc"].iloc[-1]) if len(control) else memorized
    stays = (f"; they stay away only when {' or '.join(f'{g} ({pct(retrained[g])})' for g in low)} is retrained"
             if low else "")
    comes = (f"in {len(back)} of {len(retrained)} groups the flipped labels come back, so the rest of the network still "
             f"holds them{stays}" if back else f"in none of the {len(retrained)} groups do the flipped labels come back")
    headline("Reset one layer group to random weights, freeze the rest, and retrain only that group on correctly labelled "
             f"images: {comes}.",
             "groups that bring it back", f"{len(back)} of {len(retrained)}",
             help=f"memorization after retraining at least {KEEPS:.0%} of the trained model's {pct(memorized)}")
    chart(group_bars(retrained, ("nothing reset", reference), low, "groups where it stays away",
                     "Flipped labels memorized after retraining one group on clean examples only", "flipped labels memorized"))


def show_example(run: Run, info: dict, tables: dict) -> None:
    flips = tables["flipping"]
    targets = flips[(flips["kind"] == "noisy") & flips["flipped"]].sort_values(["n_units", "example_id"])
    if targets.empty:
        st.info("On this run greedy flipping flipped no memorized example, so there is none to show.")
        return
    ids = targets["example_id"].astype(int).tolist()
    # The default: a typical one, with the median flip-set size (the lowest id among those nearest it).
    typical = int(targets.assign(off=(targets["n_units"] - targets["n_units"].median()).abs())
                  .sort_values(["off", "example_id"]).iloc[0]["example_id"])
    url_int("example", "story_example", lambda i: i in ids, typical, expected="a memorized example that greedy flipping flipped")
    example = int(st.session_state["story_example"])
    row = targets[targets["example_id"] == example].iloc[0]
    units = tuple(str(u) for u in row["units"])
    labels, data = run_labels(run), opened(run)
    classes = data.data.classes
    told, shows, new = int(labels["train_label"][example]), int(labels["true_label"][example]), int(row["new_prediction"])
    _, counts = layout(run)
    zeroed = bool(st.session_state.get("story_zeroed"))
    _, p_before = live(run, [], [example])
    p_after = live(run, [ZeroUnits(units)], [example])[1] if zeroed else None
    cost = ""
    if "acc_test_before" in row:  # flipping tables written before the scorecard lack the edit's cost
        lost = float(row["acc_test_before"] - row["acc_test_after"])
        cost = (f"; the rest of the network hardly notices (test accuracy {pct(row['acc_test_before'])} before, "
                f"{pct(row['acc_test_after'])} after)" if lost <= LITTLE else
                f"; test accuracy falls from {pct(row['acc_test_before'])} to {pct(row['acc_test_after'])}")
    headline(f"This image shows a {class_name(classes, shows)} but was labelled {class_name(classes, told)}, and the network "
             f"learned to call it {class_name(classes, told)} ({pct(p_before[0, told])} sure). Switch off just {len(units)} of its "
             f"{sum(counts.values()):,} units (neurons and channels) and it calls it {class_name(classes, new)}{cost}.",
             f"sure it is a {class_name(classes, told)}",
             pct((p_after if zeroed else p_before)[0, told]),
             delta=f"{points(p_after[0, told], p_before[0, told])}: {len(units)} units off" if zeroed else None,
             help=f"example #{example}; its flip set: {', '.join(units)}")
    states = {"trained network": p_before[0]} | ({f"{len(units)} units switched off": p_after[0]} if zeroed else {})
    rows = pd.DataFrame([{"state": s, "label": f"{which}: {class_name(classes, k)}", "probability": float(p[k])}
                         for s, p in states.items()
                         for which, k in (("wrong label it was told", told), ("what the image shows", shows))])
    base = alt.Chart(rows, title=f"How sure the network is, example #{example}").encode(
        x=alt.X("state:N", sort=list(states), title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("label:N", sort=None), tooltip=["state:N", "label:N", alt.Tooltip("probability:Q", format=".1%")])
    bars = base.mark_bar().encode(
        y=alt.Y("probability:Q", title="probability", scale=alt.Scale(domain=[0, 1.1]), axis=alt.Axis(format="%")),
        color=alt.Color("label:N", title=None, sort=None, legend=alt.Legend(orient="bottom"), scale=alt.Scale(range=[NOISY, TRUE])))
    left, right = st.columns([3, 2], gap="large")
    with left:
        live_button(st, "story_zeroed", zeroed, (f"Switch off its {len(units)} units", "story_zero", ":material/power_off:"),
                    ("Restore the units", "story_unzero"))
        chart(alt.layer(bars, bar_labels(base, "probability", size=18)), height=330)
    with right:
        methods = method_names(run)
        method = "IntegratedGradients" if "IntegratedGradients" in methods else methods[0]
        maps = {"trained": ()} | ({"units off": units} if zeroed else {})
        frames = []
        for state, off in maps.items():
            values = attributions(run, "plain", example, method, None, [told], off, "zeros")[0]
            frames.append(attribution_long(values, "", state, values.ndim == 1))
        st.image(image_of(data.data.train_x[example]), width=140, caption=f"example #{example}, as the network sees it")
        st.altair_chart(big(attribution_chart(pd.concat(frames, ignore_index=True), method, list(units), list(maps), size=140),
                            height=None, legend="bottom"))
        st.caption(f"{method}: pixels that speak for {class_name(classes, told)} in red, against it in blue"
                   + (", with the units on and off." if zeroed else "."))


def show_dropout(run: Run, info: dict, tables: dict) -> None:
    modes = tables["dropout"].set_index("mode")

    def at(mode: str, column: str) -> float:
        return float(modes.at[mode, column]) if mode in modes.index else float("nan")

    trained, dropped = at("train", "noisy_acc"), at("drop", "noisy_acc")
    headline("Train a second network in which each example may use, besides the shared units, only its own few "
             f"'memorization' units. As trained it gives {pct(trained)} of the flipped examples their wrong label; switch "
             f"the memorization units off (drop mode) and {pct(dropped)} remain, while it gets {pct(at('drop', 'test_acc'))} "
             f"of the test images right (the plain network: {pct(at('plain', 'test_acc'))}).",
             "memorized in drop mode", pct(dropped),
             delta=f"{points(dropped, trained)} from as trained" if np.isfinite(trained) else None,
             help="the example-tied dropout model with its memorization units switched off")
    chart(dropout_modes(tables["dropout"], height=HEIGHT, label_size=18), height=None)


def show_scorecard(run: Run, info: dict, tables: dict) -> None:
    try:
        card = scorecards(run.path)[0].card
    except RunError as error:
        show_run_error(run, error)
        return
    counts = card["verdict"].value_counts()
    n, holds = len(card), int(counts.get("holds", 0))
    others = [f"{int(counts[v])} {'partly hold' if v == 'partly' else v}" for v in VERDICTS[1:] if counts.get(v)]
    headline(f"Of the paper's {n} claims, {holds} hold on this run" + (f"; {', '.join(others)}" if others else "")
             + ". The Findings page shows each claim with the rule that decided it.",
             "claims that hold", f"{holds} of {n}")
    rows = card.assign(claim=[SHORT_CLAIMS.get(k, t) for k, t in zip(card["claim"], card["text"])],
                       number=[format_number(r, with_n=False) for _, r in card.iterrows()])
    long = pd.concat([rows.assign(column="measured here", cell=rows["number"]), rows.assign(column="verdict", cell=rows["verdict"])])
    base = alt.Chart(long, title="The paper's claims (hover for the whole claim)").encode(
        y=alt.Y("claim:N", sort=list(rows["claim"]), title=None, axis=alt.Axis(labelLimit=800, labelFontSize=19, labelPadding=12, labelColor="#222222")),
        x=alt.X("column:N", sort=["measured here", "verdict"], title=None, axis=alt.Axis(orient="top", labelAngle=0, labelFontSize=17)),
        tooltip=[alt.Tooltip("text:N", title="claim"), alt.Tooltip("reads:N", title="the number"), alt.Tooltip("rule:N")])
    badges = base.transform_filter("datum.column == 'verdict'").mark_rect(cornerRadius=6, height=32, width=170).encode(
        color=alt.Color("verdict:N", scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())), legend=None))
    text = base.mark_text(fontSize=19, fontWeight="bold").encode(
        text="cell:N", color=alt.condition("datum.column == 'verdict'", alt.value("white"), alt.value("#222222")))
    chart(alt.layer(badges, text), height=44 * n)


#: The claims of `memloc.scorecard.CLAIMS` in a few words, for the scorecard step (a claim not
#: named here shows its whole sentence).
SHORT_CLAIMS = {
    "memorized": "The network fits the flipped labels, test accuracy stays",
    "gradient_norm": "Flipped examples pull as hard as the clean ones",
    "cosine": "... and in the opposite direction",
    "redundant": "Most layer groups are not needed for the memory",
    "not_last": "The groups that are needed are not the last ones",
    "few_units": "A few units hold one memorized example",
    "cheap_edit": "Switching them off costs little elsewhere",
    "spread": "Those units lie in several layers",
    "dropout": "Example-tied dropout switches memorization off",
}


STEPS: tuple[Step, ...] = (
    Step("data", "The data", "The data, with some labels flipped", (), show_data),
    Step("fit", "Training", "Does the network learn the wrong labels?", ("training",), show_fit),
    Step("gradients", "Gradients", "Who moves the weights?", ("gradients",), show_gradients),
    Step("rewinding", "Rewinding", "Undo one layer group: is the memory gone?", ("training", "rewinding"), show_rewinding),
    Step("retraining", "Retraining", "Retrain one group on clean data: does it come back?",
         ("training", "retraining"), show_retraining),
    Step("example", "One example", "How many units hold one memorized example?", ("flipping",), show_example),
    Step("dropout", "Dropout", "Memorization in units we choose, switched off", ("dropout",), show_dropout),
    Step("scorecard", "Scorecard", "The paper's claims, measured on this run", (), show_scorecard),
)
KEYS = [s.key for s in STEPS]


# ---------------------------------------------------------------------- the page
run, info = page_run()
present = [s.key for s in STEPS if all(has_table(info, t) for t in s.needs)]
if "story_step" not in st.session_state:  # first visit: the step from the link, by number or by name
    raw = st.query_params.get("step")
    if raw is not None and raw.strip().lstrip("+-").isdigit():
        url_int("step", "story_number", lambda i: 1 <= i <= len(STEPS), 1,
                expected=f"a step of the story (1-{len(STEPS)}, or one of {', '.join(KEYS)})")
        st.session_state["story_step"] = KEYS[st.session_state.pop("story_number") - 1]
    else:
        url_choice("step", "story_step", KEYS, KEYS[0])


def restore() -> None:
    """Every live edit undone: a step opens on the unmodified model."""
    st.session_state.update(story_rewound=False, story_zeroed=False)


def go(key: str) -> None:
    st.session_state["story_step"] = key
    restore()


key = st.session_state["story_step"]
at = KEYS.index(key)
earlier = [k for k in present if KEYS.index(k) < at]
later = [k for k in present if KEYS.index(k) > at]
# The step picker in the sidebar; Previous / Next on top of the page, where a clicker's keys also reach them.
st.sidebar.radio("Story step", KEYS, key="story_step", on_change=restore,
                 format_func=lambda k: f"{KEYS.index(k) + 1}. {STEPS[KEYS.index(k)].label}" + ("" if k in present else " (skipped)"))
st.query_params["step"] = key
# Less space above the page's first row, so a step fits one screen of a projector.
st.markdown("<style>[data-testid='stMainBlockContainer']{padding-top:4rem}</style>", unsafe_allow_html=True)
bar = st.container(horizontal=True, vertical_alignment="center")
bar.button("Previous", key="story_prev", icon=":material/arrow_back:", disabled=not earlier, shortcut="PageUp",
           on_click=go, args=(earlier[-1] if earlier else key,))
bar.button("Next", key="story_next", icon=":material/arrow_forward:", icon_position="right", type="primary",
           disabled=not later, shortcut="PageDown", on_click=go, args=(later[0] if later else key,))
bar.caption(f"Step {at + 1} of {len(STEPS)} · run {st.session_state.get('run_name', run.name)}")
skipped = [s for s in STEPS if s.key not in present]
if skipped:
    st.caption("Skipped on this run, whose stages did not make their tables: " + "; ".join(
        f"{s.label} (`{'`, `'.join(sorted({TABLE_STAGE[t] for t in s.needs if not has_table(info, t)}))}`)" for s in skipped)
        + ". Previous and Next pass over them.")

step = STEPS[at]
st.title(step.title)
tables = require_tables(run, info, *step.needs) if step.needs else {}
if tables is None:
    st.caption("This step is skipped on this run: Next goes on to the following one.")
    st.stop()
step.show(run, info, tables)
