"""Placeholder page (being written)."""
import streamlit as st

from pages.common import dataset_badge, stored_runs

dataset_badge()
st.title("Leaderboard")
runs, problems = stored_runs()
st.write(f"{len(runs)} stored runs")
