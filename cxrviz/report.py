"""Leaderboard tables, seed groups, paired significance, the seminar table and exports (CSV, Markdown,
LaTeX, JSON). No Streamlit: the pages only lay these frames out."""
from __future__ import annotations

import io
import math
from collections import Counter
from itertools import combinations

import numpy as np
import pandas as pd

from .metrics import aggregate, interval_width, mcnemar_exact, mcnemar_reading, paired_correctness
from .models import model_stats
from .runs import Run, RunError

# The seminar deck's figures (20 epochs, Colab GPU, single runs on the 66-image test split).
DECK = {
    "alexnet": {"display": "AlexNet", "depth": 8, "time_min": 4.71, "acc": 0.803},
    "vgg19": {"display": "VGG-19", "depth": 19, "time_min": 5.61, "acc": 0.833},
    "googlenet": {"display": "GoogLeNet", "depth": 22, "time_min": 4.61, "acc": 0.894},
    "resnet18": {"display": "ResNet-18", "depth": 18, "time_min": 4.79, "acc": 0.909},
}
DECK_N_TEST = 66
DECK_DEVICE = "Colab GPU"

SYNTHETIC = "synthetic"


# ---------------------------------------------------------------- one row per run
def dataset_name(r: Run) -> str:
    d = r.meta.get("dataset", {})
    return SYNTHETIC if d.get("synthetic") else (d.get("name") or "unknown")


def selected_on(r: Run) -> str:
    """Which split chose the run's settings and epochs: "validation" (per-epoch metrics on a held-out part of
    train, test scored once), "test (every epoch)" (val_fraction 0) or "test (old run)" (trained before the
    validation split existed: its per-epoch curves are test figures, so its test figure is optimistic)."""
    c = r.config
    if "val_fraction" not in c:
        return "test (old run)"
    return "validation" if (c.get("val_fraction") or 0) > 0 else "test (every epoch)"


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


