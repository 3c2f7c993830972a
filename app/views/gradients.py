"""Gradient accounting: how much of each layer group's gradient comes from noisy examples."""

import altair as alt
import pandas as pd
import streamlit as st

from app.cache import page_run, require_tables, run_labels
from app.charts import LABELS, colour, epoch_x, fitted, group_colours, heatmap, legend_pick, show_chart
from memloc.gradients import noisy_share

run, info = page_run()
st.title("Gradient accounting")
st.markdown(
    "During training, every batch's gradient is split into the part that comes from clean examples "
    "and the part that comes from noisy (mislabelled) ones, summed over each epoch, per layer group. "
    "Although noisy examples are only a tenth of the data, their gradient is of the same size as "
    "the clean one for much of training, in every layer, and points the other way (negative cosine)."
)

tables = require_tables(run, info, "gradients")
if tables is None:
    st.stop()
grads = noisy_share(tables["gradients"])
order = grads.sort_values("group_index")["group"].drop_duplicates().tolist()


@st.fragment
def norms_panel():
    groups = st.multiselect("Layer groups", order, default=order[:3], key="grad_groups",
                            help="the layer groups of the model, input to output")
    shown = grads[grads["group"].isin(groups)]
    long = shown.melt(id_vars=["epoch", "group", "group_index"], value_vars=["clean_norm", "noisy_norm"],
                      var_name="part", value_name="norm")
    parts = ["clean examples", "noisy examples"]
    long["part"] = long["part"].map(dict(zip(["clean_norm", "noisy_norm"], parts)))
    pick = legend_pick("part")
    lines = (
        alt.Chart(long)
        .mark_line(strokeWidth=2.5)
        .encode(
            x=epoch_x(),
            y=alt.Y("norm:Q", title="gradient norm"),
            color=colour("part", parts),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[alt.Tooltip("group:N", title="layer group"), "epoch:Q", "part:N", alt.Tooltip("norm:Q", format=".4g")],
        )
        .properties(width=250, height=200)  # three facets a row fill a 1600-pixel screen
        .add_params(pick)
        .facet(facet=alt.Facet("group:N", sort=order, title=None), columns=3)
        .resolve_scale(y="independent")
        .properties(title="Clean vs noisy gradient norm per layer group (summed over each epoch)")
    )
    show_chart(lines, long, "gradient_norms", run)


norms_panel()

# Each heatmap full width; the colours span what the run reached (the cosine symmetric about 0).
show_chart(heatmap(grads, "epoch", "group", "cosine", "Cosine between the clean and the noisy gradient",
                   domain=fitted(grads["cosine"], centre=0.0), scheme="redblue", y_sort=order, legend="cosine"),
           grads[["epoch", "group", "cosine"]], "gradient_cosine", run)
show_chart(heatmap(grads, "epoch", "group", "noisy_share", "Noisy examples' share of the gradient norm",
                   legend="noisy share", y_sort=order),
           grads[["epoch", "group", "clean_norm", "noisy_norm", "noisy_share"]], "noisy_share", run)
st.caption("Cosine below 0 (red): the noisy examples pull the weights against the clean ones. "
           "A noisy share of 0.5 means noisy and clean examples move the group equally.")

st.subheader("Per example")
st.markdown("Each training example's own gradient norm per layer group at a few checkpoints: where does "
            "*this* example pull? Noisy examples usually pull harder than clean ones, until memorized.")
per_example = require_tables(run, info, "example_gradients")
if per_example is None:
    st.stop()
ex = per_example["example_gradients"]
is_noisy = run_labels(run)["is_noisy"]
ex = ex.assign(kind=pd.Series(is_noisy[ex["example_id"].to_numpy()]).map({True: "noisy", False: "clean"}).to_numpy())


@st.fragment
def example_panel():
    epochs = sorted(ex["epoch"].unique().tolist())
    epoch = st.select_slider("Checkpoint (epoch)", epochs, value=epochs[-1], key="exgrad_epoch")
    at = ex[ex["epoch"] == epoch]
    summary = at.groupby(["group", "kind"], as_index=False)["grad_norm"].agg(["mean", "median", "count"])
    summary.columns = ["group", "kind", "mean", "median", "examples"]
    pick = legend_pick("kind")
    bars = (
        alt.Chart(summary, title=f"Mean per-example gradient norm at epoch {epoch}")
        .mark_bar()
        .encode(
            x=alt.X("group:N", sort=order, title="layer group"),
            xOffset=alt.XOffset("kind:N", sort=["clean", "noisy"]),
            y=alt.Y("mean:Q", title="mean gradient norm"),
            color=colour("kind", ["clean", "noisy"]),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.2)),
            tooltip=[alt.Tooltip("group:N", title="layer group"), "kind:N", alt.Tooltip("mean:Q", format=".4g"),
                     alt.Tooltip("median:Q", format=".4g"), "examples:Q"],
        )
        .add_params(pick)
    )
    show_chart(bars, summary, f"example_gradients_epoch{epoch}", run)
    chosen = int(st.number_input("One example (training example id)", min_value=0, max_value=len(is_noisy) - 1, step=1,
                                 key="exgrad_example", help="its norms at every recorded checkpoint"))
    one = ex[ex["example_id"] == chosen]
    one_chart = (
        alt.Chart(one, title=f"Example {chosen} ({'noisy' if is_noisy[chosen] else 'clean'})")
        .mark_line(point=True, strokeWidth=2.5)
        .encode(x=epoch_x(), y=alt.Y("grad_norm:Q", title=LABELS["grad_norm"]),
                color=alt.Color("group:N", sort=order, title="layer group", scale=group_colours(order),
                                legend=alt.Legend(orient="bottom", labelLimit=0)),
                tooltip=[alt.Tooltip("group:N", title="layer group"), "epoch:Q",
                         alt.Tooltip("grad_norm:Q", title=LABELS["grad_norm"], format=".4g")])
    )
    show_chart(one_chart, one, f"example_{chosen}_gradients", run)
    st.page_link("views/example.py", label=f"Open example {chosen}", query_params={"example": str(chosen)})


example_panel()
