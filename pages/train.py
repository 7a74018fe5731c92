"""Train: pick architectures and settings, see the run-time estimate, launch, and watch the jobs live.

Jobs live in the process-wide registry (pages.common.job_registry), never in session state: a reload, a
second tab or another page shows the same jobs. The live part is one fragment that reruns every second
while anything is queued or running, and not at all when idle.

The page is the short script at the bottom over named parts: quick demo, architecture picker, settings form,
estimate panel, launch button, jobs toolbar, job card, live view, finished jobs (about 425 lines: the parts
share the registry and the session-state keys, and splitting them over modules would scatter one page).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace

import pandas as pd
import streamlit as st

from cxrviz.data.augment import AUGMENT_LEVELS
from cxrviz.errors import CxrvizError
from cxrviz.estimate import cancel_probes, estimate_job, long_run_warning, probes_pending, split_sizes
from cxrviz.format import format_duration, format_gflops, format_params
from cxrviz.jobs import CANCELLED, CLUSTER, DONE, FAILED, QUEUED, RUNNING, STOPPED
from cxrviz.launch import QUICK_DEMO, parse_seeds, quick_demo_config
from cxrviz.models import FAMILIES, get_spec, model_table
from cxrviz.plots import training
from cxrviz.precision import PRECISIONS
from cxrviz.train import OPTIMIZERS, TrainConfig
from pages.common import current_dataset, data_path, job_registry

REFRESH_S = 1.0  # live view refresh while anything runs
DEFAULT_ARCH = "resnet18"  # ticked on a fresh page
INTENSITY = {True: "per image", False: "training set's mean/sd"}  # the standardize setting, as the page names it
MAX_FINISHED_CARDS = 12  # older finished jobs are listed in a table
MAX_ACTIVE_CARDS = 8  # running and first queued jobs get a card; the rest of the queue is one line
DOUBLE_CLICK_S = 3.0  # the same launch twice within this many seconds is one launch
STATUS_ICON = {QUEUED: "⏳", RUNNING: "🔄", DONE: "✅", STOPPED: "⏹️", FAILED: "❌", CANCELLED: "🚫"}



def _now() -> float:
    """The double-click window's clock: time.monotonic, or a clock a test puts in session_state["train_clock"]."""
    return st.session_state.get("train_clock", time.monotonic)()


def _submit(configs: list[TrainConfig], what: str) -> None:
    """Queue jobs once per click: a rerun or an interrupted rerun reuses the same request id (the registry
    then returns the earlier jobs), and the same launch again within a few seconds counts as one click."""
    sig = json.dumps([c.to_dict() for c in configs], sort_keys=True, default=str)
    last = st.session_state.get("train_last_launch")
    if last and last[0] == sig and _now() - last[1] < DOUBLE_CLICK_S:
        st.toast("Already queued (double click ignored).")
        return
    rid = st.session_state.setdefault("train_request_id", uuid.uuid4().hex)
    cancel_probes()  # a model being timed now would time the training instead, and slow it
    try:
        ids = reg.submit(configs, request_id=rid)
    except CxrvizError as e:
        st.error(str(e))
        return
    st.session_state["train_request_id"] = uuid.uuid4().hex
    st.session_state["train_last_launch"] = (sig, _now())
    if len(ids) > 1:
        st.session_state["train_overlay"] = ids
    # redraw at once: the page above this button (estimate panel, live view timer) was drawn before the job
    # existed; the toast is shown by the redraw
    st.session_state["train_flash"] = f"Queued {len(ids)} {what} job(s)."
    st.rerun()


def _device_choice(col) -> str:
    """The device picker (every device of the machine; auto = the least loaded) and, with CXRVIZ_RAY_ADDRESS
    set, "run on the cluster"."""
    devices = list(dict.fromkeys(["auto", *reg.devices, "cpu"]))
    device = col.selectbox("Device", devices, key="t_device",
                           help="auto: each job goes to the device with the least queued work. Each device runs "
                                "its own queue; see Devices below for how many jobs it runs at a time.")
    if reg.cluster is not None and col.toggle("Run on the cluster", key="t_cluster",
                                              help=f"Each job runs as a Ray task on {reg.cluster.where}; its run "
                                                   "is stored here like any other."):
        return CLUSTER
    return device