# ---------------------------------------------------------------- formatting helpers
def fmt_pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _isnan(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def fmt_ci(lo: float, hi: float) -> str:
    return "–" if _isnan(lo) or _isnan(hi) else f"{100 * lo:.1f}–{100 * hi:.1f}"


def fmt_mean_sd(mean: float, sd: float, n: int, pct: bool = True, digits: int = 1) -> str:
    if _isnan(mean):
        return "–"
    k = 100 if pct else 1
    s = f"{k * mean:.{digits}f}"
    if n > 1 and not _isnan(sd):
        s += f" ± {k * sd:.{digits}f}"
    return s


def _model_cell(model: str, status: str) -> str:
    return model if status != "stopped" else f"{model} (stopped)"


def _rnd(s: pd.Series, digits: int) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").round(digits)


def _sig(s: pd.Series, digits: int = 3) -> pd.Series:
    """Round to significant digits (GFLOPs range from 0.0004 for LeNet-5 to 20 for VGG-19)."""
    return pd.to_numeric(s, errors="coerce").map(lambda v: v if _isnan(v) or v == 0 else float(f"{v:.{digits}g}"))


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
    out = pd.DataFrame({
        "model": [_model_cell(m, s) for m, s in zip(df["model"], df["status"])], "dataset": df["dataset"],
        "depth": df["depth"], "params (M)": _rnd(df["params_M"], 2), "GFLOPs": _sig(df["gflops"]),
        "img": df["img_size"], "epochs": df["epochs"], "device": df["device"],
        "train (min)": _rnd(df["train_min"], 2),
        "test acc": df["accuracy"].map(fmt_pct),
        "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "macro-F1": _rnd(df["macro_f1"], 3),
    })
    for c in recall_columns(df):
        out["recall " + c.split(":", 1)[1]] = _rnd(df[c], 3)
    out["ms/img"] = _rnd(df["latency_ms"], 2)
    out["curves on"] = df["selected_on"]  # the split of the per-epoch metrics; "test acc" is always test
    out["seed"] = df["seed"]
    out["status"] = df["status"]
    out["run"] = df["run"]
    return out.reset_index(drop=True)


def display_groups(runs: list[Run]) -> pd.DataFrame:
    """One formatted row per seed group: mean ± sd over seeds and the min–max spread."""
    g = groups_frame(runs)
    if g.empty:
        return pd.DataFrame(columns=["model", "dataset", "depth", "params (M)", "GFLOPs", "img", "epochs",
                                     "device", "seeds", "test acc (mean ± sd)", "spread", "macro-F1 (mean ± sd)",
                                     "train (min)", "ms/img", "runs"])
    out = pd.DataFrame({
        "model": g["model"], "dataset": g["dataset"], "depth": g["depth"], "params (M)": _rnd(g["params_M"], 2),
        "GFLOPs": _sig(g["gflops"]), "img": g["img_size"], "epochs": g["epochs"], "device": g["device"],
        "seeds": g["seeds"],
        "test acc (mean ± sd)": [fmt_mean_sd(m, s, n) + (" %" if not _isnan(m) else "")
                                 for m, s, n in zip(g["accuracy"], g["accuracy_sd"], g["seeds"])],
        "spread": [fmt_ci(lo, hi) for lo, hi in zip(g["acc_min"], g["acc_max"])],
        "macro-F1 (mean ± sd)": [fmt_mean_sd(m, s, n, pct=False, digits=3)
                                 for m, s, n in zip(g["macro_f1"], g["macro_f1_sd"], g["seeds"])],
    })
    for c in recall_columns(g):
        out["recall " + c.split(":", 1)[1]] = _rnd(g[c], 3)
    out["train (min)"] = _rnd(g["train_min"], 2)
    out["ms/img"] = _rnd(g["latency_ms"], 2)
    out["stopped"] = g["stopped"]
    out["runs"] = g["runs"]
    return out


def leaderboard_frame(runs: list[Run], groups: bool = False) -> pd.DataFrame:
    """Numeric table for the interactive leaderboard (percentages 0–100 so the page can format and sort
    them); one row per run, or per seed group with mean ± sd and spread."""
    if not groups:
        df = runs_frame(runs)
        if df.empty:
            return df
        df = df.sort_values("accuracy", ascending=False)
        out = pd.DataFrame({
            "model": [_model_cell(m, s) for m, s in zip(df["model"], df["status"])],
            "family": df["family"], "depth": df["depth"], "params (M)": df["params_M"], "GFLOPs": df["gflops"],
            "img": df["img_size"], "epochs": df["epochs"], "seed": df["seed"], "device": df["device"],
            "train (min)": df["train_min"], "test acc": 100 * df["accuracy"],
            "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(df["ci_low"], df["ci_high"])],
            "macro-F1": df["macro_f1"],
        })
        for c in recall_columns(df):
            out["recall " + c.split(":", 1)[1]] = 100 * df[c]
        out["ms/img"] = df["latency_ms"]
        out["curves on"] = df["selected_on"]
        out["status"] = df["status"]
        out["dataset"] = df["dataset"]
        out["run"] = df["run"]
        return out.reset_index(drop=True)
    g = groups_frame(runs)
    if g.empty:
        return g
    g = g.sort_values("accuracy", ascending=False)
    out = pd.DataFrame({
        "model": g["model"], "family": g["family"], "depth": g["depth"], "params (M)": g["params_M"],
        "GFLOPs": g["gflops"], "img": g["img_size"], "epochs": g["epochs"], "seeds": g["seeds"],
        "device": g["device"], "train (min)": g["train_min"], "test acc": 100 * g["accuracy"],
        "± sd": 100 * g["accuracy_sd"],
        "spread": [fmt_ci(lo, hi) for lo, hi in zip(g["acc_min"], g["acc_max"])],
        "macro-F1": g["macro_f1"],
    })
    for c in recall_columns(g):
        out["recall " + c.split(":", 1)[1]] = 100 * g[c]
    out["ms/img"] = g["latency_ms"]
    out["stopped"] = g["stopped"]
    out["dataset"] = g["dataset"]
    out["runs"] = g["runs"]
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
            out[col] = [i for i, x in enumerate(v) if not _isnan(x) and np.isclose(x, best)]
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


# ---------------------------------------------------------------- paired significance
def unique_labels(runs: list[Run]) -> list[str]:
    """Short, unique names for runs: "ResNet-18 s0", adding image size / run id only where needed."""
    base = [f"{r.meta['display']} s{r.config['seed']}" for r in runs]
    counts = Counter(base)
    base = [b if counts[b] == 1 else f"{r.meta['display']} {r.config['img_size']}px e{r.config['epochs']} "
            f"s{r.config['seed']}" for b, r in zip(base, runs)]
    counts = Counter(base)
    return [b if counts[b] == 1 else f"{b} ({r.id[-4:]})" for b, r in zip(base, runs)]


def _predictions(r: Run) -> dict | None:
    try:
        p = r.predictions
    except RunError:
        return None
    return p if p and p.get("paths") else None


def significance(runs: list[Run], alpha: float = 0.05) -> dict:
    """Pairwise exact McNemar tests between runs, only where both were evaluated on the same test images.

    Returns {"labels", "p" (DataFrame of p-values, NaN where not comparable, 1 on the diagonal),
    "disagree" (DataFrame of counts), "pairs": [{a, b, comparable, a_only, b_only, disagree, p_value,
    reading}]}."""
    labels = unique_labels(runs)
    preds = [_predictions(r) for r in runs]
    n = len(runs)
    p = pd.DataFrame(np.full((n, n), np.nan), index=labels, columns=labels)
    dis = pd.DataFrame(np.full((n, n), np.nan), index=labels, columns=labels)
    pairs = []
    for i in range(n):
        if preds[i] is not None:
            p.iloc[i, i], dis.iloc[i, i] = 1.0, 0
    for i, j in combinations(range(n), 2):
        la, lb = labels[i], labels[j]
        paired = paired_correctness(preds[i], preds[j]) if preds[i] is not None and preds[j] is not None else None
        if paired is None:
            why = "no stored test predictions" if preds[i] is None or preds[j] is None else None
            reading = mcnemar_reading(la, lb, None)
            if why:
                reading = f"{la} vs {lb}: not comparable: {why}"
            pairs.append({"a": la, "b": lb, "comparable": False, "a_only": None, "b_only": None,
                          "disagree": None, "p_value": math.nan, "reading": reading})
            continue
        res = mcnemar_exact(*paired)
        p.iloc[i, j] = p.iloc[j, i] = res["p_value"]
        dis.iloc[i, j] = dis.iloc[j, i] = res["disagree"]
        pairs.append({"a": la, "b": lb, "comparable": True, **res, "reading": mcnemar_reading(la, lb, res, alpha)})
    return {"labels": labels, "p": p, "disagree": dis, "pairs": pairs}


# ---------------------------------------------------------------- seminar view
def _representative_group(g: pd.DataFrame) -> pd.Series:
    """Of one architecture's seed groups, the one the seminar table reports: most seeds, then most epochs,
    then the largest image size."""
    return g.sort_values(["seeds", "epochs", "img_size"], ascending=False).iloc[0]


def seminar_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per architecture (the deck's four first, then the rest): cxrviz's figure (mean ± sd over the
    seeds of its most-seeded configuration) next to the deck's reported figure."""
    g = groups_frame(runs)
    rows = []
    archs = list(DECK)
    if not g.empty:
        others = set(g["arch"]) - set(DECK)
        archs += sorted(others, key=lambda a: -np.nan_to_num(g[g["arch"] == a]["accuracy"].max()))
    for arch in archs:
        sub = g[g["arch"] == arch] if not g.empty else g
        deck = DECK.get(arch)
        row = {"arch": arch, "model": deck["display"] if deck else None, "deck_acc": deck["acc"] if deck else math.nan,
               "deck_time_min": deck["time_min"] if deck else math.nan,
               "accuracy": math.nan, "accuracy_sd": math.nan, "seeds": 0, "ci_low": math.nan, "ci_high": math.nan,
               "train_min": math.nan, "device": None, "img_size": None, "epochs": None, "n_test": None}
        if not sub.empty:
            b = _representative_group(sub)
            n = int(b["n_test"]) if not _isnan(b["n_test"]) else 0
            lo, hi, _ = interval_width(b["accuracy"], n) if n and not _isnan(b["accuracy"]) else (math.nan,) * 3
            row.update({"model": b["model"], "accuracy": b["accuracy"], "accuracy_sd": b["accuracy_sd"],
                        "seeds": int(b["seeds"]), "ci_low": lo, "ci_high": hi, "train_min": b["train_min"],
                        "device": b["device"], "img_size": int(b["img_size"]), "epochs": int(b["epochs"]),
                        "n_test": n})
        rows.append(row)
    return pd.DataFrame(rows)


def seminar_table(runs: list[Run]) -> pd.DataFrame:
    """The projected table: deck figure and cxrviz figure side by side, formatted. Deck times are on a
    Colab GPU (``DECK_DEVICE``); cxrviz times name their device."""
    s = seminar_frame(runs)
    out = pd.DataFrame({
        "model": s["model"],
        "deck acc": s["deck_acc"].map(fmt_pct),
        "cxrviz acc": [("not run yet" if n == 0 else fmt_mean_sd(a, sd, n) + " %")
                       for a, sd, n in zip(s["accuracy"], s["accuracy_sd"], s["seeds"])],
        "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(s["ci_low"], s["ci_high"])],
        "seeds": s["seeds"],
        "deck time": [("–" if _isnan(t) else f"{t:.2f} min") for t in s["deck_time_min"]],
        "cxrviz time": [("–" if _isnan(t) else f"{t:.2f} min" + (f" ({d})" if d else ""))
                        for t, d in zip(s["train_min"], s["device"])],
        "setting": [("–" if n == 0 else f"{int(i)} px, {int(e)} epochs")
                    for n, i, e in zip(s["seeds"], s["img_size"], s["epochs"])],
    })
    return out


def caveats(n_test: int | None, accuracy: float | None = None, synthetic: bool = False) -> list[str]:
    """Short Markdown caveats for the seminar view: test-set size, interval width, dataset bias."""
    out = []
    n = n_test or DECK_N_TEST
    acc = accuracy if accuracy is not None and not _isnan(accuracy) else DECK["resnet18"]["acc"]
    lo, hi, w = interval_width(acc, n)
    out.append(f"**Small test set.** The test split has {n} images: one image is {100 / n:.1f} points of accuracy. "
               f"At {fmt_pct(acc)} the 95 % Wilson interval is {fmt_ci(lo, hi)} % — {100 * w:.1f} points wide, "
               f"wider than most gaps in the table.")
    out.append("**Single runs are noisy.** Another seed moves a model by a few points; rank on mean ± sd over seeds "
               "and on paired tests (McNemar on the same images), not on one number.")
    if synthetic:
        out.append("**Synthetic data.** These runs used the built-in synthetic phantoms, not chest X-rays; "
                   "their numbers say nothing about the real task.")
    else:
        out.append("**Known dataset bias.** The Normal and Viral Pneumonia images come from a paediatric collection, "
                   "the COVID images from adults: a model can separate the classes by age- and source-related "
                   "shortcuts (body size, bone shape, image format, markers) rather than by lung findings. "
                   "High accuracy here is not evidence of clinical usefulness.")
    return out


# ---------------------------------------------------------------- exports
def export(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "md":
        return df.to_markdown(index=False) + "\n" if _has_tabulate() else _markdown(df)
    if fmt == "latex":
        return _latex(df)
    if fmt == "json":
        return df.to_json(orient="records", indent=2)
    raise ValueError(f"unknown format {fmt!r}; choose md, csv, latex or json")


EXPORT_MIME = {"csv": "text/csv", "md": "text/markdown", "latex": "application/x-tex", "json": "application/json"}
EXPORT_EXT = {"csv": "csv", "md": "md", "latex": "tex", "json": "json"}


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "–": "--",
              "±": r"$\pm$"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESC.get(ch, ch) for ch in s)


def _latex(df: pd.DataFrame) -> str:
    """A booktabs table (no jinja2 needed): numeric columns right-aligned."""
    buf = io.StringIO()
    cols = [str(c) for c in df.columns]
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "l"
                    for c in df.columns)
    buf.write("\\begin{tabular}{" + align + "}\n\\toprule\n")
    buf.write(" & ".join(_tex(c) for c in cols) + " \\\\\n\\midrule\n")
    for row in df.itertuples(index=False):
        buf.write(" & ".join(_tex(_cell(v)) for v in row) + " \\\\\n")
    buf.write("\\bottomrule\n\\end{tabular}\n")
    return buf.getvalue()
