"""External validation: score stored runs on a folder from other sources, probe for shortcuts, calibration."""

import pandas as pd
import streamlit as st

from cxrviz.calibration import run_test_calibration
from cxrviz.errors import one_line
from cxrviz.external import (
    ExternalError,
    folder_classes,
    open_external,
    score_runs,
    table_rows,
)
from cxrviz.external_records import latest_records
from cxrviz.plots import external as plots
from cxrviz.predict import best_runs
from cxrviz.probes import probe_run
from cxrviz.probes import table_rows as probe_rows
from cxrviz.runs import read_record
from pages.common import model_cache, release_deleted, stored_runs

st.title("External validation")
st.caption("Does a model's test accuracy survive on radiographs from other sources? Point to a folder with one "
           "sub-folder per class (or a `test/` folder with them), map its class names to the runs' classes, and "
           "score the runs. Images are decoded through the same decode-once cache as training.")

runs, _problems = stored_runs()
release_deleted(runs)
if not runs:
    st.info("No stored runs yet: train some on the **Train** page, then score them here.")
    st.stop()
by_id = {r.id: r for r in runs}
default = [r.id for r in best_runs(runs)] or [runs[0].id]
ids = st.multiselect("Runs (default: the best run of each architecture)", list(by_id), default=default,
                     format_func=lambda i: f"{by_id[i].label} · {i[-4:]}", key="ext_runs")
selected = [by_id[i] for i in ids if i in by_id]

c1, c2 = st.columns([3, 2])
folder = c1.text_input("External folder", key="ext_folder", placeholder="/path/to/external (Covid/, Normal/, ...)")
mapping = c2.text_input("Class map (folder=class, comma-separated)", key="ext_map",
                        placeholder="COVID-19=Covid,No finding=Normal",
                        help="Folder names that match a run class (ignoring case) need no entry.")
if not folder.strip():
    st.info("Enter an external folder to score the selected runs on it.")
    st.stop()
if not selected:
    st.warning("Select at least one run.")
    st.stop()
try:
    ext = open_external(folder, selected[0].classes, mapping)
except (ExternalError, OSError, ValueError) as e:
    names = []
    try:
        names = folder_classes(folder)
    except (ExternalError, OSError):
        pass
    st.error(one_line(e))
    if names:
        st.caption("Class folders found: " + ", ".join(f"`{n}`" for n in names))
    st.stop()
st.caption(f"{len(ext.files)} images in `{ext.root}` · classes " +
           ", ".join(f"{k} → **{v}**" for k, v in ext.mapping.items()) +
           (f" · sources: {', '.join(sorted(set(ext.sources.values())))}" if ext.sources else "") +
           f" · fingerprint `{ext.fingerprint}`")

if st.button("Score the selected runs", type="primary", key="ext_score"):
    bar = st.progress(0.0, text="Scoring...")

    def progress(done: int, total: int, what: str) -> None:
        bar.progress(done / max(1, total), text=f"{done} of {total} runs" + ("" if what == "done" else f" · {what}"))

    try:
        _records, failed = score_runs(selected, folder, mapping, model_loader=model_cache().get, progress=progress)
    except ExternalError as e:
        st.error(one_line(e))
        st.stop()
    for r, why in failed:
        st.error(f"{r.label}: {why}")

records = latest_records(selected, ext.fingerprint)
if not records:
    st.info("Not scored on this folder yet: press **Score the selected runs**.")
    st.stop()

# ---------------------------------------------------------------- table and charts
st.subheader("Internal vs external")
df = pd.DataFrame(table_rows(records))
pct = "%.1f %%"
cfg = {c: st.column_config.NumberColumn(c, format=pct) for c in df.columns
       if c.endswith(" acc") or c.startswith("recall ") or c in ("drop (points)", "majority baseline")}
cfg["ECE"] = st.column_config.NumberColumn("ECE", format="%.3f", help="expected calibration error (external)")
st.dataframe(df, hide_index=True, column_config=cfg, key="ext_table")
st.caption("Internal: the run's own test split. Intervals: Wilson 95 % for accuracy; balanced accuracy (mean recall "
           "over the classes present): Jeffreys per class, combined. Majority baseline: always naming the "
           "folder's biggest class.")
st.download_button("⬇️ CSV", df.to_csv(index=False), file_name="cxrviz-external.csv", mime="text/csv",
                   key="ext_csv", on_click="ignore")
left, right = st.columns(2)
left.plotly_chart(plots.internal_vs_external(records), key="ext_fig_acc")
right.plotly_chart(plots.predicted_distribution(records), key="ext_fig_pred")
with st.expander("Confusion matrices and per-source accuracy"):
    for rec in records:
        e = rec["external"]
        st.markdown(f"**{rec['label']}** (rows: external classes, columns: the run's classes)")
        st.dataframe(pd.DataFrame(e["confusion"], index=e["confusion_rows"], columns=e["confusion_cols"]),
                     key=f"ext_cm_{rec['run']}")
        if e.get("per_source"):
            st.dataframe(pd.DataFrame([{"source": s, "n": v["n"], "accuracy %": 100 * v["accuracy"],
                                        "95 % CI": f"{100 * v['ci_low']:.1f}–{100 * v['ci_high']:.1f}"}
                                       for s, v in e["per_source"].items()]), hide_index=True,
                         key=f"ext_src_{rec['run']}")

# ---------------------------------------------------------------- calibration
st.subheader("Calibration")
where = st.radio("Split", ["external", "test split"], horizontal=True, key="ext_cal_split")
cals = [(r["display"], r["arch"], r["external"]["calibration"]) for r in records] if where == "external" else \
    [(r.meta["display"], r.arch, run_test_calibration(r)) for r in selected]
st.plotly_chart(plots.reliability(cals), key="ext_fig_rel")
st.caption("Points on the diagonal: the confidence can be taken at its word. Below it: over-confident. ECE: the "
           "image-weighted mean gap (percentage points).")

# ---------------------------------------------------------------- probes
st.subheader("Shortcut probes")
st.caption("Accuracy with the lung fields hidden (only the border left) and with everything but the lungs hidden, "
           "against the majority baseline; share of Grad-CAM energy inside the lung fields. The lung fields are a "
           "fixed template fitted to 275 adult lung masks (`python -m cxrviz lungs`).")
on = st.radio("Probe on", ["external folder", "test split"], horizontal=True, key="ext_probe_on")
key = f"probes-{ext.fingerprint}" if on == "external folder" else "probes-test"
cam = st.checkbox("Grad-CAM energy (slower)", value=True, key="ext_probe_cam")
if st.button("Run the probes", key="ext_probe"):
    bar = st.progress(0.0, text="Probing...")
    for i, r in enumerate(selected):
        bar.progress(i / len(selected), text=f"{r.label} ({i + 1} of {len(selected)})")
        try:
            probe_run(r, folder if on == "external folder" else None, mapping, model_loader=model_cache().get, cam=cam)
        except Exception as e:  # one run's failure (missing dataset, bad weights) must not stop the others
            st.error(f"{r.label}: {one_line(e)}")
    bar.progress(1.0, text="done")
probes = [p for p in (read_record(r, key) for r in selected) if p]
if probes:
    st.dataframe(pd.DataFrame(probe_rows(probes)), hide_index=True, key="ext_probe_table")
    st.plotly_chart(plots.probes_chart(probes), key="ext_fig_probes")
    for p in probes:
        st.markdown(f"**{p['label']}** on {p['data']}:")
        for line in p["reading"]:
            (st.warning if line.startswith("⚠️") else st.markdown)(line)
else:
    st.caption("No probe results for these runs here yet.")
