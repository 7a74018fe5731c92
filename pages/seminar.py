"""Seminar view: projector-friendly — large type, the main table next to the deck's figures, one chart, and
the caveats (test-set size, interval width, dataset bias)."""
from functools import partial

import streamlit as st

from cxrviz.external_records import latest_records
from cxrviz.plots import leaderboard
from cxrviz.report import (
    DECK_DEVICE,
    SYNTHETIC,
    caveats,
    export,
    filter_frame,
    runs_frame,
    select_runs,
    seminar_frame,
    seminar_table,
)
from pages.common import dataset_picker, stored_runs

st.markdown("""
<style>
.block-container {max-width: 100%; padding-top: 2rem;}
.block-container h1 {font-size: 3.2rem;}
.block-container p, .block-container li {font-size: 1.35rem; line-height: 1.5;}
.block-container [data-testid="stTable"] th, .block-container [data-testid="stTable"] td {font-size: 1.35rem;
  padding: 0.5rem 0.9rem;}
.block-container [data-testid="stTable"] td p, .block-container [data-testid="stTable"] th p {
  white-space: nowrap !important; font-size: 1.35rem;}
.block-container [data-testid="stCaptionContainer"] p {font-size: 1.1rem;}
</style>
""", unsafe_allow_html=True)
st.title("CNNs on chest X-rays: how sure are we?")

runs, _problems = stored_runs()
if not runs:
    st.info("No stored runs yet: train the deck's four models on the **Train** page or with "
            "`python -m cxrviz reproduce --data <folder>`.")
    st.stop()

df_all = runs_frame(runs)
dataset = dataset_picker(st.sidebar, df_all, "sem_dataset")
df = filter_frame(df_all, dataset=dataset)
sel = select_runs(runs, df)

# ---------------------------------------------------------------- the table
table = seminar_table(sel)
st.table(table.set_index("model"))
sem = seminar_frame(sel)
ran = sem[sem["seeds"] > 0]
devices = ", ".join(sorted({str(d) for d in ran["device"].dropna()})) or "–"
st.caption(f"cxrviz: mean ± sd over seeds of each architecture's most-seeded setting, trained on {devices}, "
           f"data: {dataset}. Deck: one run each, 20 epochs on a {DECK_DEVICE}. The 95 % interval is over the "
           "test images.")

# ---------------------------------------------------------------- the chart
st.plotly_chart(leaderboard.acc_per_arch(df, deck=True, big=True), key="sem_fig", theme=None)

ext_recs = latest_records(sel)
if ext_recs:  # how much of the ranking survives outside the training sources
    from cxrviz.plots.external import internal_vs_external

    st.markdown("### Does it generalise? Internal (test split) vs external")
    st.plotly_chart(internal_vs_external(ext_recs, big=True), key="sem_ext_fig", theme=None)

# ---------------------------------------------------------------- caveats
n_test = int(df["n_test"].max()) if df["n_test"].notna().any() else None
best = float(ran["accuracy"].max()) if not ran.empty and ran["accuracy"].notna().any() else None
st.markdown("### Read with care")
for c in caveats(n_test, best, synthetic=dataset == SYNTHETIC):
    st.markdown(f"- {c}")

with st.sidebar:
    st.download_button("⬇️ Table (Markdown)", export(table, "md"), file_name="cxrviz-seminar.md",
                       mime="text/markdown", key="sem_md", on_click="ignore")
    st.download_button("⬇️ Table (LaTeX)", export(table, "latex"), file_name="cxrviz-seminar.tex",
                       mime="application/x-tex", key="sem_tex", on_click="ignore")
    st.download_button("⬇️ Chart (PNG)", partial(leaderboard.acc_per_arch_png, df, True),
                       file_name="cxrviz-accuracy-per-architecture.png", mime="image/png", key="sem_png",
                       on_click="ignore")