def _estimated(cfg: TrainConfig) -> TrainConfig:
    """What the estimate times: a cluster job as if it ran here (the cluster's nodes are not probed)."""
    return replace(cfg, device="auto") if cfg.device == CLUSTER else cfg


def _device_panel() -> None:
    """Per-device queues (running, queued, queued work) and how many jobs a device runs at a time."""
    rows = reg.device_queues()
    with st.expander(f"Devices: {', '.join(r['device'] for r in rows)}", expanded=reg.busy() and len(rows) > 1):
        choices = [1, 2, 3, 4, 6, 8, "auto"]
        now = reg.jobs_per_device if reg.jobs_per_device in choices else 1
        st.selectbox("Jobs at a time per device", choices, index=choices.index(now), key="t_jobs_per_device",
                     on_change=lambda: reg.set_jobs_per_device(st.session_state["t_jobs_per_device"]),
                     help="More than one lets small models share a large GPU. auto: from the GPU's free memory and "
                          "a measured training step of the first job (1 on the CPU). Runs sharing a device are "
                          "not bit-reproducible (dropout draws from one shared generator).")
        st.dataframe(pd.DataFrame([{**r, "work": f"{r['work']:.1f}"} for r in rows]), hide_index=True,
                     column_config={"work": st.column_config.TextColumn(
                         "queued work", help="epochs × forward GFLOPs per image, still to do")})


# ------------------------------------------------------------------------------------------ quick demo
def quick_demo(src, data_err: str | None) -> None:
    """The one-click demo, or where to choose a dataset when the chosen one is unusable."""
    if src is None:
        st.error(f"Dataset: {data_err}")
        st.page_link("pages/overview.py", label="Choose a dataset on Overview", icon="🏠")
        return
    with st.container(border=True):
        c1, c2 = st.columns([1, 4], vertical_alignment="center")
        demo = get_spec(QUICK_DEMO["arch"]).display
        if c1.button("⚡ Quick demo", type="primary", key="quick_demo", width="stretch"):
            _submit([quick_demo_config(data_path())], "quick demo")
        where = "the built-in **synthetic** set" if src.synthetic else f"**{src.name}**"
        c2.markdown(f"**New here?** One click trains {demo} at {QUICK_DEMO['img_size']} px for "
                    f"{QUICK_DEMO['epochs']} epochs on {where} and shows its curves below as it learns "
                    f"(well under a minute on two CPU cores). Or choose your own settings below.")


# ------------------------------------------------------------------------------------------ settings
def architecture_picker() -> list[str]:
    """One checkbox per registered architecture, grouped by family, with its size and cost at the chosen px."""
    size_now = st.session_state.get("t_img_size") or get_spec(DEFAULT_ARCH).recipe.img_size
    catalogue = model_table(int(size_now))
    st.markdown(f"**Architectures** (parameters and forward GFLOPs per image at {int(size_now)} px)")
    cols = st.columns([1, 1, 2, 1, 2])
    for fam, col in zip(FAMILIES, cols):
        col.markdown(f"*{fam}*")
        for row in (r for r in catalogue if r["family"] == fam):
            key = f"t_arch_{row['name']}"
            col.checkbox(row["display"], value=row["name"] == DEFAULT_ARCH, key=key,
                         help=f"{get_spec(row['name']).paper}. Recipe: {row['optimizer']}, lr {row['lr']:g}, "
                              f"batch {row['batch_size']}, {row['img_size']} px, {row['epochs']} epochs.")
            col.caption(f"{row['depth']} layers · {format_params(row['params'])} · "
                        f"{format_gflops(row['gflops'])} GFLOPs")
    return [r["name"] for r in catalogue if st.session_state.get(f"t_arch_{r['name']}")]


