"""Overview: what the run is and how training fitted clean and noisy labels."""

import altair as alt
import pandas as pd
import streamlit as st

from app.common import RunError, current_run, manifest, show_run_error, table

POPULATIONS = {
    "clean_acc": "clean (true labels)",
    "noisy_acc": "noisy: memorized (noisy labels)",
    "noisy_true_acc": "noisy vs true labels",
    "test_acc": "test",
}

run = current_run()
st.title(f"Overview: {run.name}")
st.markdown(
    "A model is trained on data where a share of the training labels was flipped to a wrong "
    "class (the *noisy* examples). The curves show accuracy on clean examples, on noisy "
    "examples against their *noisy* labels (memorization: the model fits labels it cannot "
    "have learned from the images) and on the test set, after every epoch."
)

try:
    info = manifest(run)
    cfg = info["config"]
    cols = st.columns(4)
    cols[0].metric("Data set", cfg["data"]["name"])
    cols[1].metric("Model", cfg["model"]["name"])
    cols[2].metric("Label noise", f"{cfg['data']['noise_frac']:.0%}")
    cols[3].metric("Seed", info["seed"])
    stages = pd.DataFrame(
        [{"stage": name, "status": s.get("status"), "seconds": s.get("seconds")} for name, s in info["stages"].items()]
    )
    st.dataframe(stages, hide_index=True)
    if not (info["stages"].get("train", {}).get("status") == "complete"):
        st.warning(f"Training of this run is not complete; resume it with `python -m precompute run --out {run.path}`.")
        st.stop()
    curves = table(run, "training")
except RunError as error:
    show_run_error(run, error)
    st.stop()

long = curves.melt(id_vars=["epoch"], value_vars=list(POPULATIONS), var_name="population", value_name="accuracy")
long["population"] = long["population"].map(POPULATIONS)
pick = alt.selection_point(fields=["population"], bind="legend")
chart = (
    alt.Chart(long, title="Accuracy per epoch")
    .mark_line(point=False)
    .encode(
        x=alt.X("epoch:Q", title="epoch"),
        y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("population:N", title=None, legend=alt.Legend(orient="bottom")),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
        tooltip=["epoch:Q", "population:N", alt.Tooltip("accuracy:Q", format=".3f")],
    )
    .add_params(pick)
)
st.altair_chart(chart, width="stretch")
last = curves.iloc[-1]
st.caption(
    f"After epoch {int(last['epoch'])}: clean {last['clean_acc']:.1%}, memorized {last['noisy_acc']:.1%} "
    f"of noisy examples, test {last['test_acc']:.1%}."
)
st.download_button("Download the curves (CSV)", curves.to_csv(index=False), file_name=f"{run.name}_training.csv", mime="text/csv")
