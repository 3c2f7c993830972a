"""A selection of training examples that a researcher carries across pages, and its export.

The selection is a list of training example ids (in the order picked) kept in the session
(`st.session_state["selection"]`) and in the link as `?sel=1,5,9`, so a link reopens it. Ids are
picked in the gallery (Examples page: a box under each image, or every example the filters
match) or on One example, or pasted into the one field this module draws (`panel`). The export
is every table of the run that has an `example_id` column (the per-example tables: learning
curves, gradient norms, rewinding and dropout outcomes, flip sets), filtered to the selection,
one CSV per table in a zip, with the selection's labels beside them.
"""

from __future__ import annotations

import io
import re
import zipfile

import pandas as pd
import streamlit as st

from app.cache import RunError, run_labels, table
from app.url import url_notice
from memloc.store import Run, tables_of

KEY = "selection"
#: Most ids kept: the selection travels in the link, which must stay short enough to share.
MAX_IDS = 1000


def parse_ids(text: str, n: int | None) -> tuple[list[int], list[str]]:
    """Training example ids in `text` (separated by commas, semicolons or spaces), each once, in
    order, at most `MAX_IDS`; and the parts left out: not an id of 0..n-1 (any id >= 0 when `n`
    is None, i.e. unknown), or beyond the limit."""
    ids: list[int] = []
    bad: list[str] = []
    for part in (p for p in re.split(r"[\s,;]+", text.strip()) if p):
        ok = part.isascii() and part.isdigit() and (n is None or int(part) < n)  # str.isdigit takes superscripts
        if not ok:
            bad.append(part)
        elif int(part) not in ids:
            ids.append(int(part))
    if len(ids) > MAX_IDS:
        bad += [str(i) for i in ids[MAX_IDS:]]
        ids = ids[:MAX_IDS]
    return ids, bad