def settings_form(chosen: list[str]) -> tuple[list[TrainConfig], list[TrainConfig], list[str]]:
    """The settings (empty = each architecture's recipe) -> (configs, resolved configs, one-line problems)."""
    specs = [get_spec(a) for a in chosen]

    def _recipe(field: str, fmt=str) -> str:
        vals = {fmt(getattr(s.recipe, field)) for s in specs}
        if not vals:
            return "recipe"
        if len(vals) == 1:
            return f"recipe: {vals.pop()}"
        return "recipe: " + ", ".join(f"{fmt(getattr(s.recipe, field))} ({s.display})" for s in specs)

    a, b, c, d = st.columns(4)
    img_size = a.number_input("Image size (px)", min_value=16, max_value=1024, value=None, step=16, key="t_img_size",
                              placeholder=_recipe("img_size"), help="Square side in pixels. Empty = each recipe.")
    epochs = b.number_input("Epochs", min_value=1, max_value=1000, value=None, step=1, key="t_epochs",
                            placeholder=_recipe("epochs"))
    batch = c.number_input("Batch size", min_value=2, max_value=1024, value=None, step=8, key="t_batch",
                           placeholder=_recipe("batch_size"))
    lr = d.number_input("Learning rate", min_value=1e-6, max_value=10.0, value=None, step=1e-4, format="%g",
                        key="t_lr", placeholder=_recipe("lr", lambda v: f"{v:g}"))
    e, f, g, h = st.columns(4)
    opt_choice = e.selectbox("Optimiser", ["recipe", *OPTIMIZERS], key="t_opt",
                             format_func=lambda o: _recipe("optimizer") if o == "recipe" else o)
    aug_choice = f.selectbox("Augmentation", ["recipe", *AUGMENT_LEVELS], key="t_aug",
                             format_func=lambda o: _recipe("augment") if o == "recipe" else o,
                             help="recipe: each architecture's default (none for the deck's four models, light "
                                  "for LeNet-5); standard: random resized crop, ±8° rotation, brightness/contrast "
                                  "jitter; light: milder; none: the images as they are. No horizontal flip (the "
                                  "heart is on the left).")
    seeds_text = g.text_input("Seeds", value="0", key="t_seeds", help="One or several: 0  ·  0, 1, 2  ·  0-4")
    device = _device_choice(h)
    i, j, k, m, n = st.columns(5)
    precision = i.selectbox("Precision", list(PRECISIONS), key="t_precision",
                            help="auto: bf16 autocast + channels-last where the device is faster with it (a GPU; a "
                                 "CPU with AVX512-BF16/AMX after a short probe), else fp32. The run records which.")
    val_fraction = j.number_input("Validation fraction", min_value=0.0, max_value=0.5, value=0.15, step=0.05,
                                  key="t_val_fraction", help="Training images held out (stratified by class and "
                                  "source, fixed split) for the live curves; the test split is scored once, at the "
                                  "end. 0 = the old way: test every epoch.")
    select = k.selectbox("Test the weights of", ["final", "best_val"], key="t_select",
                         format_func=lambda v: {"final": "the final epoch",
                                                "best_val": "the best epoch on validation"}[v])
    prep = m.multiselect("Preprocessing", ["lung_crop", "clahe"], key="t_preprocess",
                         format_func=lambda v: {"lung_crop": "lung crop", "clahe": "CLAHE"}[v],
                         help="Lung crop: each image cropped to the lung fields (a fixed template, plus a margin) "
                              "before the model sees it; CLAHE: adaptive histogram equalisation. Recorded with the "
                              "run and applied again at prediction time.")
    intensity = n.selectbox("Intensity scaling", ["recipe", "per_image", "dataset"], key="t_intensity",
                            format_func=lambda o: (_recipe("standardize", lambda v: INTENSITY[v]) if o == "recipe" else
                                                   INTENSITY[o == "per_image"]),
                            help="per image: each image to zero mean and unit sd (VGG-19's recipe, chosen on "
                                 "validation); training set's mean/sd: one shift and scale for every image (the "
                                 "other recipes). Recorded with the run and applied again at prediction time.")

    problems: list[str] = []
    seeds: list[int] = []
    try:
        seeds = parse_seeds(seeds_text)
    except CxrvizError as err:
        problems.append(str(err))
    if not chosen:
        problems.append("choose at least one architecture")
    configs: list[TrainConfig] = []
    for arch in chosen:
        for seed in seeds:
            configs.append(TrainConfig(arch=arch, data=data_path() or None, img_size=img_size, epochs=epochs,
                                       batch_size=batch, lr=lr,
                                       optimizer=None if opt_choice == "recipe" else opt_choice,
                                       augment=None if aug_choice == "recipe" else aug_choice, seed=seed,
                                       device=device, precision=precision, val_fraction=val_fraction,
                                       select=select, clahe="clahe" in prep, lung_crop="lung_crop" in prep,
                                       standardize=None if intensity == "recipe" else intensity == "per_image"))
    resolved: list[TrainConfig] = []
    for cfg in configs:
        try:
            resolved.append(cfg.resolved())
        except CxrvizError as err:
            if str(err) not in problems:
                problems.append(str(err))
    return configs, resolved, problems


