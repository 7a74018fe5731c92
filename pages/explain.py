"""Explain: class activation maps (grad-cam package) of every selected run, side by side; the
misclassified test images of one run with their CAMs."""

import streamlit as st

from cxrviz.errors import CxrvizError
from cxrviz.explain import (
    CAM_METHODS,
    CLASS_AGNOSTIC,
    SLOW_METHODS,
    display_image,
    explain_runs,
    misclassified,
    overlay,
)
from cxrviz.plots.explain import side_by_side_png
from cxrviz.predict import best_runs, stored_test_image
from pages.common import choose_image, grid, model_cache, release_deleted, run_labels, session_cached, stored_runs

HANDOFF = "explain_input"  # set by the Compare page
METHOD_HELP = {
    "GradCAM": "channel weights = mean gradient of the class score (Selvaraju et al. 2017)",
    "GradCAM++": "weights from higher-order gradient terms; better for several instances (Chattopadhay et al. 2018)",
    "EigenCAM": "first principal component of the activations: class-agnostic, no gradients (Muhammad & Yeasin 2020)",
    "LayerCAM": "element-wise positive gradients × activations (Jiang et al. 2021)",
    "ScoreCAM": "each channel's mask is scored by a forward pass: gradient-free but slow (Wang et al. 2020)",
}


@st.cache_resource(max_entries=64, show_spinner=False)
def _stored_image(path: str, true_class: str):
    try:
        return stored_test_image(path, true_class), None
    except CxrvizError as e:
        return None, str(e)


def compute(img, key, runs, method, target, store_key, limit=8):
    """CAMs for (image, runs, method, target), kept in the session; ScoreCAM shows a progress bar."""

    def cams():
        if method in SLOW_METHODS:
            bar = st.progress(0.0, text=f"{method}: starting...")
            n = len(runs)

            def progress(i, done, total):
                bar.progress(min(1.0, (i + done / total) / n),
                             text=f"{method}: model {i + 1} of {n}, batch {done} of {total}")

            exs = explain_runs(img, runs, model_cache().get, method, target, progress=progress)
            bar.empty()
            return exs
        with st.spinner(f"{method}..."):
            return explain_runs(img, runs, model_cache().get, method, target)

    return session_cached(store_key, (key, tuple(r.id for r in runs), method, target), cams, limit)


def cam_card(ex, shown, alpha) -> None:
    """One run's map over the image (at display size), its prediction and the class the map explains."""
    st.markdown(f"**{ex.label}**")
    if not ex.ok:
        st.error(ex.error)
        return
    p = ex.prediction
    what = f"CAM for **{ex.target}**" if ex.target else "class-agnostic map"
    st.image(overlay(shown, ex.cam, alpha), width="stretch")
    st.caption(f"says {p.predicted} ({100 * p.confidence:.1f} %) · {what} · {ex.cam_ms:.0f} ms")


def mistake_card(item, run, method, target_mode, alpha) -> None:
    """One misclassified test image with its CAM and stored probabilities."""
    gimg, gerr = _stored_image(item["path"], item["true"])
    probs = " · ".join(f"{c} {100 * p:.0f} %" for c, p in zip(run.classes, item["probs"]))
    if gerr:
        st.error(gerr)
        return
    tgt = item["true"] if target_mode.startswith("true") else None
    ex = compute(gimg, f"file:{item['path']}", [run], method, tgt, "_gallery_cams", limit=96)[0]
    if ex.ok:
        st.image(overlay(display_image(gimg.gray()), ex.cam, alpha), width="stretch")
    else:
        st.error(ex.error)
    st.caption(f"`{item['name']}`  \ntrue **{item['true']}** → predicted **{item['predicted']}**  \n"
               f"{probs}")


# ------------------------------------------------------------------------------------------ page
st.title("Explain")
st.caption("Class activation maps through the `grad-cam` package, computed on a loaded copy of each stored run "
           "(never on a model that is training), at the layer the registry names for each architecture.")

runs, problems = stored_runs()
release_deleted(runs)
if not runs:
    st.info("No stored runs yet: train a model on the **Train** page (or `python -m cxrviz train --arch "
            "resnet18`), then come back to explain its predictions.")
    st.stop()
by_id, fmt = run_labels(runs)


