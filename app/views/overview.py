"""Overview: what the run is and how training fitted clean and noisy labels."""

import altair as alt
import pandas as pd
import streamlit as st

from app.cache import RunError, current_run, manifest, run_labels, show_run_error, table
from app.charts import COLOURS, show_chart, training_curves
from memloc.config import STAGES
from memloc.train import memorized_from

run = current_run()
st.title(f"Overview: {st.session_state['run_name']}")
st.markdown(
    "A model is trained on data where a share of the training labels was flipped to a wrong "
    "class (the *noisy* examples). The curves show accuracy on clean examples, on noisy "
    "examples against their *noisy* labels (memorization: the model fits labels it cannot "
    "have learned from the images) and on the test set, after every epoch. Click a legend "
    "entry to highlight one curve; hover for values."
)

try:
    info = manifest(run)
    cfg = info["config"]
    cols = st.columns(4)
    cols[0].metric("Data set", cfg["data"]["name"])
    cols[1].metric("Model", cfg["model"]["name"])
    cols[2].metric("Label noise", f"{cfg['data']['noise_frac']:.0%}")
    cols[3].metric("Seed", info["seed"])
    order = {name: i for i, name in enumerate(STAGES)}  # the order precompute runs them in
    stages = pd.DataFrame(
        [{"stage": name, "status": s.get("status"), "seconds": s.get("seconds")}
         for name, s in sorted(info["stages"].items(), key=lambda item: order.get(item[0], len(order)))]
    )
    st.caption(
        f"{info['versions'].get('torch', '?')} torch; model options {cfg['model'].get('options') or 'default'}; "
        f"{cfg['train']['epochs']} epochs, batch {cfg['train']['batch_size']}, peak learning rate {cfg['train']['lr']}."
    )
    st.dataframe(stages, hide_index=True)
    if not (info["stages"].get("train", {}).get("status") == "complete"):
        st.warning(f"Training of this run is not complete; resume it with `python -m precompute run --out {run.path}`.")
        st.stop()
    curves = table(run, "training")
except RunError as error:
    show_run_error(run, error)
    st.stop()

show_chart(training_curves(curves), curves, "training", run)
last = curves.iloc[-1]
st.caption(
    f"After epoch {int(last['epoch'])}: clean {last['clean_acc']:.1%}, memorized {last['noisy_acc']:.1%} "
    f"of noisy examples, test {last['test_acc']:.1%}."
)

st.subheader("When each noisy example became memorized")
st.markdown(
    "For every noisy example: the first epoch from which the model predicted its noisy label in "
    "every later epoch (from the training pass of each epoch). Clean examples are learned early; "
    "noisy ones only once the model starts to memorize, usually after the learning-rate peak."
)
try:
    per_example = table(run, "example_training")
    is_noisy = run_labels(run)["is_noisy"]
except RunError as error:
    show_run_error(run, error)
    st.stop()
when = memorized_from(per_example, is_noisy)
never = int(when["memorized_from"].isna().sum())
last_epoch = int(curves["epoch"].max())
hist = (
    alt.Chart(when.dropna(), title="Noisy examples by the epoch from which they stay memorized")
    .mark_bar(color=COLOURS["noisy"])
    .encode(
        x=alt.X("memorized_from:Q", title="epoch", bin=alt.Bin(step=1, extent=[0, last_epoch + 1]),
                axis=alt.Axis(format="d")),
        y=alt.Y("count():Q", title="noisy examples"),
        tooltip=[alt.Tooltip("memorized_from:Q", title="from epoch", bin=True), alt.Tooltip("count():Q", title="noisy examples")],
    )
)
show_chart(hist, when, "memorized_from", run)
st.caption(
    f"{len(when) - never} of {len(when)} noisy examples are memorized at the end"
    + (f"; {never} are not predicted with their noisy label in the last epoch." if never else ".")
)
