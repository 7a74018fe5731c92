"""Leaderboard: every stored run (or seed group) with uncertainty, charts, paired tests, exports, deletion."""
from functools import partial

import pandas as pd
import streamlit as st

from cxrviz.errors import CxrvizError
from cxrviz.external_records import latest_records, side_by_side
from cxrviz.plots import leaderboard, training
from cxrviz.report import (
    EXPORT_EXT,
    EXPORT_MIME,
    HIGHER_BETTER,
    LOWER_BETTER,
    SYNTHETIC,
    dataset_counts,
    display_groups,
    display_table,
    export,
    filter_frame,
    leaderboard_frame,
    runs_frame,
    select_runs,
    significance,
)
from cxrviz.runs import RunError
from pages.common import dataset_picker, remove_run, stored_runs

st.title("Leaderboard")
st.caption("Test accuracy with its Wilson 95 % interval: on a small test set, most gaps between models are "
           "within the noise. Paired McNemar tests below say which differences the data support.")

runs, problems = stored_runs()
if problems:
    with st.expander(f"⚠️ {len(problems)} unreadable run folder(s) skipped"):
        for name, why in problems:
            st.write(f"`{name}`: {why}")
if not runs:
    st.info("No stored runs yet. Train some on the **Train** page, or `python -m cxrviz train --arch resnet18 "
            "--seeds 0 1 2`.")
    st.stop()

df_all = runs_frame(runs)

# ---------------------------------------------------------------- filters
counts = dataset_counts(df_all)
c1, c2, c3, c4, c5 = st.columns([2, 1.3, 2, 1.3, 1.3])
dataset = dataset_picker(c1, df_all, "lb_dataset", help="Runs on different datasets are never ranked together.")
view = c2.radio("View", ["Runs", "Seed groups"], key="lb_view", horizontal=True,
                help="Seed groups: runs of one configuration with different seeds, as mean ± sd.")
df_ds = filter_frame(df_all, dataset=dataset)
fams = sorted(df_ds["family"].dropna().unique())
families = c3.multiselect("Family", fams, default=fams, key=f"lb_family_{dataset}")
sizes = sorted(int(s) for s in df_ds["img_size"].unique())
img_sizes = c4.multiselect("Image size", sizes, default=sizes, key=f"lb_img_{dataset}")
stats = sorted(df_ds["status"].unique())
statuses = c5.multiselect("Status", stats, default=stats, key=f"lb_status_{dataset}",
                          help="'stopped' runs were stopped early: evaluated on their last full epoch.")
df = filter_frame(df_ds, families=families, img_sizes=img_sizes, statuses=statuses)
sel_runs = select_runs(runs, df)
if dataset == SYNTHETIC:
    st.warning("These runs used the built-in **synthetic** phantoms, not chest X-rays.")
if len(counts) > 1:
    st.caption("Other datasets: " + ", ".join(f"{d} ({n})" for d, n in counts.items() if d != dataset))
if df.empty:
    st.info("No runs match these filters.")
    st.stop()

# ---------------------------------------------------------------- the table
groups = view == "Seed groups"
table = leaderboard_frame(sel_runs, groups=groups)
n_stopped = int((df["status"] == "stopped").sum())
pct = "%.1f %%"
cfg = {
    "test acc": st.column_config.ProgressColumn("test acc", format=pct, min_value=0, max_value=100,
                                                help="Test accuracy" + (" (mean over seeds)" if groups else "")),
    "± sd": st.column_config.NumberColumn("± sd", format="%.1f", help="Sample standard deviation over seeds (points)"),
    "spread": st.column_config.TextColumn("spread", help="min–max accuracy over seeds (%)"),
    "95 % CI": st.column_config.TextColumn("95 % CI", help="Wilson 95 % interval over the test images (%)"),
    "macro-F1": st.column_config.NumberColumn("macro-F1", format="%.3f"),
    "params (M)": st.column_config.NumberColumn("params (M)", format="%.2f"),
    "GFLOPs": st.column_config.NumberColumn("GFLOPs", format="%.3f",
                                            help="G multiply-adds per image at the run's image size"),
    "train (min)": st.column_config.NumberColumn("train (min)", format="%.2f",
                                                 help="training + per-epoch evaluation wall time"),
    "ms/img": st.column_config.NumberColumn("ms/img", format="%.2f", help="inference latency per image"),
    "img": st.column_config.NumberColumn("img", format="%d px"),
    "curves on": st.column_config.TextColumn("curves on", help="The split of the per-epoch curves (and of any "
                                             "best-epoch choice): validation; or the test split for runs trained "
                                             "the old way, whose test figure is then optimistic. 'test acc' is "
                                             "always the test split, scored once at the end."),
}
for col in table.columns:
    if col.startswith("recall "):
        cfg[col] = st.column_config.NumberColumn(col, format=pct, help=f"Recall of class {col[7:]}")
hi = [c for c in HIGHER_BETTER if c in table]
lo = [c for c in LOWER_BETTER if c in table]
style = "background-color: rgba(46, 160, 67, 0.30); font-weight: bold"
styler = table.style.highlight_max(subset=hi, props=style).highlight_min(subset=lo, props=style)
st.dataframe(styler, column_config=cfg, hide_index=True, key="lb_table")
st.caption(f"{len(df)} run(s) on **{dataset}**" + (f", {n_stopped} stopped early (marked)" if n_stopped else "")
           + ". Best values highlighted. Click a column header to sort.")

