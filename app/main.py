"""memloc explorer: the router and the run picker shared by every page.

    streamlit run app/main.py [-- --runs DIR]

The sidebar lists the runs under the runs root (`--runs`, $MEMLOC_RUNS or ./runs); the chosen
run is kept in the session and in the URL (`?run=NAME`), so a link reopens the same view.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.common import CREATE_RUN, run_names, selected_runs_root  # noqa: E402

st.set_page_config(page_title="memloc", layout="wide")

root = selected_runs_root()
names = run_names(root)
if not names:
    st.title("memloc")
    st.info(f"No runs under `{root}` yet. Create the demo run (a few minutes on a laptop CPU) with:")
    st.code(CREATE_RUN, language="bash")
    st.caption("Then reload this page. Use `streamlit run app/main.py -- --runs DIR` or $MEMLOC_RUNS to look elsewhere.")
    st.stop()

if st.session_state.get("run_name") not in names:  # first visit: take the run from the URL
    wanted = st.query_params.get("run")
    st.session_state["run_name"] = wanted if wanted in names else names[0]
name = st.sidebar.selectbox("Run", names, key="run_name", help=f"run directories under {root}")
st.query_params["run"] = name

pages = [st.Page("pages/overview.py", title="Overview", default=True)]
st.navigation(pages).run()
