"""The generalisation experiment as one command (``python -m cxrviz reproduce --data KAGGLE --add
Normal=OPENIST --external FOLDER``): the same models trained on the single-source set (the ``--data`` folders
alone) and on the mixed set (plus the ``--add`` class folders), each scored on its internal test split and on
an external folder (:mod:`cxrviz.external`), and probed for shortcuts there (:mod:`cxrviz.probes`), side by side.

* **Internal** accuracy is measured on the test images of the ``--data`` folders only (each stored prediction
  carries its image's source), so both arms are compared on the same Kaggle test images: the mixed set's
  extra test images (its share of the added folders) do not enter it.
* **Reuse**: a stored, finished run whose configuration is identical (every :class:`~cxrviz.train.TrainConfig`
  setting but the device, the same dataset folders, and the same per-class counts and source fingerprints) is
  used instead of training again; the table says which rows were reused. A multi-source run stored before
  predictions kept their sources is not reused (its internal accuracy could not be restricted to ``--data``).
* **Overlap**: an external image that is byte-identical (content hash) to a file of a training source, or that
  lies inside a training source's folder (or in the real folder its files link to), means a source seen in
  training; the table says so under it, with the classes and counts, because such a source makes an external
  number optimistic.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import CxrvizError

SINGLE, MIXED = "single source", "mixed"
OPTIMISTIC = "a source seen in training makes an external number optimistic"
Log = Callable[[str], None]


class ExperimentError(CxrvizError):
    """An experiment that cannot run as asked (no --data, nothing to compare, ...)."""


@dataclass
class Arm:
    name: str  # SINGLE or MIXED
    spec: str  # the dataset spec (TrainConfig.data)
    source: object  # the opened cxrviz.data.DatasetSource


@dataclass
class Plan:
    arms: list[Arm]
    configs: list[tuple[Arm, object]]  # (arm, resolved TrainConfig)
    external: str
    mapping: str | None
    internal_sources: list[str]  # source names of the --data folders (what "internal" is measured on)


def make_plan(data: list[str] | None, add: list[str] | None, external: str | None, archs: list[str],
              seeds: list[int], settings: dict, *, add_test_fraction: float = 0.2, mapping: str | None = None) -> Plan:
    """Validate everything (folders, classes, settings, the external folder) before anything is trained."""
    from .data import dataset_spec, open_dataset
    from .external import open_external
    from .train import TrainConfig

    data = [d for d in (data or []) if str(d).strip()]
    if not data:
        raise ExperimentError("--external needs --data FOLDER: the single-source dataset the models are trained on")
    if not external:
        raise ExperimentError("name the external folder the models are scored on with --external FOLDER")
    single = dataset_spec(data)
    arms = [Arm(SINGLE, single, open_dataset(single))]
    if add:
        mixed = dataset_spec(data, add, add_test_fraction)
        arms.append(Arm(MIXED, mixed, open_dataset(mixed)))
    open_external(external, arms[0].source.classes, mapping)  # folder and class errors before any training
    configs = [(arm, TrainConfig(arch=a, data=arm.spec, seed=s, **settings).resolved())
               for arm in arms for a in archs for s in seeds]
    names = sorted(set(arms[0].source.source_names("test")))
    return Plan(arms, configs, str(external), mapping, names)


# ---------------------------------------------------------------- reuse
def _folders(spec) -> tuple:
    from .data.sources import spec_parts

    folders, adds, frac, seed = spec_parts(spec)

    def res(p):
        return str(Path(os.path.expanduser(str(p))).resolve())

    return (tuple(res(p) for p in folders), tuple((c, res(p), s) for c, p, s in adds),
            frac if adds else None, seed if adds else None)


def _dataset_key(d: dict) -> tuple:
    return (d.get("counts"), tuple(s.get("fingerprint") for s in d.get("sources") or []))


def find_reusable(config, source, runs) -> object | None:
    """The newest stored, finished run with this exact configuration (device aside) on the same data."""
    from .train import TrainConfig

    skip = {"device", "data"}
    want = {f.name: getattr(config, f.name) for f in fields(TrainConfig) if f.name not in skip}
    data_key, ds_key = _folders(config.data), _dataset_key(source.describe())
    best = None
    for r in runs:
        if r.status != "done" or not r.evaluation:
            continue
        try:
            c = TrainConfig.from_dict(r.config)  # Run.config: flags an older run lacks are off
            same = ({k: getattr(c, k) for k in want} == want and _folders(c.data) == data_key
                    and _dataset_key(r.meta.get("dataset", {})) == ds_key)
        except (CxrvizError, TypeError, ValueError):
            continue
        if same and len(source.sources) > 1 and "sources" not in r.predictions:
            continue  # stored before predictions kept their sources: its internal accuracy could not be split
        if same and (best is None or r.meta.get("created", "") > best.meta.get("created", "")):
            best = r
    return best


# ---------------------------------------------------------------- overlap
def overlap(plan: Plan, cache=None) -> list[dict]:
    """External images from a training source: [{class, source, arms, identical, in_folder}] (counts)."""
    from .data import default_cache
    from .external import open_external

    cache = cache or default_cache()
    ext = open_external(plan.external, plan.arms[0].source.classes, plan.mapping, cache)
    in_single = set(plan.arms[0].source.source_names("train")) | set(plan.arms[0].source.source_names("test"))
    src = plan.arms[-1].source  # the largest training set (mixed when there is one)
    folders = ([(Path(s["path"]).resolve(), s["name"]) for s in src.sources] if src.sources
               else [(Path(src.root).resolve(), src.name)])
    by_hash: dict[str, str] = {}
    real_dirs: dict[Path, str] = {}  # where training files really lie (a folder of links points elsewhere)
    for split in ("train", "test"):
        for (p, _), name in zip(src.files.get(split, []), src.source_names(split)):
            real_dirs.setdefault(Path(p).resolve().parent, name)
            try:
                by_hash.setdefault(cache.content_hash(Path(p)), name)
            except OSError:
                continue
    tally: dict[tuple[str, str], dict] = {}
    for f, y in ext.files:
        rf = Path(f).resolve()
        folder = next((n for d, n in folders if rf.is_relative_to(d)), None) or real_dirs.get(rf.parent)
        try:
            same = by_hash.get(cache.content_hash(Path(f)))
        except OSError:
            same = None
        for name, how in ((folder, "in_folder"), (same, "identical")):
            if name is not None:
                row = tally.setdefault((ext.classes[y], name), {"class": ext.classes[y], "source": name,
                                                                "identical": 0, "in_folder": 0})
                row[how] += 1
    for row in tally.values():
        row["arms"] = "both" if row["source"] in in_single else MIXED
    return sorted(tally.values(), key=lambda r: (r["class"], r["source"]))


def overlap_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    parts = []
    for r in rows:
        how = ", ".join(x for x in (f"{r['identical']} byte-identical to its files" if r["identical"] else "",
                                    f"{r['in_folder']} inside its folder" if r["in_folder"] else "") if x)
        whose = "trained on by every run" if r["arms"] == "both" else "trained on by the mixed runs"
        parts.append(f"external {r['class']}: {max(r['identical'], r['in_folder'])} image(s) from training source "
                     f"{r['source']} ({how}; {whose})")
    return [f"warning: {OPTIMISTIC}: " + "; ".join(parts)]


# ---------------------------------------------------------------- run and table
def internal_accuracy(run, names: list[str]) -> dict:
    """Accuracy (Wilson 95 %) of the run's stored test predictions from the sources ``names``."""
    import numpy as np

    from .metrics import wilson_interval

    p = run.predictions
    y, pred = np.asarray(p.get("labels", [])), np.asarray(p.get("probs", [])).argmax(1) if p.get("probs") else []
    srcs = p.get("sources")
    keep = np.isin(np.asarray(srcs), names) if srcs else np.ones(len(y), dtype=bool)
    k, n = int((np.asarray(pred)[keep] == y[keep]).sum()), int(keep.sum())
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else math.nan, "ci_low": lo, "ci_high": hi, "n": n, "by_source": bool(srcs)}