ext_rows = side_by_side(latest_records(sel_runs))
if ext_rows:  # internal vs external accuracy, from the External validation page / `evaluate --data`
    st.markdown("**Internal vs external** (each run's latest external folder)")
    st.dataframe(pd.DataFrame(ext_rows), hide_index=True, key="lb_external",
                 column_config={c: st.column_config.NumberColumn(c, format="%.1f %%")
                                for c in ("internal acc", "external acc", "drop (points)", "external majority")})

# ---------------------------------------------------------------- exports
exp = display_groups(sel_runs) if groups else display_table(sel_runs)
e1, e2, e3, e4 = st.columns([1, 1, 1, 3])
stem = f"cxrviz-leaderboard-{'groups' if groups else 'runs'}"
for col, fmt, label in ((e1, "csv", "CSV"), (e2, "md", "Markdown"), (e3, "latex", "LaTeX")):
    col.download_button(f"⬇️ {label}", export(exp, fmt), file_name=f"{stem}.{EXPORT_EXT[fmt]}",
                        mime=EXPORT_MIME[fmt], key=f"lb_dl_{fmt}", on_click="ignore")
e4.caption(f"Same table from the shell: `python -m cxrviz table --format md|csv|latex"
           f"{' --groups' if groups else ''}`")

# ---------------------------------------------------------------- charts
st.subheader("Charts")
ordered = sorted(sel_runs, key=lambda r: -(r.accuracy if r.accuracy == r.accuracy else -1))
labels = {r.id: r.label + ("" if r.status != "stopped" else " (stopped)") for r in runs}
picked = st.multiselect("Runs to compare (confusion, ROC, curves, significance)", [r.id for r in ordered],
                        default=[r.id for r in ordered[:4]], format_func=lambda i: labels.get(i, i),
                        key=f"lb_pick_{dataset}")
chosen = [r for r in ordered if r.id in picked]


def png_button(fn, name: str, key: str) -> None:
    st.download_button("⬇️ PNG", data=fn, file_name=f"cxrviz-{name}.png", mime="image/png", key=key,
                       on_click="ignore")


tabs = st.tabs(["Accuracy vs time", "Per architecture", "Confusion matrices", "ROC curves", "Training curves",
                "Significance"])
with tabs[0]:
    st.plotly_chart(leaderboard.acc_vs_time(df), key="lb_fig_time")
    png_button(partial(leaderboard.acc_vs_time_png, df), "accuracy-vs-time", "lb_png_time")
with tabs[1]:
    st.plotly_chart(leaderboard.acc_per_arch(df, deck=dataset != SYNTHETIC), key="lb_fig_arch")
    st.caption("Black bar: mean accuracy with its 95 % interval over the test images; dots: individual runs "
               "(seeds); diamonds: the deck's single-run figure.")
    png_button(partial(leaderboard.acc_per_arch_png, df, dataset != SYNTHETIC), "accuracy-per-architecture",
               "lb_png_arch")
for tab, fig, png, name, key in ((tabs[2], leaderboard.confusions, leaderboard.confusions_png, "confusion-matrices",
                                  "cm"),
                                  (tabs[3], leaderboard.roc, leaderboard.roc_png, "roc-curves", "roc"),
                                  (tabs[4], training.training_curves, training.training_curves_png, "training-curves",
                                   "curves")):
    with tab:
        if chosen:
            st.plotly_chart(fig(chosen), key=f"lb_fig_{key}")
            png_button(partial(png, chosen), name, f"lb_png_{key}")
        else:
            st.info("Pick runs above.")
with tabs[5]:
    if len(chosen) < 2:
        st.info("Pick at least two runs above for pairwise tests.")
    else:
        sig = significance(chosen)
        left, right = st.columns([3, 2])
        with left:
            st.plotly_chart(leaderboard.significance_heatmap(sig), key="lb_fig_sig")
            png_button(partial(leaderboard.significance_png, sig), "mcnemar", "lb_png_sig")
        with right:
            st.markdown("**Exact McNemar tests** on the images where the two runs disagree:")
            for pr in sig["pairs"]:
                st.markdown(f"- {pr['reading']}")
            k = sum(p["comparable"] for p in sig["pairs"])
            if k > 1:
                st.caption(f"{k} tests at once: with many pairs, one p < 0.05 can be chance (Bonferroni: "
                           f"p < {0.05 / k:.3f}).")

# ---------------------------------------------------------------- delete
with st.expander("🗑️ Delete a run"):
    target = st.selectbox("Run", [r.id for r in runs], format_func=lambda i: f"{labels.get(i, i)} — {i}",
                          key="lb_del_run")
    sure = st.checkbox(f"Yes, permanently delete `{target}` (weights, history, predictions)",
                       key=f"lb_del_ok_{target}")
    if st.button("Delete run", type="primary", disabled=not sure, key="lb_del_btn"):
        run = next((r for r in runs if r.id == target), None)
        try:
            if run is None:
                raise RunError(f"run {target}: not found")
            remove_run(run)
        except (CxrvizError, OSError) as e:
            st.error(f"Could not delete: {str(e).splitlines()[0]}")
        else:
            st.session_state.pop(f"lb_del_ok_{target}", None)
            st.toast(f"Deleted {target}")
            st.rerun()