def image_section() -> None:
    handoff = st.session_state.get(HANDOFF)
    default = [i for i in (handoff or {}).get("runs", []) if i in by_id] or [r.id for r in best_runs(runs)] \
        or [runs[0].id]
    ids = st.multiselect("Runs", list(by_id), default=default, format_func=fmt, key="explain_runs")
    selected = [by_id[i] for i in ids if i in by_id]

    c1, c2, c3 = st.columns([2, 3, 2])
    method = c1.selectbox("Method", list(CAM_METHODS), key="explain_method")
    classes = list(dict.fromkeys(c for r in (selected or runs) for c in r.classes))
    tmode = c2.radio("Target class", ["Each model's own prediction", "One class for all models"],
                     key="explain_tmode", disabled=method in CLASS_AGNOSTIC,
                     help="A fixed class is the fair comparison: every map answers the same question.")
    target = None
    if tmode.startswith("One") and method not in CLASS_AGNOSTIC:
        target = c2.selectbox("Class", classes, key="explain_class")
    alpha = c3.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="explain_alpha")
    st.caption(f"**{method}**: {METHOD_HELP[method]}.")
    if method in SLOW_METHODS:
        st.warning(f"{method} is slow: one forward pass per channel of the target layer (512 for ResNet-18 and "
                   "VGG, 1024 for GoogLeNet), i.e. minutes on a CPU for large models.")

    img, key, err = choose_image("explain", st.session_state.get(HANDOFF))
    if err:
        st.error(err)
        return
    if img is None:
        st.info("Upload a radiograph, pick a test image, or come here from **Compare**.")
        return
    if not selected:
        st.warning("Select at least one run.")
        return
    done = (key, tuple(r.id for r in selected), method, target) in st.session_state.get("_explain_cams", {})
    if method in SLOW_METHODS and not done and not st.button(f"Compute {method}", key="explain_go_slow"):
        return
    exs = compute(img, key, selected, method, target, "_explain_cams")
    st.image(display_image(img.gray()),
             caption=f"{img.name}" + (f" · true: {img.true_class}" if img.true_class else ""),
             width=220)
    shown = display_image(img.gray())  # overlays at display size: an 8000x8000 upload would need GBs at full size
    grid(exs, lambda ex: cam_card(ex, shown, alpha))
    if any(e.ok for e in exs):
        what = (f"target {target} for all models" if target else
                "class-agnostic" if method in CLASS_AGNOSTIC else "each model's own prediction")
        st.download_button("Download the side-by-side figure (PNG)",
                           side_by_side_png(img, exs, alpha, title=f"{img.name} · {method} · {what}"),
                           file_name=f"cam-{method.lower().replace('+', 'pp')}.png", mime="image/png",
                           key="explain_png", on_click="ignore")


def gallery_section() -> None:
    gid = st.selectbox("Run", list(by_id), format_func=fmt, key="gallery_run")
    run = by_id[gid]
    wrong = misclassified(run)
    n_test = run.evaluation["n"] if run.evaluation else None
    of = f" of {n_test}" if n_test else ""
    if not wrong:
        st.success(f"{run.label}: no misclassified test images{of}.")
        return
    st.write(f"**{len(wrong)}{of}** test images misclassified by {run.label}, most confident mistakes first "
             "(probabilities as stored with the run).")
    g1, g2, g3, g4 = st.columns([2, 2, 2, 2])
    gmethod = g1.selectbox("Method", [m for m in CAM_METHODS if m not in SLOW_METHODS], key="gallery_method")
    gtarget = g2.radio("CAM for", ["predicted class", "true class"], key="gallery_target")
    n_show = g3.slider("Show", 1, min(24, len(wrong)), min(8, len(wrong)), key="gallery_n") if len(wrong) > 1 else 1
    galpha = g4.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="gallery_alpha")
    grid(wrong[:n_show], lambda item: mistake_card(item, run, gmethod, gtarget, galpha))


# stateful tabs: only the open one computes CAMs
tab_img, tab_gallery = st.tabs(["Image", "Misclassified test images"], key="explain_tab", on_change="rerun")
if tab_img.open:
    with tab_img:
        image_section()
if tab_gallery.open:
    with tab_gallery:
        gallery_section()
