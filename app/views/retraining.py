"""Retraining: can one layer group, trained on clean examples only, bring memorization back?"""

import altair as alt
import streamlit as st

from app.cache import page_run, require_tables
from app.charts import epoch_x, group_colours, legend_pick, populations_long, show_chart
from memloc.evaluate import POPULATIONS, accuracy_column

run, info = page_run()
st.title("Retraining")
st.markdown(
    "For each layer group: reset it to its initial weights, freeze every other group, and train only "
    "that group on the *clean* examples. The group never sees a noisy example, so if the noisy "
    "(memorized) accuracy comes back, the rest of the network still holds the memorization; if it stays "
    "low, that group was needed for it. The grey `none` is the control: the trained model itself, nothing reset."
)

tables = require_tables(run, info, "retraining")
if tables is None:
    st.stop()
rt = tables["retraining"]
order = rt.sort_values("group_index")["group"].drop_duplicates().tolist()


@st.fragment
def curves_panel():
    groups = st.multiselect("Retrained groups", order, default=order, key="rt_groups")
    shown = rt[rt["group"].isin(groups)]
    shown_populations = ("clean", "noisy", "test")
    long = populations_long(shown, ["group", "group_index", "epoch"], shown_populations)
    pick = legend_pick("group")
    color = alt.Color("group:N", sort=order, title="retrained group", legend=alt.Legend(orient="bottom", labelLimit=0),
                      scale=group_colours(order))
    chart = (
        alt.Chart(long)
        .mark_line(point=True, strokeWidth=2.5)
        .encode(
            x=epoch_x(title="retraining epoch (0 = after the reset)"),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])),
            color=color,
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
            tooltip=[alt.Tooltip("group:N", title="retrained group"), "population:N", "epoch:Q",
                     alt.Tooltip("accuracy:Q", format=".3f")],
        )
        .properties(width=280, height=300)  # three facets fill a 1600-pixel screen
        .add_params(pick)
        .facet(column=alt.Column("population:N", title=None, sort=[POPULATIONS[p] for p in shown_populations]))
        .properties(title="Accuracy while retraining one group on clean examples")
    )
    show_chart(chart, shown, "retraining", run)
    last = shown.sort_values("epoch").groupby("group").tail(1).set_index("group").reindex(groups)
    columns = {"epoch": "last epoch", **{accuracy_column(p): POPULATIONS[p] for p in shown_populations}}
    st.dataframe(last[list(columns)].rename(columns=columns).rename_axis("retrained group"),
                 column_config={POPULATIONS[p]: st.column_config.NumberColumn(format="%.3f") for p in shown_populations})


curves_panel()