def run_experiment(plan: Plan, train_fn, *, log: Log = print, runs=None, model_loader=None,
                   progress=None) -> dict:
    """Train (or reuse) every run of the plan, score each on the external folder, probe it there.
    ``train_fn(config) -> Run`` trains and stores one run; ``log`` gets one line per step."""
    from .external import score_run
    from .probes import probe_run
    from .runs import list_runs

    stored = list_runs()[0] if runs is None else runs
    entries = []
    total = len(plan.configs)
    for i, (arm, c) in enumerate(plan.configs, 1):
        what = f"[{i}/{total}] {c.arch} s{c.seed} on {arm.name} data ({arm.source.name})"
        run = find_reusable(c, arm.source, stored)
        reused = run is not None
        if reused:
            log(f"{what}: reusing stored run {run.id} (identical configuration)")
        else:
            log(f"{what}: training ...")
            run = train_fn(replace(c))
            log(f"{what}: stored as {run.id}")
        entries.append({"arm": arm.name, "run": run, "reused": reused})
    for i, e in enumerate(entries, 1):
        log(f"[{i}/{len(entries)}] scoring {e['run'].label} on {plan.external} and probing it there ...")
        e["external"] = score_run(e["run"], plan.external, plan.mapping, model_loader=model_loader,
                                  progress=progress)
        e["probe"] = probe_run(e["run"], plan.external, plan.mapping, model_loader=model_loader, cam=False)
        e["internal"] = internal_accuracy(e["run"], plan.internal_sources)
    return {"entries": entries, "overlap": overlap(plan)}


