"""Examples: a paged, filterable, sortable gallery of the training set, each linking to its own
page, and where examples are picked into the selection carried across pages (app/selection.py)."""

import numpy as np
import pandas as pd
import streamlit as st

from app import selection
from app.cache import opened, optional_table, page_run, require_tables, run_labels
from app.charts import class_name, image_of
from memloc.train import memorized_from

PAGE_SIZE = 24
COLUMNS = 6
#: Orders of the gallery: by id, by the epoch from which a noisy example stays memorized
#: (`memloc.train.memorized_from`), by the size of its flip set (`flipping.n_units`, flipped ones).
ORDERS = {
    "id": "example id",
    "memorized": "memorization epoch (earliest first)",
    "flip": "flip-set size (smallest first)",
}

run, info = page_run()
st.title("Examples")
st.markdown(
    "The training images with their *true* label and the label the model was trained on; for noisy "
    "examples the two differ. Filter to find memorized examples (noisy ones the model predicts with "
    "their wrong training label), sort them by when they were memorized or by how few units hold "
    "them, and open one to see its learning curve, its flip set and what its prediction rests on. "
    "Tick examples to carry them as a selection to other pages and to export their rows of every table."
)

data = opened(run)  # a run whose data or labels cannot be loaded stops here with its card
labels = run_labels(run)
classes = data.data.classes
n = len(labels["is_noisy"])
tables = require_tables(run, info, "example_training")
if tables is None:
    st.stop()
per_epoch = tables["example_training"]
last = per_epoch[per_epoch["epoch"] == per_epoch["epoch"].max()].set_index("example_id")["correct"]
last = last.reindex(range(n)).fillna(False).to_numpy(bool)
memorized = memorized_from(per_epoch, labels["is_noisy"]).set_index("example_id")["memorized_from"].reindex(range(n))
flips = optional_table(run, info, "flipping")  # a damaged one gets its card; the gallery goes on without flip sets
flip_size = pd.Series(pd.NA, index=range(n), dtype="Int64")
if flips is not None:
    flipped = flips[flips["flipped"]]
    flip_size.loc[flipped["example_id"].to_numpy()] = flipped["n_units"].to_numpy()
flipped_ids = np.flatnonzero(flip_size.notna().to_numpy())


def _first_page():
    st.session_state["gal_page"] = 1


selection.panel(run, info, n)
c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
kind = c1.radio("Examples", ["all", "noisy", "clean"], horizontal=True, key="gal_kind", on_change=_first_page)
fit = c2.radio("Predicted with its training label", ["any", "yes", "no"], horizontal=True, key="gal_fit",
               on_change=_first_page, help="in the last training epoch; for noisy examples 'yes' means memorized")
chosen_classes = c3.multiselect("True class", list(range(len(classes))), format_func=lambda k: class_name(classes, k),
                                key="gal_classes", on_change=_first_page)
only_flipped = c4.checkbox("With a flip set", key="gal_flipped", on_change=_first_page,
                           disabled=not len(flipped_ids), help="greedy flipping flipped them (Neurons page)")
c1, c2, c3 = st.columns([3, 3, 2])
search = c1.text_input("Search by example id", key="gal_search", on_change=_first_page, placeholder="e.g. 17")
orders = ORDERS if len(flipped_ids) else {k: v for k, v in ORDERS.items() if k != "flip"}
order = c2.selectbox("Order", list(orders), format_func=orders.__getitem__, key="gal_order", on_change=_first_page,
                     help="examples without a value (clean or never memorized; no flip set) come last")
if not selection.current():  # nothing selected: the filter cannot stay on
    st.session_state["gal_only_selected"] = False
only_selected = c3.checkbox("Only the selection", key="gal_only_selected", on_change=_first_page,
                            disabled=not selection.current())

keep = np.ones(n, dtype=bool)
if kind != "all":
    keep &= labels["is_noisy"] == (kind == "noisy")
if fit != "any":
    keep &= last == (fit == "yes")
if chosen_classes:
    keep &= np.isin(labels["true_label"], chosen_classes)
if only_flipped:
    keep &= np.isin(np.arange(n), flipped_ids)
if only_selected:
    keep &= np.isin(np.arange(n), selection.current())
ids = np.flatnonzero(keep)
if search.strip():
    ids = ids[[str(i).startswith(search.strip()) for i in ids]] if search.strip().isdigit() else ids[:0]
if order != "id":  # a stable sort: ties (and the examples without a value, last) stay in id order
    values = (memorized if order == "memorized" else flip_size)[ids]
    ids = ids[np.argsort(values.fillna(np.iinfo(np.int64).max).to_numpy(np.int64), kind="stable")]

pages = max(1, -(-len(ids) // PAGE_SIZE))
if st.session_state.get("gal_page", 1) > pages:
    st.session_state["gal_page"] = 1
left, middle, right = st.columns([1, 3, 2])
page = left.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="gal_page")
middle.caption(f"{len(ids):,} of {n:,} training examples match; showing {PAGE_SIZE} per page.")
right.button(f"Select all {len(ids):,} matching" if len(ids) <= selection.MAX_IDS else
             f"Select the first {selection.MAX_IDS:,} of {len(ids):,} matching", key="gal_select_all", disabled=not len(ids),
             on_click=selection.add, args=(ids[: selection.MAX_IDS].tolist(),),
             help=f"add them to the selection (at most {selection.MAX_IDS:,} ids in all)")
shown = ids[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
for pos, i in enumerate(shown):
    if pos % COLUMNS == 0:  # a row of its own for every COLUMNS tiles, so tiles of a row line up
        grid = st.columns(COLUMNS)
    with grid[pos % COLUMNS]:
        tag = "noisy" if labels["is_noisy"][i] else "clean"
        st.image(image_of(data.data.train_x[i]), width=96)
        st.page_link("views/example.py", label=f"#{i} ({tag})", query_params={"example": str(int(i))})
        facts = [f"true {class_name(classes, labels['true_label'][i])}",
                 f"trained as {class_name(classes, labels['train_label'][i])}"]
        if pd.notna(memorized[i]):
            facts.append(f"memorized from epoch {int(memorized[i])}")
        if pd.notna(flip_size[i]):
            facts.append(f"flip set {int(flip_size[i])} units")
        st.caption(" · ".join(facts))
        selection.pick_box(int(i), key=f"gal_pick_{i}")
if len(shown) == 0:
    st.info("No example matches these filters.")
st.download_button("Matching examples (CSV)", pd.DataFrame({
    "example_id": ids, "is_noisy": labels["is_noisy"][ids], "true_label": labels["true_label"][ids],
    "train_label": labels["train_label"][ids], "fits_training_label": last[ids],
    "memorized_from_epoch": memorized[ids].to_numpy(), "flip_set_size": flip_size[ids].to_numpy()}).to_csv(index=False),
    file_name=f"{run.name}_examples.csv", mime="text/csv", on_click="ignore")