def estimate_panel(src, resolved: list[TrainConfig]) -> None:
    """The plan as a table with the estimated time of each job, refreshed until every model is timed."""
    n_train, n_test = split_sizes(src)
    # timing a model takes a few seconds: it runs in the background (never while training runs, which
    # it would slow) and this panel refreshes itself until every figure is measured
    probe_mode = "off" if reg.busy() else "background"
    first = [estimate_job(_estimated(cfg), n_train, n_test, probe=probe_mode) for cfg in resolved]
    # no refresh timer while jobs run: the timing is cancelled at launch and only resumes once the device
    # is idle (the live view is then the page's only self-refreshing part)
    pending = probes_pending() and not all(e.measured for e in first) and not reg.busy()

    @st.fragment(run_every=0.5 if pending else None)
    def panel() -> None:
        ests = [estimate_job(_estimated(cfg), n_train, n_test, probe="off") for cfg in resolved]
        still = probes_pending() and not all(e.measured for e in ests)
        if pending and not still and not reg.busy():
            st.rerun()  # all measured: redraw once without the refresh timer
        plan = pd.DataFrame([{
            "model": get_spec(cfg.arch).display, "seed": cfg.seed, "size (px)": cfg.img_size,
            "epochs": cfg.epochs, "batch": cfg.batch_size, "optimiser": cfg.optimizer, "lr": f"{cfg.lr:g}",
            "augment": cfg.augment, "intensity": INTENSITY[bool(cfg.standardize)],
            "GFLOPs": format_gflops(est.gflops),
            "per epoch": format_duration(est.epoch_seconds),
            "estimate": format_duration(est.seconds) + ("" if est.measured else " (rough)"),
        } for cfg, est in zip(resolved, ests)])
        st.dataframe(plan, hide_index=True, width="stretch")
        total = sum(x.seconds for x in ests)
        how = ("from timed training steps of each model on this device, scaled to the chosen size and batch"
               if all(x.measured for x in ests) else
               "rough, from FLOPs: " + ("timing the models on this device…" if still else
                                        "models are timed on this device when no training runs"))
        st.caption(f"{len(resolved)} job(s) on {n_train} training and {n_test} test images. Estimated time on "
                   f"this device ({ests[0].device}): **{format_duration(total)}** in all (jobs on one device "
                   f"run one after another; {how}).")
        warning = long_run_warning(ests)
        if warning:
            st.warning(warning, icon="⚠️")

    with st.container():  # alone in its parent: see the note at live_view()
        panel()


def launch_button(configs: list[TrainConfig], resolved: list[TrainConfig], problems: list[str]) -> None:
    """The settings' problems, one line each, and the launch button (disabled while there are any)."""
    for p in problems:
        st.error(p)
    label = f"🚀 Launch {len(resolved)} job{'s' if len(resolved) != 1 else ''}" if resolved else "🚀 Launch"
    if st.button(label, key="t_launch", disabled=bool(problems) or not resolved):
        _submit(configs, "training")


