"""Leaderboard tables: one row per run or per seed group, the filters the pages offer, the formatted tables
shown and exported, the best cells and the per-architecture summary."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from ..format import fmt_ci, fmt_mean_sd, fmt_pct, isnan
from ..metrics import aggregate, interval_width
from ..models import model_stats
from ..runs import Run
from .deck import DECK, SYNTHETIC


# ---------------------------------------------------------------- one row per run
def dataset_name(r: Run) -> str:
    d = r.meta.get("dataset", {})
    return SYNTHETIC if d.get("synthetic") else (d.get("name") or "unknown")


def selected_on(r: Run) -> str:
    """Which split chose the run's settings and epochs: "validation" (per-epoch metrics on a held-out part of
    train, test scored once), "test (every epoch)" (val_fraction 0) or "test (old run)" (trained before the
    validation split existed: its per-epoch curves are test figures, so its test figure is optimistic). A
    k-fold run says which fold: "validation (fold 2 of 5)"."""
    c = r.config
    if "val_fraction" not in c:
        return "test (old run)"
    if not (c.get("val_fraction") or 0) > 0:
        return "test (every epoch)"
    if c.get("val_folds"):
        return f"validation (fold {int(c.get('val_fold') or 0) + 1} of {int(c['val_folds'])})"
    return "validation"


def run_row(r: Run) -> dict:
    c, ev, t = r.config, r.evaluation or {}, r.meta.get("timings", {})
    stats = model_stats(r.arch, int(c["img_size"]), len(r.classes), int(c.get("in_channels", 1)))
    row = {
        "run": r.id, "model": r.meta["display"], "arch": r.arch, "family": r.meta.get("family"),
        "depth": r.meta.get("depth"), "params_M": stats["params"] / 1e6, "gflops": stats["gflops"],
        "img_size": c["img_size"], "epochs": r.meta.get("epochs_done", c["epochs"]), "seed": c["seed"],
        "device": r.meta.get("environment", {}).get("device"), "status": r.status,
        "dataset": dataset_name(r),
        "train_min": t.get("train_eval_s", math.nan) / 60, "accuracy": ev.get("accuracy", math.nan),
        "ci_low": ev.get("ci_low", math.nan), "ci_high": ev.get("ci_high", math.nan),
        "macro_f1": ev.get("macro_f1", math.nan), "latency_ms": ev.get("latency_ms", math.nan),
        "n_test": ev.get("n"), "created": r.meta.get("created"), "group": r.group_key,
        "label": r.label, "selected_on": selected_on(r),
    }
    for cls, m in (ev.get("per_class") or {}).items():
        row[f"recall:{cls}"] = m["recall"]
    return row


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([run_row(r) for r in runs])


def recall_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith("recall:")]


def _table(head: dict, src: pd.DataFrame, recall, tail: dict) -> pd.DataFrame:
    """The one column spec of every table: ``head`` columns, then one "recall <class>" column per class in
    ``src`` (values through ``recall``), then ``tail`` columns."""
    out = pd.DataFrame(head)
    for c in recall_columns(src):
        out["recall " + c.split(":", 1)[1]] = recall(src[c])
    for k, v in tail.items():
        out[k] = v
    return out


# ---------------------------------------------------------------- datasets and filters
def dataset_counts(runs_or_df) -> dict[str, int]:
    df = runs_or_df if isinstance(runs_or_df, pd.DataFrame) else runs_frame(runs_or_df)
    if df.empty:
        return {}
    return dict(Counter(df["dataset"]).most_common())


def default_dataset(runs_or_df) -> str | None:
    """The dataset a ranking shows first: the real dataset with the most runs, else the synthetic set."""
    counts = dataset_counts(runs_or_df)
    real = [(n, name) for name, n in counts.items() if name != SYNTHETIC]
    if real:
        return max(real, key=lambda x: x[0])[1]
    return SYNTHETIC if counts else None


def filter_frame(df: pd.DataFrame, dataset: str | None = None, families=None, img_sizes=None,
                 statuses=None, models=None) -> pd.DataFrame:
    """Rows of ``runs_frame`` that match every given filter (``None`` = no constraint on that field)."""
    if df.empty:
        return df
    m = pd.Series(True, index=df.index)
    if dataset is not None:
        m &= df["dataset"] == dataset
    for col, allowed in (("family", families), ("img_size", img_sizes), ("status", statuses), ("model", models)):
        if allowed is not None:
            m &= df[col].isin(list(allowed))
    return df[m]


def select_runs(runs: list[Run], df: pd.DataFrame) -> list[Run]:
    """The runs whose ids are in ``df['run']``, in the frame's order."""
    by_id = {r.id: r for r in runs}
    return [by_id[i] for i in (df["run"] if not df.empty else []) if i in by_id]