def _ci(d: dict, lo="ci_low", hi="ci_high") -> str:
    a, b = d.get(lo, math.nan), d.get(hi, math.nan)
    return "–" if a is None or b is None or math.isnan(a) else f"{100 * a:.1f}–{100 * b:.1f}"


def table_rows(result: dict) -> list[dict]:
    """One row per run: model, training data, internal test acc, external acc / balanced acc, recalls, flag."""
    from .probes import FLAG

    rows = []
    for e in result["entries"]:
        run, ext, i = e["run"], e["external"]["external"], e["internal"]
        rows.append({"model": run.meta.get("display", run.arch), "training data": e["arm"], "seed": run.config["seed"],
                     "internal acc": 100 * i["accuracy"], "internal CI": _ci(i),
                     "external acc": 100 * ext["accuracy"], "external CI": _ci(ext),
                     "balanced acc": 100 * ext["balanced_accuracy"],
                     "balanced CI": _ci(ext, "bal_ci_low", "bal_ci_high"),
                     **{f"recall {c}": 100 * v for c, v in ext["recall"].items()},
                     "probe": FLAG if e["probe"]["flagged"] else "no flag", "run": run.id,
                     "reused": "yes" if e["reused"] else ""})
    return rows


def settings_line(plan: Plan) -> str:
    """The recipe settings every run shares (the architecture's recipe fills the rest)."""
    c = plan.configs[0][1]
    prep = [n for n, on in (("lung crop", c.lung_crop), ("CLAHE", c.clahe), ("per-image standardisation",
                                                                             c.standardize)) if on]
    seeds = sorted({cfg.seed for _, cfg in plan.configs})

    def one(name: str, unit: str) -> str:
        vals = sorted({getattr(cfg, name) for _, cfg in plan.configs})
        return f"{vals[0]} {unit}" if len(vals) == 1 else f"{unit} per recipe"

    return (f"settings: {one('img_size', 'px')}, {one('epochs', 'epochs')}, seed(s) {', '.join(map(str, seeds))}, "
            f"validation fraction {c.val_fraction}, preprocessing: {', '.join(prep) or 'none'}")


def notes(plan: Plan, result: dict) -> list[str]:
    """The lines under the table: what each number is measured on, and the overlap warning."""
    es = result["entries"]
    n_int = es[0]["internal"]["n"] if es else 0
    n_ext = es[0]["external"]["external"]["n"] if es else 0
    out = [f"internal = test split of {', '.join(plan.internal_sources)} only ({n_int} images, the same for both "
           f"training sets); external = {plan.external} ({n_ext} images). Intervals: Wilson 95 % (accuracy), "
           "Jeffreys (balanced accuracy). probe: accuracy with the lungs hidden, on the external images.",
           settings_line(plan),
           *overlap_lines(result["overlap"])]
    reused = [e["run"].id for e in es if e["reused"]]
    if reused:
        out.append(f"reused {len(reused)} stored run(s) with the identical configuration: {', '.join(reused)}")
    return out