def _left_out(bad: list[str], n: int | None) -> str:
    shown = ", ".join(f"`{b}`" for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    limit = f"0-{n - 1}" if n is not None else ">= 0"
    what = "is not a training example id" if len(bad) == 1 else "are not training example ids"
    return f"{shown} {what} of this run ({limit}, at most {MAX_IDS:,}); left out"


def current() -> list[int]:
    """The selected example ids (empty before `carry` ran or when nothing is selected)."""
    return list(st.session_state.get(KEY, []))


def _set(ids: list[int]) -> None:
    st.session_state[KEY] = list(dict.fromkeys(int(i) for i in ids))[:MAX_IDS]


def carry(run: Run) -> None:
    """Called by the router on every run of every page: on the first visit take the selection
    from the link (`?sel=`), naming what it leaves out; keep it in the link; drop ids the chosen
    run does not have (after switching to a smaller run); show its size in the sidebar."""
    try:
        n = len(run_labels(run)["is_noisy"])
    except RunError:  # the pages show the damage; ids are checked once the run is readable
        n = None
    if KEY not in st.session_state:
        raw = st.query_params.get("sel")
        ids, bad = parse_ids(raw or "", n)
        if bad:
            url_notice(f"`sel={raw}`: {_left_out(bad, n)}.")
        _set(ids)
    elif n is not None and any(i >= n for i in current()):
        dropped = [i for i in current() if i >= n]
        _set([i for i in current() if i < n])
        st.sidebar.caption(f"Selection: {len(dropped)} ids left out, run **{run.name}** has {n:,} training examples.")
    ids = current()
    if ids:
        st.query_params["sel"] = ",".join(map(str, ids))
        st.sidebar.caption(f"Selection: **{len(ids):,}** example{'s' if len(ids) > 1 else ''} "
                           "(see, edit or export it on the Examples page)")
    elif "sel" in st.query_params:
        del st.query_params["sel"]


def add(ids) -> None:
    """Add `ids` to the selection (those already in it keep their place)."""
    _set([*current(), *ids])


def remove(ids) -> None:
    gone = {int(i) for i in ids}
    _set([i for i in current() if i not in gone])


def pick_box(example: int, key: str, label: str = "select") -> None:
    """A box that puts `example` in the selection or takes it out (its state follows the
    selection, whichever page or field changed it)."""
    st.session_state[key] = example in current()
    st.checkbox(label, key=key, on_change=lambda: (add if st.session_state[key] else remove)([example]))


def _pasted(n: int) -> None:
    ids, bad = parse_ids(st.session_state["sel_text"], n)
    _set(ids)
    st.session_state["sel_problem"] = f"From the field: {_left_out(bad, n)}." if bad else None


def panel(run: Run, info: dict, n: int, example: int | None = None) -> None:
    """The selection's one widget, folded under its size: a box for `example` (the page's own,
    if any), the ids as a field to edit or paste into, Clear, and the export of every
    per-example table filtered to the selection."""
    ids = current()
    with st.expander(f"Selection: {len(ids):,} example{'' if len(ids) == 1 else 's'} (pick, paste ids, export their rows)",
                     expanded=bool(st.session_state.get("sel_problem"))):
        if example is not None:
            pick_box(example, key="sel_pick", label=f"#{example} in the selection")
        st.session_state["sel_text"] = ", ".join(map(str, ids))
        st.text_input("Selected example ids (paste or edit: comma or space separated)", key="sel_text",
                      on_change=_pasted, args=(n,), placeholder="none yet: tick examples in the gallery, or paste ids here")
        if st.session_state.get("sel_problem"):
            st.warning(st.session_state["sel_problem"])
        row = st.container(horizontal=True)
        row.button("Clear selection", key="sel_clear", disabled=not ids,
                   on_click=lambda: (_set([]), st.session_state.update(sel_problem=None)))
        if not ids:
            return
        content, rows, skipped = export(run, info, ids)
        row.download_button(f"Export the selection (zip of {len(rows)} CSV files)", content,
                            file_name=f"{run.name}_selection.zip", mime="application/zip", key="sel_export",
                            on_click="ignore")
        st.caption("Export: " + ", ".join(f"`{name}` {count:,} rows" for name, count in rows.items())
                   + (f"; left out, damaged: {', '.join(f'`{s}`' for s in skipped)}" if skipped else "") + ".")


@st.cache_data(show_spinner="Filtering the run's tables ...", max_entries=32)
def _export(path: str, stamp: tuple[int, ...], names: tuple[str, ...], ids: tuple[int, ...]) -> tuple[bytes, dict, list]:
    run = Run(path)
    rows: dict[str, int] = {}
    skipped: list[str] = []
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        labels = run_labels(run)
        chosen = pd.DataFrame({"example_id": list(ids), **{k: labels[k][list(ids)] for k in ("is_noisy", "true_label", "train_label")}})
        archive.writestr(f"{run.name}_selection/labels.csv", chosen.to_csv(index=False))
        rows["labels"] = len(chosen)
        for name in names:
            try:
                part = table(run, name)
            except RunError:
                skipped.append(name)
                continue
            if "example_id" not in part.columns:
                continue
            part = part[part["example_id"].isin(ids)]
            archive.writestr(f"{run.name}_selection/{name}.csv", part.to_csv(index=False))
            rows[name] = len(part)
    return buffer.getvalue(), rows, skipped


def export(run: Run, info: dict, ids: list[int]) -> tuple[bytes, dict[str, int], list[str]]:
    """A zip of one CSV per table of the run with an `example_id` column, its rows of the
    selected examples (and `labels.csv`: their labels); the rows per table; the tables left out
    because they are damaged. Cached by the run and the selection."""
    return _export(str(run.path), run.stamp(), tuple(tables_of(info)), tuple(int(i) for i in ids))


__all__ = ["KEY", "MAX_IDS", "parse_ids", "current", "carry", "add", "remove", "pick_box", "panel", "export"]
