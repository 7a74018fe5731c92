"""Streamlit glue shared by the pages: process-wide resources and session choices. Thin: all logic is in
``cxrviz``; nothing here trains, decodes or computes metrics itself."""
from __future__ import annotations

import hashlib

import streamlit as st

from cxrviz.data import MAX_UPLOAD_BYTES, DatasetSource, open_dataset
from cxrviz.errors import CxrvizError
from cxrviz.jobs import JobRegistry
from cxrviz.predict import ImageInput, ModelCache, get_test_image, list_test_images
from cxrviz.runs import Run, default_root, delete_run, list_runs


def _route_through_app() -> None:
    """Make app.py's st.navigation the only navigation, whatever URL a fresh server is first opened on.

    Streamlit decides once per server process, when the first session starts, whether the app is an old-style
    (v1) multipage app: it is when a folder named ``pages/`` sits next to the main script. It then runs the
    requested page file directly, with a sidebar listing every file in ``pages/`` ("app, common, compare, ...").
    Only a call to ``st.navigation`` (in app.py) clears that flag, and opening ``/train`` first never runs app.py,
    so every later session kept the file list. Every page imports this module, so on that first run we clear
    the flag and rerun: the rerun goes through app.py, which shows the six named pages and opens the page the
    URL asked for. (The flag is Streamlit's; there is no public setting for it.)"""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_route_through_app()

DATA_KEY = "data_path"  # session_state: the dataset folder chosen on Overview ("" = built-in synthetic set)


@st.cache_resource
def job_registry() -> JobRegistry:
    """One registry per server process: every session, tab and page sees the same jobs (with cluster jobs when
    CXRVIZ_RAY_ADDRESS is set)."""
    return JobRegistry.from_environment()


@st.cache_resource
def model_cache() -> ModelCache:
    return ModelCache(max_items=16)


def _runs_signature() -> tuple:
    root = default_root()
    if not root.is_dir():
        return (str(root),)
    sig = [str(root)]  # the folder itself: copies of one runs folder elsewhere must not share a cache entry
    for d in root.iterdir():
        if not d.name.startswith("."):
            try:
                sig.append((d.name, d.stat().st_mtime_ns))
            except OSError:
                pass
    return (sig[0], *sorted(sig[1:]))


@st.cache_resource(max_entries=4)
def _list_runs(sig: tuple) -> tuple[list[Run], list[tuple[str, str]]]:
    return list_runs()


def stored_runs() -> tuple[list[Run], list[tuple[str, str]]]:
    """(readable runs newest first, [(folder, reason)] for unreadable ones); re-read when the folder changes."""
    return _list_runs(_runs_signature())


def remove_run(run: Run) -> None:
    delete_run(run)
    model_cache().release(run.id)


def data_path() -> str:
    return st.session_state.get(DATA_KEY, "") or ""


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_dataset(path: str) -> DatasetSource:
    return open_dataset(path or None)


def current_dataset() -> tuple[DatasetSource | None, str | None]:
    """The dataset chosen for this session (default: the built-in synthetic set) or (None, error)."""
    try:
        return _open_dataset(data_path()), None
    except CxrvizError as e:
        return None, str(e)


def set_data_path(path: str) -> str | None:
    """Validate and remember a dataset folder for this session; returns an error message or None."""
    path = (path or "").strip()
    try:
        open_dataset(path or None)
    except CxrvizError as e:
        return str(e)
    _open_dataset.clear()
    st.session_state[DATA_KEY] = path
    return None


def dataset_badge() -> None:
    src, err = current_dataset()
    if err:
        st.sidebar.error(f"Dataset: {err}")
    elif src.synthetic:
        st.sidebar.info("Data: **synthetic** phantoms (built-in). Point to a real dataset on Overview.")
    else:
        st.sidebar.success(f"Data: **{src.name}**")
    reg = job_registry()
    active = [j for j in reg.snapshots() if j.active]
    if active:
        st.sidebar.caption(f"⏳ {len(active)} training job(s) queued or running")


def release_deleted(runs) -> None:
    """Models of runs deleted elsewhere (another tab, the CLI) leave the process-wide cache."""
    cache, ids = model_cache(), {r.id for r in runs}
    for rid in set(cache.ids()) - ids:
        cache.release(rid)


@st.cache_resource(max_entries=4, show_spinner=False)
def _decode_upload(digest: str, data: bytes, name: str):
    """(ImageInput, None) or (None, one-line error); keyed on the content digest."""
    try:
        return ImageInput(data=data, name=name), None
    except CxrvizError as e:
        return None, str(e)