# ------------------------------------------------------------------------------------------ live view
def jobs_toolbar(snaps, by_id: dict) -> None:
    """Overlay picker, Stop all and Clear finished, above the job cards."""
    busy = any(s.active for s in snaps)
    t1, t2, t3 = st.columns([4, 1, 1], vertical_alignment="bottom")
    options = [s.id for s in snaps if s.history or s.active]
    if "train_overlay" in st.session_state:
        st.session_state["train_overlay"] = [i for i in st.session_state["train_overlay"] if i in options]
    t1.multiselect("Overlay runs in one chart", options, key="train_overlay", format_func=lambda i: by_id[i].label,
                   placeholder="choose two or more jobs to compare their curves")
    # on_click callbacks (here and on the cards) act before the rerun they trigger, which then draws the new
    # state: no st.rerun() of their own
    t2.button("⏹ Stop all", disabled=not busy, width="stretch", on_click=reg.stop_all, kwargs={"keep": True})
    t3.button("🧹 Clear finished", disabled=all(s.active for s in snaps), width="stretch",
              help="Removes finished jobs from this list; their stored runs stay on the leaderboard.",
              on_click=reg.clear_finished)


def _stop(job_id: str, keep_key: str | None = None) -> None:
    """Stop (keeping the partial run if the card's toggle says so) or cancel one job."""
    try:
        reg.stop(job_id, keep=st.session_state.get(keep_key, True) if keep_key else False)
    except KeyError:  # removed in another tab a moment ago
        pass


def _cancel(job_ids: list[str]) -> None:
    for job_id in job_ids:
        _stop(job_id)


def _figure(s) -> object:
    """Build a job's chart once per snapshot version (unchanged cards reuse their figure)."""
    memo = st.session_state.setdefault("_train_figs", {})
    hit = memo.get(s.id)
    if hit is None or hit[0] != s.version:
        hit = memo[s.id] = (s.version, training.history_figure(training.series_from_snapshot(s)))
    return hit[1]


def job_card(s, ahead: int = 0) -> None:
    """One job: status, settings, progress with ETA, its controls, its outcome and its live chart."""
    with st.container(border=True, key=f"card_{s.id}"):
        head, ctrl = st.columns([5, 2], vertical_alignment="top")
        cfg = s.config
        head.markdown(f"{STATUS_ICON.get(s.status, '')} **{s.label}** · `{s.status}`"
                      + (f" · {s.message}" if s.active else ""))
        head.caption(f"{cfg['optimizer']} lr {cfg['lr']:g} · batch {cfg['batch_size']} · augment {cfg['augment']} · "
                     f"{cfg.get('data') or 'synthetic data'} · on **{s.device or cfg['device']}** · id {s.id}")
        if s.status == RUNNING:
            eta = f" · ETA {format_duration(s.eta)}" if s.eta is not None and s.fraction > 0 else ""
            st.progress(min(1.0, max(0.0, s.fraction)),
                        text=f"epoch {s.epoch}/{s.epochs} · {100 * s.fraction:.0f} %{eta} · "
                             f"elapsed {format_duration(s.elapsed)}")
            ctrl.toggle("keep partial run", value=True, key=f"keep_{s.id}",
                        help="On: a stopped run is stored with its epochs so far (marked stopped). "
                             "Off: it is discarded.")
            ctrl.button("⏹ Stop", key=f"stop_{s.id}", disabled=s.stop_requested, width="stretch",
                        on_click=_stop, args=(s.id, f"keep_{s.id}"))
        elif s.status == QUEUED:
            st.progress(0.0, text=f"queued: {ahead} job(s) ahead")
            ctrl.button("✖ Cancel", key=f"cancel_{s.id}", width="stretch", on_click=_stop, args=(s.id,))
        else:
            ctrl.button("Dismiss", key=f"dismiss_{s.id}", width="stretch", on_click=reg.remove, args=(s.id,),
                        help="Remove this card; a stored run stays on the leaderboard.")
        if s.status == FAILED:
            st.error(f"Failed: {s.error}")
        elif s.status == DONE:
            st.success(f"{s.message} · stored as `{s.run_id}`")
            st.page_link("pages/leaderboard.py", label="See it on the leaderboard", icon="🏆")
        elif s.status == STOPPED:
            st.warning(f"Stopped after {len(s.history)} epoch(s): " + (f"partial run kept as `{s.run_id}` (marked "
                       "stopped)." if s.run_id else "discarded, nothing stored."))
        if s.history or s.batch_losses:
            if s.history:
                head.caption(f"last epoch ended {time.strftime('%H:%M:%S', time.localtime(s.history[-1]['wall']))}")
            st.plotly_chart(_figure(s), key=f"chart_{s.id}", config={"displayModeBar": False})


