"""Findings: the paper's claims as a scorecard of the selected run, or of a sweep over seeds."""

import html

import streamlit as st

from app.cache import RunError, current_run, scorecards, selected_runs_root, sweep_in_root, sweep_names
from app.url import encode_interventions, url_choice
from memloc.interventions import Rewind
from memloc.scorecard import VERDICT_COLOURS, VERDICTS, critical_groups, format_number

#: The page that shows each claim (a claim's `page` is the url_path of one of these): its file and title.
PAGES = {"overview": ("views/overview.py", "Overview"), "gradients": ("views/gradients.py", "Gradient accounting"),
         "rewinding": ("views/rewinding.py", "Layer rewinding"), "neurons": ("views/neurons.py", "Neurons"),
         "dropout": ("views/dropout.py", "Example-tied dropout")}

st.title("Findings: does the paper hold here?")
st.markdown(
    "*Can Neural Network Memorization Be Localized?* (Maini et al., ICML 2023) makes a handful of claims about "
    "where a network keeps the wrong labels it memorized. Each row is one claim, measured on this run, or on a "
    "sweep's seeds with its spread; the verdict follows the rule written under it. A measurement, not a "
    "promise: where a claim does not hold, the row says by how much."
)

run = current_run()
root = selected_runs_root()
sweeps = sweep_names(root)
# The radio's options are its labels (stable: a run change keeps the choice); the URL holds run / sweep:NAME.
labels = {"run": "this run", **{f"sweep:{s}": f"sweep {s} (seeds folded)" for s in sweeps}}
in_sweep = st.session_state["run_name"].split("/")[0] if "/" in st.session_state["run_name"] else None
wanted = st.query_params.get("of") or (f"sweep:{in_sweep}" if f"sweep:{in_sweep}" in labels else "run")
if st.session_state.get("findings_of") not in labels.values():  # first visit (or its sweep is gone): from the URL
    st.session_state["findings_of"] = labels.get(wanted, labels["run"])
chosen = (st.radio("Scorecard of", list(labels.values()), key="findings_of", horizontal=True) if sweeps
          else labels["run"])  # nothing to choose without a sweep
choice = next(key for key, label in labels.items() if label == chosen)
st.query_params["of"] = choice
path = run.path if choice == "run" else sweep_in_root(root, choice.split(":", 1)[1]).path

try:
    sections = scorecards(path)
except RunError as error:
    st.error(f"No scorecard for **{path.name}**: {error}")
    st.stop()

if len(sections) > 1:
    titles = [s.title for s in sections]
    url_choice("setting", "findings_setting", titles, titles[0])
    title = st.selectbox("Setting", titles, key="findings_setting")
    st.query_params["setting"] = title
    section = sections[titles.index(title)]
else:
    section = sections[0]
card = section.card
if section.left_out:
    st.warning("Left out of this scorecard (unreadable): " + "; ".join(section.left_out))

counts = card["verdict"].value_counts()
cols = st.columns(len(VERDICTS))
for col, verdict in zip(cols, VERDICTS):
    col.metric(verdict, f"{counts.get(verdict, 0)} of {len(card)}")
st.caption(f"run {st.session_state['run_name']}" if choice == "run"
           else section.title + f"; seeds: {', '.join(p.rsplit('/', 1)[-1] for p in section.runs)}")

first_run = st.session_state["run_name"] if choice == "run" else f"{path.name}/{section.runs[0].rsplit('/', 1)[-1]}"
critical = critical_groups(section.first)
#: Per page, the view a claim's link opens: the layer findings open with the critical groups rewound to epoch 0.
views = {"rewinding": {"intervention": encode_interventions([Rewind(g, 0) for g in critical])} if critical else {}}
for _, row in card.iterrows():
    with st.container(border=True):
        left, middle, right = st.columns([5, 2, 2], vertical_alignment="center")
        colour = VERDICT_COLOURS[row["verdict"]]
        spread = f" on {row['holds_on']} seeds" if row["n"] > 1 else ""
        left.markdown(f"<div style='font-size:1.35rem;font-weight:600'>{html.escape(row['text'])}</div>",
                      unsafe_allow_html=True)
        left.caption(f"Rule: {row['rule']}." + (f" Paper: {row['paper']}." if row["paper"] else ""))
        if row["detail"]:
            left.caption(f"Found{' (first seed)' if row['n'] > 1 else ''}: {row['detail']}.")
        middle.markdown(f"<div style='font-size:2.2rem;font-weight:700'>{html.escape(format_number(row, with_n=False))}</div>",
                        unsafe_allow_html=True)
        middle.caption(row["reads"])
        right.markdown(f"<span style='background:{colour};color:#fff;padding:.3rem .7rem;border-radius:.4rem;"
                       f"font-size:1.3rem;font-weight:700'>{html.escape(row['verdict'])}</span>"
                       + (f"<div style='margin-top:.4rem'>holds{spread}</div>" if spread else ""), unsafe_allow_html=True)
        file, title = PAGES[row["page"]]
        right.page_link(file, label=f"see it on {title}", query_params={"run": first_run, **views.get(row["page"], {})})

if section.absent:
    st.info(f"Not measured: the run lacks the stage{'s' * (len(section.absent) > 1)} `{'`, `'.join(section.absent)}`. "
            "This command adds them (complete stages are skipped):")
    st.code(section.command, language="bash")
st.download_button("Scorecard (CSV)", card.drop(columns=["stages"]).to_csv(index=False), file_name=f"{path.name}-scorecard.csv",
                   mime="text/csv")