# ---------------------------------------------------------------- seed groups
def groups_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per seed group (same config, different seeds): mean, sd and spread of the metrics."""
    df = runs_frame(runs)
    if df.empty:
        return df
    rec = recall_columns(df)
    rows = []
    for key, g in df.groupby("group", sort=False):
        first = g.iloc[0]
        acc = aggregate(g["accuracy"].tolist())
        f1 = aggregate(g["macro_f1"].tolist())
        row = {k: first[k] for k in ("model", "arch", "family", "depth", "params_M", "gflops", "img_size",
                                     "epochs", "device", "dataset")}
        row.update({"seeds": len(g), "accuracy": acc["mean"], "accuracy_sd": acc["sd"], "acc_min": acc["min"],
                    "acc_max": acc["max"], "macro_f1": f1["mean"], "macro_f1_sd": f1["sd"],
                    "train_min": g["train_min"].mean(), "train_min_sd": aggregate(g["train_min"].tolist())["sd"],
                    "latency_ms": g["latency_ms"].mean(), "n_test": first["n_test"],
                    "stopped": int((g["status"] == "stopped").sum()),
                    "seed_list": ", ".join(str(s) for s in sorted(g["seed"])), "runs": ", ".join(g["run"]),
                    "group": key})
        for c in rec:
            row[c] = g[c].mean()
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["dataset", "accuracy"], ascending=[True, False], ignore_index=True)


def _model_cell(model: str, status: str) -> str:
    return model if status != "stopped" else f"{model} (stopped)"


def _rnd(s: pd.Series, digits: int) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").round(digits)


def _sig(s: pd.Series, digits: int = 3) -> pd.Series:
    """Round to significant digits (GFLOPs range from 0.0004 for LeNet-5 to 20 for VGG-19)."""
    return pd.to_numeric(s, errors="coerce").map(lambda v: v if isnan(v) or v == 0 else float(f"{v:.{digits}g}"))


# ---------------------------------------------------------------- tables shown and exported
def display_table(runs: list[Run]) -> pd.DataFrame:
    """The compact per-run leaderboard used by the CLI `table` command and the exports. Sorted by dataset,
    then accuracy: runs on different datasets are never ranked against each other without a dataset column."""
    df = runs_frame(runs)
    if df.empty:
        return pd.DataFrame(columns=["model", "dataset", "depth", "params (M)", "GFLOPs", "img", "epochs",
                                     "device", "train (min)", "test acc", "95 % CI", "macro-F1", "ms/img",
                                     "curves on", "seed", "status", "run"])
    df = df.sort_values(["dataset", "accuracy"], ascending=[True, False])
    out = _table({
        "model": [_model_cell(m, s) for m, s in zip(df["model"], df["status"])], "dataset": df["dataset"],
        "depth": df["depth"], "params (M)": _rnd(df["params_M"], 2), "GFLOPs": _sig(df["gflops"]),
        "img": df["img_size"], "epochs": df["epochs"], "device": df["device"],
        "train (min)": _rnd(df["train_min"], 2),
        "test acc": df["accuracy"].map(fmt_pct),
        "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "macro-F1": _rnd(df["macro_f1"], 3),
    }, df, lambda v: _rnd(v, 3), {"ms/img": _rnd(df["latency_ms"], 2), "curves on": df["selected_on"],
                                  "seed": df["seed"], "status": df["status"], "run": df["run"]})
    return out.reset_index(drop=True)


def display_groups(runs: list[Run]) -> pd.DataFrame:
    """One formatted row per seed group: mean ± sd over seeds and the min–max spread."""
    g = groups_frame(runs)
    if g.empty:
        return pd.DataFrame(columns=["model", "dataset", "depth", "params (M)", "GFLOPs", "img", "epochs",
                                     "device", "seeds", "test acc (mean ± sd)", "spread", "macro-F1 (mean ± sd)",
                                     "train (min)", "ms/img", "runs"])
    return _table({
        "model": g["model"], "dataset": g["dataset"], "depth": g["depth"], "params (M)": _rnd(g["params_M"], 2),
        "GFLOPs": _sig(g["gflops"]), "img": g["img_size"], "epochs": g["epochs"], "device": g["device"],
        "seeds": g["seeds"],
        "test acc (mean ± sd)": [fmt_mean_sd(m, s, n) + (" %" if not isnan(m) else "")
                                 for m, s, n in zip(g["accuracy"], g["accuracy_sd"], g["seeds"])],
        "spread": [fmt_ci(lo, hi) for lo, hi in zip(g["acc_min"], g["acc_max"])],
        "macro-F1 (mean ± sd)": [fmt_mean_sd(m, s, n, pct=False, digits=3)
                                 for m, s, n in zip(g["macro_f1"], g["macro_f1_sd"], g["seeds"])],
    }, g, lambda v: _rnd(v, 3), {"train (min)": _rnd(g["train_min"], 2), "ms/img": _rnd(g["latency_ms"], 2),
                                 "stopped": g["stopped"], "runs": g["runs"]})


def leaderboard_frame(runs: list[Run], groups: bool = False) -> pd.DataFrame:
    """Numeric table for the interactive leaderboard (percentages 0–100 so the page can format and sort
    them); one row per run, or per seed group with mean ± sd and spread."""
    if not groups:
        df = runs_frame(runs)
        if df.empty:
            return df
        df = df.sort_values("accuracy", ascending=False)
        out = _table({
            "model": [_model_cell(m, s) for m, s in zip(df["model"], df["status"])],
            "family": df["family"], "depth": df["depth"], "params (M)": df["params_M"], "GFLOPs": df["gflops"],
            "img": df["img_size"], "epochs": df["epochs"], "seed": df["seed"], "device": df["device"],
            "train (min)": df["train_min"], "test acc": 100 * df["accuracy"],
            "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])],
            "macro-F1": df["macro_f1"],
        }, df, lambda v: 100 * v, {"ms/img": df["latency_ms"], "curves on": df["selected_on"], "status": df["status"],
                                   "dataset": df["dataset"], "run": df["run"]})
        return out.reset_index(drop=True)
    g = groups_frame(runs)
    if g.empty:
        return g
    g = g.sort_values("accuracy", ascending=False)
    out = _table({
        "model": g["model"], "family": g["family"], "depth": g["depth"], "params (M)": g["params_M"],
        "GFLOPs": g["gflops"], "img": g["img_size"], "epochs": g["epochs"], "seeds": g["seeds"],
        "device": g["device"], "train (min)": g["train_min"], "test acc": 100 * g["accuracy"],
        "± sd": 100 * g["accuracy_sd"],
        "spread": [fmt_ci(lo, hi) for lo, hi in zip(g["acc_min"], g["acc_max"])],
        "macro-F1": g["macro_f1"],
    }, g, lambda v: 100 * v, {"ms/img": g["latency_ms"], "stopped": g["stopped"], "dataset": g["dataset"],
                              "runs": g["runs"]})
    return out.reset_index(drop=True)


# Columns the leaderboard highlights: higher is better / lower is better.
HIGHER_BETTER = ("test acc", "macro-F1")
LOWER_BETTER = ("train (min)", "ms/img")


def best_cells(df: pd.DataFrame) -> dict[str, list[int]]:
    """Row positions holding the best value of each highlighted column (ties all count)."""
    out = {}
    for col, fn in [(c, "max") for c in HIGHER_BETTER] + [(c, "min") for c in LOWER_BETTER]:
        if col in df and df[col].notna().any():
            v = pd.to_numeric(df[col], errors="coerce")
            best = getattr(v, fn)()
            out[col] = [i for i, x in enumerate(v) if not isnan(x) and np.isclose(x, best)]
    return out


def arch_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per architecture (per setting, where one architecture was run at several image sizes / epochs) from a
    ``runs_frame``: mean and sd of accuracy over its runs, each run's accuracy, and the 95 % Wilson interval of
    the mean accuracy over the test images (the test-set sampling noise). Sorted by mean accuracy."""
    cols = ["label", "arch", "model", "runs", "mean", "sd", "ci_low", "ci_high", "accs", "run_ids", "n_test",
            "deck_acc"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    d = df[df["accuracy"].notna()]
    rows = []
    for model, gm in d.groupby("model", sort=False):
        settings = gm.groupby(["img_size", "epochs"], sort=False)
        for (img, ep), g in settings:
            label = model if settings.ngroups == 1 else f"{model} {img}px e{ep}"
            a = aggregate(g["accuracy"].tolist())
            n = int(g["n_test"].max()) if g["n_test"].notna().any() else 0
            lo, hi, _ = interval_width(a["mean"], n) if n else (math.nan,) * 3
            arch = g["arch"].iloc[0]
            rows.append({"label": label, "arch": arch, "model": model, "runs": a["n"], "mean": a["mean"],
                         "sd": a["sd"], "ci_low": lo, "ci_high": hi, "accs": g["accuracy"].tolist(),
                         "run_ids": g["run"].tolist(), "n_test": n,
                         "deck_acc": DECK[arch]["acc"] if arch in DECK else math.nan})
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows, columns=cols).sort_values("mean", ascending=False, ignore_index=True)
