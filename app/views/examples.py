"""Examples: a paged, filterable gallery of the training set, each linking to its own page."""

import numpy as np
import pandas as pd
import streamlit as st

from app.cache import has_table, opened, page_run, run_labels, table
from app.charts import class_name, image_of

PAGE_SIZE = 24
COLUMNS = 6

run, info = page_run()
st.title("Examples")
st.markdown(
    "The training images with their *true* label and the label the model was trained on; for noisy "
    "examples the two differ. Filter to find memorized examples (noisy ones the model predicts with "
    "their wrong training label) and open one to see its learning curve, its flip set and what its "
    "prediction rests on."
)

labels = run_labels(run)
data = opened(run)
classes = data.data.classes
n = len(labels["is_noisy"])
last = table(run, "example_training")
last = last[last["epoch"] == last["epoch"].max()].set_index("example_id")["correct"].reindex(range(n)).fillna(False).to_numpy(bool)
flipped_ids = set()
if has_table(info, "flipping"):
    flips = table(run, "flipping")
    flipped_ids = set(flips.loc[flips["flipped"], "example_id"].tolist())


def _first_page():
    st.session_state["gal_page"] = 1


c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
kind = c1.radio("Examples", ["all", "noisy", "clean"], horizontal=True, key="gal_kind", on_change=_first_page)
fit = c2.radio("Predicted with its training label", ["any", "yes", "no"], horizontal=True, key="gal_fit",
               on_change=_first_page, help="in the last training epoch; for noisy examples 'yes' means memorized")
chosen_classes = c3.multiselect("True class", list(range(len(classes))), format_func=lambda k: class_name(classes, k),
                                key="gal_classes", on_change=_first_page)
only_flipped = c4.checkbox("With a flip set", key="gal_flipped", on_change=_first_page,
                           disabled=not flipped_ids, help="greedy flipping ran on them (Neurons page)")
search = st.text_input("Search by example id", key="gal_search", on_change=_first_page, placeholder="e.g. 17")

keep = np.ones(n, dtype=bool)
if kind != "all":
    keep &= labels["is_noisy"] == (kind == "noisy")
if fit != "any":
    keep &= last == (fit == "yes")
if chosen_classes:
    keep &= np.isin(labels["true_label"], chosen_classes)
if only_flipped:
    keep &= np.isin(np.arange(n), list(flipped_ids))
ids = np.flatnonzero(keep)
if search.strip():
    ids = ids[[str(i).startswith(search.strip()) for i in ids]] if search.strip().isdigit() else ids[:0]

pages = max(1, -(-len(ids) // PAGE_SIZE))
if st.session_state.get("gal_page", 1) > pages:
    st.session_state["gal_page"] = 1
left, right = st.columns([1, 4])
page = left.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="gal_page")
right.caption(f"{len(ids):,} of {n:,} training examples match; showing {PAGE_SIZE} per page.")
shown = ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
grid = st.columns(COLUMNS)
for pos, i in enumerate(shown):
    with grid[pos % COLUMNS]:
        tag = "noisy" if labels["is_noisy"][i] else "clean"
        st.image(image_of(data.data.train_x[i]), width=96)
        st.page_link("views/example.py", label=f"#{i} ({tag})", query_params={"example": str(int(i))})
        st.caption(f"true {class_name(classes, labels['true_label'][i])} · trained as "
                   f"{class_name(classes, labels['train_label'][i])}" + (" · memorized" if tag == "noisy" and last[i] else ""))
if len(shown) == 0:
    st.info("No example matches these filters.")
st.download_button("Matching examples (CSV)", pd.DataFrame({
    "example_id": ids, "is_noisy": labels["is_noisy"][ids], "true_label": labels["true_label"][ids],
    "train_label": labels["train_label"][ids], "fits_training_label": last[ids]}).to_csv(index=False),
    file_name=f"{run.name}_examples.csv", mime="text/csv", on_click="ignore")
