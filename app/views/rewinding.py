"""Layer rewinding: which layer groups the memorized examples need."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app.cache import layout, live, model_in_use, opened, page_run, require_tables, run_labels
from app.charts import LABELS, accuracy_metrics, class_name, fitted, heatmap, human, show_chart
from app.url import decode_interventions, encode_interventions, url_notice
from memloc.evaluate import POPULATIONS, accuracy_column
from memloc.interventions import Rewind

run, info = page_run()
st.title("Layer rewinding")
st.markdown(
    "Take the trained model and put one layer group back to its weights of an earlier epoch (0 = "
    "initialization); everything else stays trained. If memorization lived in the last layers, "
    "rewinding them would erase it. Read each heatmap row as one group: dark cells in the first "
    "heatmap mark the few groups whose rewinding makes the model forget the noisy labels it memorized; "
    "the clean and test heatmaps below say what that rewinding costs."
)

tables = require_tables(run, info, "rewinding")
if tables is not None:
    rw = tables["rewinding"]
    if rw["include_buffers"].nunique() > 1:
        buffers = st.toggle("Rewind BatchNorm statistics with the parameters", value=True, key="rw_buffers_table")
        rw = rw[rw["include_buffers"] == buffers]
    order = rw.sort_values("group_index")["group"].drop_duplicates().tolist()
    shown = ("noisy", "clean", "test")
    tip = [alt.Tooltip("group:N", title="rewound group"), alt.Tooltip("epoch:O", title="rewound to epoch"),
           *(alt.Tooltip(f"{accuracy_column(p)}:Q", title=LABELS[accuracy_column(p)], format=".3f") for p in shown)]
    # One colour scale for the three, fitted to what rewinding reached: comparable heatmaps, and
    # accuracies of 0.9-1.0 not painted as one colour.
    domain = fitted(rw[[accuracy_column(p) for p in shown]].to_numpy())
    for population in shown:
        value, title = accuracy_column(population), f"Accuracy: {POPULATIONS[population]}"
        show_chart(heatmap(rw, "epoch", "group", value, title, domain=domain, dark_low=True, y_sort=order, tooltip=tip,
                           legend="accuracy", x_title="rewound to epoch"), rw, f"rewinding_{value}", run)
    st.caption("x: the epoch the group is rewound to (0: its initialization); y: the rewound group, input (top) to output.")

st.subheader("Live: rewind groups yourself")
st.markdown(
    "Choose one or more layer groups and the epoch to rewind them to. The accuracies are computed now "
    "on the run's data; the table shows which of the chosen examples change their prediction."
)
data = opened(run)
groups_all, _ = layout(run)
with model_in_use(run) as model:
    has_statistics = any(True for _ in model.buffers())  # BatchNorm running statistics (the MLP has none)
epochs = run.checkpoint_epochs()
labels = run_labels(run)
noisy_ids = np.flatnonzero(labels["is_noisy"])


def parse_ids(text: str, n: int) -> list[int]:
    ids = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if part.isascii() and part.isdigit() and int(part) < n and int(part) not in ids:  # str.isdigit takes superscripts
            ids.append(int(part))
    return ids[:50]


if "rw_groups" not in st.session_state:  # first visit: take the intervention from the URL
    raw = st.query_params.get("intervention")
    from_url = [i for i in decode_interventions(raw) if isinstance(i, Rewind)]
    valid = [i for i in from_url if i.group in groups_all and i.epoch in epochs]
    if raw and len(valid) < max(1, len(from_url)):
        dropped = ", ".join(f"{i.group}@{i.epoch}" for i in from_url if i not in valid) or raw
        url_notice(f"`intervention={raw}`: {dropped} is not a layer group of this run rewound to one of its "
                   "checkpoints; ignored.")
    st.session_state["rw_groups"] = [i.group for i in valid]  # none: the panel opens on the trained model, "before"
    st.session_state["rw_epoch"] = valid[0].epoch if valid else epochs[0]
    st.session_state["rw_buffers"] = valid[0].include_buffers if valid else True
    url_ids = st.query_params.get("example")
    st.session_state["rw_examples"] = url_ids or ", ".join(str(i) for i in noisy_ids[:8])
    asked = [part for part in (url_ids or "").replace(";", ",").split(",") if part.strip()]
    kept = parse_ids(url_ids or "", len(labels["is_noisy"]))
    if len(kept) < len(asked):
        url_notice(f"`example={url_ids}`: {len(asked) - len(kept)} of its {len(asked)} ids are not distinct training "
                   f"example ids of this run (0-{len(labels['is_noisy']) - 1}, at most 50); left out.")


@st.fragment
def live_panel():
    c1, c2, c3 = st.columns([4, 3, 2])
    groups = c1.multiselect("Layer groups to rewind", groups_all, key="rw_groups",
                            placeholder="none: the trained model as it is; pick a group to rewind it")
    epoch = c2.select_slider("Rewind to epoch", epochs, key="rw_epoch")
    # A model without BatchNorm has no statistics to rewind: no control that does nothing.
    buffers = (c3.checkbox("BatchNorm stats too", key="rw_buffers", help="rewind the groups' BatchNorm running statistics "
                           "with their parameters") if has_statistics else True)
    st.button("Reset: rewind nothing", key="rw_reset", disabled=not groups,
              on_click=lambda: st.session_state.update(rw_groups=[]))
    text = st.text_input("Examples to follow (training example ids, comma separated; at most 50)", key="rw_examples")
    ids = parse_ids(text, len(labels["is_noisy"]))
    items = [Rewind(g, int(epoch), bool(buffers)) for g in groups]
    st.query_params["intervention"] = encode_interventions(items)
    before, p_before = live(run, [], ids)
    after, p_after = live(run, items, ids)
    accuracy_metrics(after, before)
    if not ids:
        st.caption("No valid example ids given.")
        return
    classes = data.data.classes
    rows = pd.DataFrame({
        "example_id": ids,
        "kind": np.where(labels["is_noisy"][ids], "noisy", "clean"),
        "training label": [class_name(classes, labels["train_label"][i]) for i in ids],
        "true label": [class_name(classes, labels["true_label"][i]) for i in ids],
        "prediction before": [class_name(classes, k) for k in p_before.argmax(1)],
        "prediction after": [class_name(classes, k) for k in p_after.argmax(1)],
        "p(training label) before": p_before[np.arange(len(ids)), labels["train_label"][ids]],
        "p(training label) after": p_after[np.arange(len(ids)), labels["train_label"][ids]],
    })
    rows["changed"] = rows["prediction before"] != rows["prediction after"]
    st.dataframe(human(rows), hide_index=True, column_config={
        "p(training label) before": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
        "p(training label) after": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
    })
    st.caption(f"{int(rows['changed'].sum())} of {len(rows)} examples change their prediction.")
    st.download_button("Examples (CSV)", rows.to_csv(index=False), file_name=f"{run.name}_live_rewind.csv",
                       mime="text/csv", on_click="ignore", key="rw_csv")


live_panel()
