"""cxrviz: `streamlit run app.py`. This file routes and draws the frame every page shares (the sidebar's
dataset badge); the pages live in pages/."""
import streamlit as st

from pages.common import dataset_badge

st.set_page_config(page_title="cxrviz: CNNs on chest X-rays", page_icon="🩻", layout="wide")

pages = [
    st.Page("pages/overview.py", title="Overview", icon="🏠", default=True),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/leaderboard.py", title="Leaderboard", icon="🏆"),
    st.Page("pages/external.py", title="External validation", icon="🌍"),
    st.Page("pages/seminar.py", title="Seminar view", icon="📽️"),
    st.Page("pages/compare.py", title="Compare", icon="🔍"),
    st.Page("pages/explain.py", title="Explain", icon="🔥"),
]
page = st.navigation(pages)
dataset_badge()
page.run()
