"""Compare: one radiograph (upload or a test-split image), every selected stored run side by side."""

import plotly.graph_objects as go
import streamlit as st

from cxrviz.ood import assess, disagreement, warning_text
from cxrviz.predict import agreement, best_runs, predict_runs, view_image
from pages.common import dataset_badge, model_cache, release_deleted, stored_runs, upload_or_test_image

HANDOFF = "explain_input"  # session_state: the image and runs handed to the Explain page
COLS = 4


def prob_chart(pred, height: int = 170) -> go.Figure:
    colors = ["#d62728" if c == pred.predicted else "#9aa5b1" for c in pred.classes]
    fig = go.Figure(go.Bar(x=[100 * p for p in pred.probs], y=pred.classes, orientation="h", marker_color=colors,
                           text=[f"{100 * p:.1f} %" for p in pred.probs], textposition="auto",
                           hovertemplate="%{y}: %{x:.1f} %<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=4, b=0), xaxis=dict(range=[0, 100], title=None),
                      yaxis=dict(autorange="reversed"), showlegend=False)
    return fig


def run_options(runs):
    labels = [r.label for r in runs]

    def fmt(rid):
        r = by_id[rid]
        acc = f"{100 * r.accuracy:.1f} %" if r.evaluation else r.status
        dup = f" · {rid[-4:]}" if labels.count(r.label) > 1 else ""
        return f"{r.label} — {acc}{dup}"

    by_id = {r.id: r for r in runs}
    return by_id, fmt


def choose_image(prefix: str):
    """Upload or test-split pick; returns (ImageInput | None, source description, error | None)."""
    how = st.radio("Image", ["Upload a radiograph", "Pick from the test split"], horizontal=True,
                   key=f"{prefix}_how", label_visibility="collapsed")
    return upload_or_test_image(prefix, how.startswith("Upload"))


def cached_predictions(key: str, img, runs):
    store = st.session_state.setdefault("_compare_preds", {})
    k = (key, tuple(r.id for r in runs))
    if k not in store:
        if len(store) > 32:
            store.clear()
        store[k] = predict_runs(img, runs, model_cache().get)
    return store[k]


# ------------------------------------------------------------------------------------------ page
dataset_badge()
st.title("Compare")
st.caption("One radiograph, every selected stored run side by side. Each run gets exactly its training "
           "preprocessing (input size, normalisation, channels, decode) from its stored config.")

runs, problems = stored_runs()
release_deleted(runs)
if problems:
    st.caption(f"{len(problems)} unreadable run folder(s) skipped: " + "; ".join(f"{n} ({w})" for n, w in problems[:3]))
if not runs:
    st.info("No stored runs yet: train a model on the **Train** page (or `python -m cxrviz train --arch "
            "resnet18`), then come back to compare.")
    st.stop()

by_id, fmt = run_options(runs)
default = [r.id for r in best_runs(runs)] or [runs[0].id]
selected_ids = st.multiselect("Runs (default: the best run of each architecture)", list(by_id), default=default,
                              format_func=fmt, key="compare_runs")
selected = [by_id[i] for i in selected_ids if i in by_id]

img, key, err = choose_image("compare")
if err:
    st.error(err)
    st.stop()
if img is None:
    st.info("Upload a radiograph or pick a test image.")
    st.stop()
if not selected:
    st.warning("Select at least one run.")
    st.stop()

left, right = st.columns([1, 3])
with left:
    h, w = img.shape
    st.image(view_image(img.gray()),
             caption=f"{img.name} · {w}×{h}" + (f" · true: {img.true_class}" if img.true_class else ""),
             width="stretch")
with right:
    with st.spinner("Predicting..."):
        preds, failures = cached_predictions(key, img, selected)
    if preds:
        verdict = agreement(preds)
        with st.spinner("Checking the image against the training images..."):
            unlike = assess(img, [by_id[p.run_id] for p in preds])
        split = disagreement(preds)
        if unlike:  # no confident-looking verdict on an image unlike the training images
            st.warning("⚠️ " + warning_text(unlike + ([split] if split else [])))
            st.caption(f"For what it is worth: {verdict}.")
        else:
            st.subheader(verdict[0].upper() + verdict[1:])  # a split vote says so itself, and is flagged below
            if split:
                st.warning(f"⚠️ Read with care: {split}.")
        if img.true_class:
            right_n = sum(p.predicted == img.true_class for p in preds)
            st.caption(f"True class: **{img.true_class}** — {right_n} of {len(preds)} correct.")
    for r, why in failures:
        st.error(f"{r.label}: {why}")

for start in range(0, len(preds), COLS):
    cols = st.columns(COLS)
    for col, p in zip(cols, preds[start:start + COLS]):
        with col:
            mark = "" if not img.true_class else (" ✅" if p.predicted == img.true_class else " ❌")
            st.markdown(f"**{p.label}**")
            st.metric("Prediction", f"{p.predicted}{mark}", f"{100 * p.confidence:.1f} % confidence",
                      delta_color="off")
            st.plotly_chart(prob_chart(p), key=f"cmp_chart_{p.run_id}", config={"displayModeBar": False})
            st.caption(f"{p.latency_ms:.0f} ms · {by_id[p.run_id].config['img_size']} px · {p.arch}")

st.divider()
pred_runs = [by_id[p.run_id] for p in preds]
c1, c2 = st.columns([1, 1])
show = c1.toggle("Explain (Grad-CAM)", key="compare_explain",
                 help="Grad-CAM of each model's own prediction, on a loaded copy of each stored run.")
if c2.button("Open on the Explain page (methods, fixed target class, opacity, PNG) →", key="compare_to_explain"):
    st.session_state[HANDOFF] = {"image": img, "key": key, "runs": [r.id for r in pred_runs]}
    st.switch_page("pages/explain.py")
if show and pred_runs:
    from cxrviz.explain import explain_runs

    store = st.session_state.setdefault("_compare_cams", {})
    ck = (key, tuple(r.id for r in pred_runs))
    if ck not in store:
        if len(store) > 8:
            store.clear()
        with st.spinner("Grad-CAM..."):
            store[ck] = explain_runs(img, pred_runs, model_cache().get, "GradCAM")
    exs = store[ck]
    for start in range(0, len(exs), COLS):
        cols = st.columns(COLS)
        for col, ex in zip(cols, exs[start:start + COLS]):
            with col:
                if ex.ok:
                    st.image(ex.overlay, caption=f"{ex.label}: CAM for {ex.target} ({ex.cam_ms:.0f} ms)",
                             width="stretch")
                else:
                    st.error(ex.error)