def load_upload(data: bytes, name: str):
    """Upload handling shared by Compare and Explain: bytes + file name -> (ImageInput, None, digest) or
    (None, one-line error, digest). Size is checked before anything is decoded."""
    digest = hashlib.sha1(data).hexdigest()
    if len(data) > MAX_UPLOAD_BYTES:
        too_large = f"file too large ({len(data) / 2**20:.1f} MB > limit {MAX_UPLOAD_BYTES / 2**20:.0f} MB)"
        return None, f"{name}: {too_large}", digest
    img, err = _decode_upload(digest, data, name)
    return img, err, digest


FORMATS = "PNG, JPEG (8/16-bit; grey, RGB, RGBA, palette), DICOM (.dcm or no extension), TIFF, BMP, WebP"


@st.cache_resource(max_entries=16, show_spinner=False)
def _test_image(root: str, index: int, _src):
    try:
        return get_test_image(_src, index), None
    except CxrvizError as e:
        return None, str(e)


def upload_or_test_image(prefix: str, upload: bool):
    """The image picker shared by Compare and Explain, under their own radio: an upload or a pick from the
    current dataset's test split -> (ImageInput | None, cache key | None, one-line error | None)."""
    if upload:
        # no ``type=`` filter: DICOM exports often have no extension (IM000001), and whatever arrives, the
        # decoder answers with a one-line message ("not an image", "truncated", ...)
        up = st.file_uploader(f"Radiograph: {FORMATS}; up to {MAX_UPLOAD_BYTES // 2**20} MB", key=f"{prefix}_upload",
                              max_upload_size=MAX_UPLOAD_BYTES // 2**20)
        if up is None:
            return None, None, None
        img, err, digest = load_upload(up.getvalue(), up.name)
        return (None, None, err) if img is None else (img, f"upload:{digest}", None)
    src, err = current_dataset()
    if err:
        return None, None, err
    items = list_test_images(src)
    if not items:
        return None, None, f"the dataset {src.label} has no test images"
    i = st.selectbox(f"Test image ({len(items)} in {src.label})", range(len(items)),
                     format_func=lambda k: f"{items[k][0]}  (true: {items[k][1]})", key=f"{prefix}_pick")
    img, err = _test_image(str(src.root), int(i), src)
    return img, f"test:{src.root}:{i}", err


IMAGE_SOURCES = ["Upload a radiograph", "Pick from the test split"]
HANDED_OVER = "From Compare"
GRID_COLS = 4


def choose_image(prefix: str, handoff: dict | None = None):
    """The image radio of Compare and Explain: an image handed over by another page (``handoff``: image, key),
    an upload or a test-split pick -> (ImageInput | None, cache key | None, one-line error | None)."""
    options = ([HANDED_OVER] if handoff else []) + IMAGE_SOURCES
    how = st.radio("Image", options, horizontal=True, key=f"{prefix}_how", label_visibility="collapsed")
    if how == HANDED_OVER:
        return handoff["image"], handoff["key"], None
    return upload_or_test_image(prefix, how == IMAGE_SOURCES[0])


def run_labels(runs: list[Run]):
    """(runs by id, a format_func for run pickers): "ResNet-18 s0 — 90.9 %", with the id's tail where two runs
    share a label."""
    labels = [r.label for r in runs]
    by_id = {r.id: r for r in runs}

    def fmt(rid: str) -> str:
        r = by_id[rid]
        acc = f"{100 * r.accuracy:.1f} %" if r.evaluation else r.status
        return f"{r.label} — {acc}" + (f" · {rid[-4:]}" if labels.count(r.label) > 1 else "")

    return by_id, fmt


def session_cached(store_key: str, key, compute, limit: int):
    """``compute()`` once per ``key``, kept in this session under ``store_key``; the store is emptied when it
    holds more than ``limit`` entries (results can be large: images, CAMs)."""
    store = st.session_state.setdefault(store_key, {})
    if key not in store:
        if len(store) > limit:
            store.clear()
        store[key] = compute()
    return store[key]


def grid(items: list, draw, cols: int = GRID_COLS) -> None:
    """``draw(item)`` for every item, in rows of ``cols`` columns."""
    for start in range(0, len(items), cols):
        for col, item in zip(st.columns(cols), items[start:start + cols]):
            with col:
                draw(item)


def dataset_picker(where, df_all, key: str, help: str | None = None) -> str:
    """Choose which dataset's runs to show (runs on different datasets are never ranked together); ``where``
    is st, st.sidebar or a column. Defaults to the dataset with the most runs."""
    from cxrviz.report import dataset_counts, default_dataset

    counts = dataset_counts(df_all)
    datasets = list(counts)
    return where.selectbox("Dataset", datasets, index=datasets.index(default_dataset(df_all)), key=key, help=help,
                           format_func=lambda d: f"{d} ({counts[d]} run{'s' if counts[d] != 1 else ''})")
