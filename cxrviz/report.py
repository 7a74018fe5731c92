"""Leaderboard tables and exports (CSV, Markdown, LaTeX, JSON). No Streamlit."""
from __future__ import annotations

import io
import math

import pandas as pd

from .metrics import aggregate
from .models import model_stats
from .runs import Run

# The seminar deck's figures (20 epochs, Colab GPU, single runs on the 66-image test split).
DECK = {
    "alexnet": {"display": "AlexNet", "depth": 8, "time_min": 4.71, "acc": 0.803},
    "vgg19": {"display": "VGG-19", "depth": 19, "time_min": 5.61, "acc": 0.833},
    "googlenet": {"display": "GoogLeNet", "depth": 22, "time_min": 4.61, "acc": 0.894},
    "resnet18": {"display": "ResNet-18", "depth": 18, "time_min": 4.79, "acc": 0.909},
}


def run_row(r: Run) -> dict:
    c, ev, t = r.config, r.evaluation or {}, r.meta.get("timings", {})
    stats = model_stats(r.arch, int(c["img_size"]), len(r.classes), int(c.get("in_channels", 1)))
    row = {
        "run": r.id, "model": r.meta["display"], "arch": r.arch, "family": r.meta.get("family"),
        "depth": r.meta.get("depth"), "params_M": stats["params"] / 1e6, "gflops": stats["gflops"],
        "img_size": c["img_size"], "epochs": r.meta.get("epochs_done", c["epochs"]), "seed": c["seed"],
        "device": r.meta.get("environment", {}).get("device"), "status": r.status,
        "dataset": "synthetic" if r.meta["dataset"].get("synthetic") else r.meta["dataset"].get("name"),
        "train_min": t.get("train_eval_s", math.nan) / 60, "accuracy": ev.get("accuracy", math.nan),
        "ci_low": ev.get("ci_low", math.nan), "ci_high": ev.get("ci_high", math.nan),
        "macro_f1": ev.get("macro_f1", math.nan), "latency_ms": ev.get("latency_ms", math.nan),
        "n_test": ev.get("n"), "created": r.meta.get("created"), "group": r.group_key,
    }
    for cls, m in (ev.get("per_class") or {}).items():
        row[f"recall:{cls}"] = m["recall"]
    return row


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame([run_row(r) for r in runs])


def groups_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per seed group (same config, different seeds): mean, sd and spread of the metrics."""
    df = runs_frame(runs)
    if df.empty:
        return df
    rows = []
    for _, g in df.groupby("group", sort=False):
        first = g.iloc[0]
        acc = aggregate(g["accuracy"].tolist())
        row = {k: first[k] for k in ("model", "arch", "family", "depth", "params_M", "gflops", "img_size",
                                     "epochs", "device", "dataset")}
        row.update({"seeds": len(g), "accuracy": acc["mean"], "accuracy_sd": acc["sd"], "acc_min": acc["min"],
                    "acc_max": acc["max"], "macro_f1": g["macro_f1"].mean(), "train_min": g["train_min"].mean(),
                    "latency_ms": g["latency_ms"].mean(), "runs": ", ".join(g["run"])})
        rows.append(row)
    return pd.DataFrame(rows).sort_values("accuracy", ascending=False, ignore_index=True)


def fmt_pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def display_table(runs: list[Run]) -> pd.DataFrame:
    """The compact leaderboard used by the CLI `table` command and the exports."""
    df = runs_frame(runs)
    if df.empty:
        return pd.DataFrame(columns=["model", "depth", "params (M)", "img", "epochs", "train (min)",
                                     "test acc", "95 % CI", "macro-F1", "ms/img", "run"])
    df = df.sort_values("accuracy", ascending=False)
    return pd.DataFrame({
        "model": df["model"], "depth": df["depth"], "params (M)": df["params_M"].round(2),
        "img": df["img_size"], "epochs": df["epochs"], "train (min)": df["train_min"].round(2),
        "test acc": df["accuracy"].map(fmt_pct),
        "95 % CI": [f"{100 * lo:.1f}–{100 * hi:.1f}" if not math.isnan(lo) else "–"
                    for lo, hi in zip(df["ci_low"], df["ci_high"])],
        "macro-F1": df["macro_f1"].round(3), "ms/img": df["latency_ms"].round(1), "run": df["run"],
    }).reset_index(drop=True)


def export(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "md":
        return df.to_markdown(index=False) if _has_tabulate() else _markdown(df)
    if fmt == "latex":
        return _latex(df)
    if fmt == "json":
        return df.to_json(orient="records", indent=2)
    raise ValueError(f"unknown format {fmt!r}; choose md, csv, latex or json")


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _cell(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "–": "--"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESC.get(ch, ch) for ch in s)


def _latex(df: pd.DataFrame) -> str:
    """A booktabs table (no jinja2 needed)."""
    buf = io.StringIO()
    cols = [str(c) for c in df.columns]
    buf.write("\\begin{tabular}{" + "l" * len(cols) + "}\n\\toprule\n")
    buf.write(" & ".join(_tex(c) for c in cols) + " \\\\\n\\midrule\n")
    for row in df.itertuples(index=False):
        buf.write(" & ".join(_tex(_cell(v)) for v in row) + " \\\\\n")
    buf.write("\\bottomrule\n\\end{tabular}\n")
    return buf.getvalue()
