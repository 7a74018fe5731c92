"""Overview: what the app does, and the dataset in use (the built-in synthetic set, a folder the user points
to, or several folders merged class by class, each a named source): counts per class, source and split,
duplicates, sample images per class and the original image sizes."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from cxrviz.data import (
    DatasetError,
    find_duplicates,
    image_size_stats,
    near_duplicates,
    open_dataset,
)
from cxrviz.data.sources import (
    DEFAULT_SPLIT_FRACTION,
    drop_source,
    extend_spec,
    spec_parts,
)
from cxrviz.data.survey import sample_images, size_summary
from cxrviz.plots import dataset
from pages.common import DATA_KEY, current_dataset, data_path, set_data_path, stored_runs

SAMPLES_PER_CLASS = 6
SAMPLE_PX = 160

st.title("cxrviz: classic CNNs on chest X-rays")
st.markdown(
    "cxrviz trains the classic convolutional networks (LeNet-5, AlexNet, VGG, GoogLeNet, ResNet) on chest "
    "radiographs of three classes (Covid, Normal, Viral Pneumonia) and ranks them on a leaderboard with honest "
    "uncertainty. It then explains each model's decisions with Grad-CAM heat maps and compares models image by "
    "image.")
runs, _ = stored_runs()
c1, c2 = st.columns([3, 2], vertical_alignment="center")
c1.page_link("pages/train.py", label="New here? Open **Train** and click **Quick demo**: a small model trains "
             "in under a minute.", icon="⚡")
c2.caption(f"{len(runs)} stored run(s) in the leaderboard.")


# ------------------------------------------------------------------------------------------ dataset choice
def _use_folder() -> None:
    err = set_data_path(st.session_state.get("ov_path", ""))
    st.session_state["ov_error"] = err


@st.cache_data(show_spinner="Checking for duplicate files…", max_entries=8)
def _duplicates(path: str) -> dict:
    return find_duplicates(open_dataset(path or None))


@st.cache_data(show_spinner="Looking for near duplicates (every image is decoded once at 32 px)…", max_entries=4)
def _near_duplicates(path: str) -> dict:
    return near_duplicates(open_dataset(path or None))


ADD_KINDS = ("One class folder", "A complete dataset folder (train/ and test/)")
ADD_SPLITS = {"split it (seeded)": None, "all to train": "train", "all to test": "test"}


def _add_source() -> None:
    folder = (st.session_state.get("ov_add_path") or "").strip()
    if not folder:
        st.session_state["ov_error"] = "Give the folder of the source to add."
        return
    try:
        if st.session_state.get("ov_add_kind") == ADD_KINDS[1]:
            spec = extend_spec(data_path(), data=folder)
        else:
            spec = extend_spec(data_path(), add=(st.session_state["ov_add_class"], folder,
                                                 ADD_SPLITS[st.session_state.get("ov_add_split", "split it (seeded)")]),
                               split_fraction=st.session_state.get("ov_add_frac", DEFAULT_SPLIT_FRACTION))
    except DatasetError as e:
        st.session_state["ov_error"] = str(e)
        return
    st.session_state["ov_error"] = set_data_path(spec or "")


def _drop_source(index: int) -> None:
    st.session_state["ov_error"] = set_data_path(drop_source(data_path(), index) or "")


def _use_synthetic() -> None:
    set_data_path("")
    st.session_state["ov_path"] = ""
    st.session_state["ov_error"] = None


st.subheader("Dataset")
if "ov_path" not in st.session_state:
    st.session_state["ov_path"] = (spec_parts(data_path())[0] or [""])[0]
p1, p2, p3 = st.columns([5, 1, 1], vertical_alignment="bottom")
p1.text_input("Dataset folder", key="ov_path",
              placeholder="/path/to/Covid19-dataset  (empty: the built-in synthetic set)",
              help="A folder with train/ and test/ (or val/), one sub-folder per class, e.g. the Kaggle "
                   "'Covid19 Image Dataset'. Remembered for this browser session.", on_change=_use_folder)
p2.button("Use folder", on_click=_use_folder, width="stretch", key="ov_use")
p3.button("Use synthetic", on_click=_use_synthetic, width="stretch", key="ov_synth",
          disabled=not st.session_state.get(DATA_KEY))
src, err = current_dataset()
with st.expander("Add a source: merge another folder into this dataset, class by class",
                 expanded=bool(src is not None and src.sources)):
    st.caption("Mixing sources keeps a model from learning *where* an image comes from instead of what it shows "
               "(e.g. add adult normals to the Kaggle Normal class). Every image keeps the name of its source.")
    a1, a2 = st.columns([2, 3])
    kind = a1.radio("What to add", ADD_KINDS, key="ov_add_kind")
    a2.text_input("Folder", key="ov_add_path", placeholder="/path/to/openist-normal/images")
    if kind == ADD_KINDS[0]:
        b1, b2, b3 = st.columns(3)
        b1.selectbox("Class", src.classes if src is not None else ["Covid", "Normal", "Viral Pneumonia"],
                     key="ov_add_class")
        b2.selectbox("Split", list(ADD_SPLITS), key="ov_add_split")
        b3.slider("Test share when split", 0.05, 0.5, DEFAULT_SPLIT_FRACTION, 0.05, key="ov_add_frac",
                  disabled=st.session_state.get("ov_add_split", "split it (seeded)") != "split it (seeded)")
    st.button("Add source", on_click=_add_source, key="ov_add")
if st.session_state.get("ov_error"):
    st.error(st.session_state["ov_error"])

if src is None:
    st.error(f"Dataset: {err}")
    st.stop()

if src.synthetic:
    st.warning("**SYNTHETIC DATA.** These are procedurally generated chest phantoms, not radiographs of patients. "
               "They let you try every part of the app; accuracies on them say nothing about real X-rays. Point "
               "to a real dataset folder above to train on real images.", icon="🧪")
elif src.sources:
    st.success(f"Using **{len({x['name'] for x in src.sources})} sources** merged class by class: {src.name}.")
    for i, x in enumerate(src.sources):
        r1, r2 = st.columns([6, 1], vertical_alignment="center")
        what = (f"{', '.join(x['classes'])} → {x['split']}" if x["kind"] == "class folder"
                else "complete dataset")
        r1.markdown(f"**{x['name']}** — {what}, {x['files']} files, `{x['path']}` "
                    f"<small>(fingerprint {x['fingerprint']})</small>", unsafe_allow_html=True)
        r2.button("Remove", key=f"ov_drop_{i}", on_click=_drop_source, args=(i,), width="stretch")
    for w in src.warnings:
        st.warning(w, icon="⚠️")
else:
    st.success(f"Using **{src.name}** at `{src.root}`.")

counts = src.counts()
n_train = sum(counts.get("train", {}).values())
n_test = sum(counts.get("test", {}).values())
m1, m2, m3, m4 = st.columns(4)
m1.metric("Classes", len(src.classes))
m2.metric("Training images", n_train)
m3.metric("Test images", n_test)
m4.metric("Ignored files", len(src.ignored), help="Hidden files, notes and other non-image files that were skipped.")
if src.ignored:
    with st.expander(f"{len(src.ignored)} ignored file(s)"):
        st.write(", ".join(f"`{f}`" for f in src.ignored[:200]))

dups = _duplicates(data_path()) if not src.synthetic else {"groups": [], "cross_split": [], "cross_source": []}
if dups["cross_split"]:
    st.warning(f"**{len(dups['cross_split'])} test image(s) are byte-identical copies of training images** — "
               "those test answers are memorised, so test accuracy on this split is optimistic.", icon="⚠️")
if dups["groups"]:
    with st.expander(f"{len(dups['groups'])} group(s) of identical files"):
        st.write("\n".join("- " + " = ".join(f"`{s}/…/{f.split('/')[-1]}`" for s, f in g) for g in dups["groups"]))
if dups.get("cross_source"):
    with st.expander(f"{len(dups['cross_source'])} image(s) found in more than one source"):
        st.write("\n".join("- " + " = ".join(f"{o}: `{s}/…/{f.split('/')[-1]}`" for o, s, f in g)
                           for g in dups["cross_source"][:200]))
if not src.synthetic:
    if st.button("Find near duplicates (re-encoded or resized copies)", key="ov_near",
                 help="Decodes every image once at 32 px (cached) and compares 64-bit difference hashes."):
        st.session_state["ov_near_for"] = data_path()
    if st.session_state.get("ov_near_for") == data_path():
        near = _near_duplicates(data_path())
        exact = {tuple(map(tuple, g)) for g in dups["groups"]}
        extra = [g for g in near["groups"] if tuple(map(tuple, g)) not in exact]
        if near["cross_split"]:
            st.warning(f"**{len(near['cross_split'])} test image(s) look like training images** (same image, "
                       "possibly re-encoded or resized): test accuracy on them is optimistic.", icon="⚠️")
        st.caption(f"{len(near['groups'])} group(s) of near-identical images ({len(extra)} not byte-identical), "
                   f"{len(near['cross_source'])} across sources.")
        if extra:
            with st.expander("Near-duplicate groups that are not byte-identical"):
                st.write("\n".join("- " + " ≈ ".join(f"`{s}/…/{f.split('/')[-1]}`" for s, f in g)
                                   for g in extra[:200]))

if src.sources:
    rows = src.source_counts()
    st.plotly_chart(dataset.source_counts_figure(rows), key="ov_source_counts", config={"displayModeBar": False})
    table = pd.DataFrame(rows).pivot_table(index=["source", "class"], columns="split", values="n", fill_value=0)
    st.dataframe(table, width="stretch")
else:
    st.plotly_chart(dataset.counts_figure(counts, synthetic=src.synthetic), key="ov_counts",
                    config={"displayModeBar": False})


@st.cache_data(max_entries=8, show_spinner="Loading sample images…")
def _samples(path: str, per_class: int, size: int) -> dict:
    src_, _ = current_dataset()
    return sample_images(src_, per_class, size)


@st.cache_data(max_entries=8, show_spinner="Reading image headers…")
def _sizes(path: str) -> list[dict]:
    src_, _ = current_dataset()
    return image_size_stats(src_)


st.subheader("Sample images per class")
grid = _samples(data_path(), SAMPLES_PER_CLASS, SAMPLE_PX)
for cls, items in grid.items():
    st.markdown(f"**{cls}**" + (" (synthetic)" if src.synthetic else ""))
    if not items:
        st.caption("no readable image")
        continue
    cols = st.columns(SAMPLES_PER_CLASS)
    for col, (img, caption) in zip(cols, items):
        col.image(img, caption=caption, width="stretch", clamp=True)

st.subheader("Image sizes")
if src.synthetic:
    st.caption("Synthetic images are rendered directly at the size chosen for training (square, 8-bit "
               "grayscale), so they have no original size.")
else:
    rows = _sizes(data_path())
    if not rows:
        st.caption("No image headers could be read (DICOM files are not part of these statistics).")
    else:
        s1, s2 = st.columns([3, 2])
        s1.dataframe(pd.DataFrame(size_summary(rows)), hide_index=True, width="stretch")
        s2.plotly_chart(dataset.size_scatter_figure(rows), key="ov_sizes", config={"displayModeBar": False})
        st.caption("Every image is converted to grayscale and resized to a square of the chosen size for training; "
                   "the original sizes above show how much each class is rescaled.")
