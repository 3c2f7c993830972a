"""memloc explorer: the router and the run picker shared by every page.

    streamlit run app/main.py [-- --runs DIR]

The sidebar lists the runs under the runs root (`--runs`, $MEMLOC_RUNS or ./runs); the chosen
run is kept in the session and in the URL (`?run=NAME`), and so is the page (`&page=rewinding`);
pages add their own state (`&example=17`, `&intervention=zero:fc1[3]`), so a link reopens the same view.

The pages live in app/views/, not app/pages/: Streamlit treats a `pages/` folder next to the main
script as an old-style multipage app and, for a URL like /neurons, runs that page file without
this router (no run picker, no navigation titles) until the router has run once in the process.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.cache import (create_run_command, damage_note, run_health, run_in_root, run_names, run_problems,  # noqa: E402
                       selected_runs_root)
from app.url import url_notice  # noqa: E402
from app.selection import carry as carry_selection  # noqa: E402
from memloc.store import RunError, list_sweeps  # noqa: E402

st.set_page_config(page_title="memloc", layout="wide")

root = selected_runs_root()
names = run_names(root)
if not names:
    st.title("memloc")
    st.info(f"No runs under `{root}` yet. Create the demo run (a few minutes on a laptop CPU) with:")
    st.code(create_run_command(root), language="bash")
    st.caption("Then reload this page. Use `streamlit run app/main.py -- --runs DIR` or $MEMLOC_RUNS to look elsewhere.")
    st.stop()

if st.session_state.get("run_name") not in names:  # first visit: take the run from the URL
    wanted = st.query_params.get("run")
    healthy = [n for n in names if not run_problems(run_in_root(root, n))]
    st.session_state["run_name"] = wanted if wanted in names else (healthy or names)[0]
    if wanted is not None and wanted not in names:
        url_notice(f"`run={wanted}` is not a run under `{root}`; showing {st.session_state['run_name']}.")
name = st.sidebar.selectbox("Run", names, key="run_name", format_func=lambda n: f"{n} · {run_health(run_in_root(root, n))}",
                            help=f"run directories under {root}; a sweep's points as sweep/point. Each with its health: "
                                 "complete, the stages it lacks, or damaged")
st.query_params["run"] = name
note = damage_note(run_in_root(root, name))
if note:
    st.warning(note)
for target in list_sweeps(root):  # each sweep with how far its points are
    try:
        counts = target.status_counts()
    except RunError:
        st.sidebar.caption(f"sweep **{target.name}**: unreadable record (the Compare page says why)")
        continue
    st.sidebar.caption(f"sweep **{target.name}**: {sum(counts.values())} points, "
                       + ", ".join(f"{n} {status}" for status, n in counts.items() if n))

pages = [
    st.Page("views/findings.py", title="Findings", url_path="findings", default=True),
    st.Page("views/story.py", title="Story", url_path="story"),
    st.Page("views/overview.py", title="Overview", url_path="overview"),
    st.Page("views/gradients.py", title="Gradient accounting", url_path="gradients"),
    st.Page("views/rewinding.py", title="Layer rewinding", url_path="rewinding"),
    st.Page("views/retraining.py", title="Retraining", url_path="retraining"),
    st.Page("views/neurons.py", title="Neurons", url_path="neurons"),
    st.Page("views/localizers.py", title="Localizers", url_path="localizers"),
    st.Page("views/examples.py", title="Examples", url_path="examples"),
    st.Page("views/example.py", title="One example", url_path="example"),
    st.Page("views/dropout.py", title="Example-tied dropout", url_path="dropout"),
    st.Page("views/compare.py", title="Compare runs", url_path="compare"),
]
page = st.navigation(pages)
# `?page=NAME` reopens a page from a shared link (once per session; later the navigation rules).
if not st.session_state.get("page_from_url"):
    st.session_state["page_from_url"] = True
    linked = next((p for p in pages if p.url_path == st.query_params.get("page")), None)
    if linked is not None and linked.url_path != page.url_path:
        st.switch_page(linked, query_params={k: v for k, v in st.query_params.items() if k != "page"})
st.query_params["page"] = page.url_path or "findings"
carry_selection(run_in_root(root, name))  # the examples picked, across pages and in the link (`?sel=`)
page.run()
