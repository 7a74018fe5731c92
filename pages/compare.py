"""Compare: one radiograph (upload or a test-split image), every selected stored run side by side."""

import streamlit as st

from cxrviz.ood import assess, disagreement, warning_text
from cxrviz.plots.predict import probability_bars
from cxrviz.predict import agreement, best_runs, predict_runs, view_image
from pages.common import choose_image, grid, model_cache, release_deleted, run_labels, session_cached, stored_runs

HANDOFF = "explain_input"  # session_state: the image and runs handed to the Explain page


def predictions(key: str, img, runs):
    """(predictions, failures) of the runs on the image, kept in the session."""
    return session_cached("_compare_preds", (key, tuple(r.id for r in runs)),
                          lambda: predict_runs(img, runs, model_cache().get), limit=32)


def prediction_card(p, true_class: str | None, img_size: int) -> None:
    """One run's prediction: the class (marked right or wrong when the truth is known), confidence, bars."""
    mark = "" if not true_class else (" ✅" if p.predicted == true_class else " ❌")
    st.markdown(f"**{p.label}**")
    st.metric("Prediction", f"{p.predicted}{mark}", f"{100 * p.confidence:.1f} % confidence", delta_color="off")
    st.plotly_chart(probability_bars(p), key=f"cmp_chart_{p.run_id}", config={"displayModeBar": False})
    st.caption(f"{p.latency_ms:.0f} ms · {img_size} px · {p.arch}")


def cam_card(ex) -> None:
    """One run's Grad-CAM overlay, or why there is none."""
    if ex.ok:
        st.image(ex.overlay, caption=f"{ex.label}: CAM for {ex.target} ({ex.cam_ms:.0f} ms)", width="stretch")
    else:
        st.error(ex.error)


# ------------------------------------------------------------------------------------------ page
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

by_id, fmt = run_labels(runs)
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
        preds, failures = predictions(key, img, selected)
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


grid(preds, lambda p: prediction_card(p, img.true_class, by_id[p.run_id].config["img_size"]))

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

    with st.spinner("Grad-CAM..."):
        exs = session_cached("_compare_cams", (key, tuple(r.id for r in pred_runs)),
                             lambda: explain_runs(img, pred_runs, model_cache().get, "GradCAM"), limit=8)
    grid(exs, cam_card)
