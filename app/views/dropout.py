"""Example-tied dropout: memorization put into chosen units, and switched off."""

import numpy as np
import pandas as pd
import streamlit as st

from app.cache import opened, page_run, require_tables, run_labels
from app.charts import class_name, dropout_modes, image_of, show_chart

PAGE_SIZE = 12

run, info = page_run()
st.title("Example-tied dropout")
st.markdown(
    "A second model is trained where, at chosen layers, most units are *memorization units*: each "
    "training example may use only its own fixed random few of them; the other units (*generalization* "
    "units) are shared by all. In *train* mode every example runs with its own units, as in training; "
    "*drop* mode switches the memorization units off (*test* mode scales them to their average use). If "
    "memorization went into them, the noisy examples are forgotten while clean and test accuracy stay."
)

tables = require_tables(run, info, "dropout", "dropout_examples")
if tables is None:
    st.stop()
summary, per_example = tables["dropout"], tables["dropout_examples"]
labels = run_labels(run)
data = opened(run)
classes = data.data.classes

show_chart(dropout_modes(summary), summary, "dropout", run)

st.subheader("Which memorized examples survive dropping?")
wide = per_example.pivot(index="example_id", columns="mode", values="correct")
noisy_ids = np.flatnonzero(labels["is_noisy"])
wide = wide.reindex(noisy_ids)
# Memorized: predicted with its noisy label by the dropout model as it was trained (each example
# with its own memorization units, mode "train").
memorized = wide.index[wide["train"].astype(bool)].to_numpy()
survive = wide.index[wide["train"].astype(bool) & wide["drop"].astype(bool)].to_numpy()
st.markdown(
    f"Of {len(noisy_ids):,} noisy examples, the dropout model memorizes **{len(memorized):,}** when each example "
    f"uses its own memorization units (train mode); **{len(survive):,}** of them keep their noisy label in drop "
    f"mode (they *survive*), the other **{len(memorized) - len(survive):,}** are forgotten."
)


@st.fragment
def survivors_panel():
    which = st.radio("Show", ["survive dropping", "forgotten in drop mode"], horizontal=True, key="do_which")
    ids = survive if which == "survive dropping" else np.setdiff1d(memorized, survive)
    pages = max(1, -(-len(ids) // PAGE_SIZE))
    page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="do_page")
    shown = ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    grid = st.columns(6)
    for pos, i in enumerate(shown):
        with grid[pos % 6]:
            st.image(image_of(data.data.train_x[i]), width=96)
            st.caption(f"#{i}: true {class_name(classes, labels['true_label'][i])}, "
                       f"trained as {class_name(classes, labels['train_label'][i])}")
            st.page_link("views/example.py", label="open (drop mode)",
                         query_params={"example": str(int(i)), "model": "drop"})
    if len(shown) == 0:
        st.info("No such example.")
    table = pd.DataFrame({"example_id": ids, "true_label": labels["true_label"][ids], "train_label": labels["train_label"][ids]})
    st.download_button("These examples (CSV)", table.to_csv(index=False), file_name=f"{run.name}_dropout_{which.split()[0]}.csv",
                       mime="text/csv", on_click="ignore")


survivors_panel()