# Each self-refreshing fragment sits alone in a container of its own (here and around estimate_panel). When a
# fragment's timer fires just as a full run ends, Streamlit drops that full run's unsent deltas for the fragment
# (the fragment run redraws them); the browser then prunes the fragment's old node as stale, and its later
# siblings shift up one place, so the next fragment run lands one slot off and the page shows a job card twice
# (seen in about 1 launch in 6 in a browser before this). Alone in its parent, the pruned node shifts nothing.
def live_view(busy: bool, layout_sig: tuple) -> None:
    """The self-refreshing part: the overlay chart and the cards of the active jobs (every second while busy)."""

    @st.fragment(run_every=REFRESH_S if busy else None)
    def jobs() -> None:
        if reg.layout() != layout_sig:
            st.rerun()  # a job appeared, ended or was removed: redraw the page (and stop refreshing when idle)
        active = reg.snapshots(active_only=True)
        chosen = []
        for jid in st.session_state.get("train_overlay", []):
            try:
                chosen.append(reg.get(jid))
            except KeyError:  # removed in another tab a moment ago
                pass
        if len(chosen) >= 2:
            fig = training.history_figure([training.series_from_snapshot(s) for s in chosen], height=340,
                                          title="Overlay")
            st.plotly_chart(fig, key="overlay_chart", config={"displayModeBar": False})
        elif len(chosen) == 1:
            st.caption("Choose at least two jobs to overlay.")
        _device_panel()
        for i, s in enumerate(active[:MAX_ACTIVE_CARDS]):
            job_card(s, ahead=i)
        rest = active[MAX_ACTIVE_CARDS:]
        if rest:
            st.caption(f"{len(rest)} more job(s) queued: " + ", ".join(s.label for s in rest[:50])
                       + (" …" if len(rest) > 50 else ""))
            st.button(f"✖ Cancel these {len(rest)} queued job(s)", key="cancel_rest",
                      on_click=_cancel, args=([s.id for s in rest],))

    with st.container():
        jobs()


def finished_jobs(snaps, by_id: dict) -> None:
    """Cards of the newest finished jobs, a table of the older ones; forget the charts of removed jobs."""
    finished = sorted((s for s in snaps if not s.active), key=lambda s: s.finished or s.created, reverse=True)
    for s in finished[:MAX_FINISHED_CARDS]:
        job_card(s)
    if len(finished) > MAX_FINISHED_CARDS:
        with st.expander(f"{len(finished) - MAX_FINISHED_CARDS} older finished job(s)"):
            st.dataframe(pd.DataFrame([{"job": s.label, "status": s.status, "message": s.message, "run": s.run_id}
                                       for s in finished[MAX_FINISHED_CARDS:]]), hide_index=True)
    memo = st.session_state.get("_train_figs")
    if memo:
        for jid in [j for j in memo if j not in by_id]:
            memo.pop(jid, None)


# ------------------------------------------------------------------------------------------ page
reg = job_registry()
st.title("Train")
if "train_flash" in st.session_state:
    st.toast(st.session_state.pop("train_flash"))
src, data_err = current_dataset()
quick_demo(src, data_err)
if src is not None:
    st.subheader("New training run")
    configs, resolved, problems = settings_form(architecture_picker())
    if not problems and resolved:
        estimate_panel(src, resolved)
    launch_button(configs, resolved, problems)

st.subheader("Jobs")
snaps = reg.snapshots()
by_id = {s.id: s for s in snaps}
if not snaps:
    st.info("No training jobs yet: click **Quick demo**, or choose architectures above and launch. Jobs keep "
            "running when you reload the page, switch pages or close the tab.")
else:
    jobs_toolbar(snaps, by_id)
live_view(any(s.active for s in snaps), tuple((s.id, s.active) for s in snaps))
finished_jobs(snaps, by_id)
