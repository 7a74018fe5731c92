"""Leaderboard charts: plotly figures for the pages and matplotlib twins that render the same content to
PNG (kaleido would need a Chrome download). No Streamlit here.

Inputs: ``df`` is a (filtered) :func:`cxrviz.report.runs_frame`; ``runs`` a list of :class:`cxrviz.runs.Run`;
``sig`` the dict from :func:`cxrviz.report.significance`."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .metrics import roc_curves
from .models import REGISTRY
from .report import arch_summary, unique_labels
from .runs import Run, RunError

_PALETTE = qualitative.Plotly + qualitative.D3
ARCH_COLORS = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(REGISTRY)}
DECK_COLOR = "#444444"


def arch_color(arch: str) -> str:
    return ARCH_COLORS.get(arch, "#7f7f7f")


def run_colors(runs: list[Run]) -> list[str]:
    """One colour per run: the architecture's colour, or a distinct one where a selection holds several runs
    of one architecture."""
    archs = [r.arch for r in runs]
    if len(set(archs)) == len(archs):
        return [arch_color(a) for a in archs]
    return [_PALETTE[i % len(_PALETTE)] for i in range(len(runs))]


def _short_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def _empty(msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 16})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=300)
    return fig


def _scaled(fig: go.Figure, big: bool) -> go.Figure:
    if big:
        fig.update_layout(font={"size": 22}, legend={"font": {"size": 20}})
        fig.update_xaxes(tickfont={"size": 20}, title_font={"size": 22})
        fig.update_yaxes(tickfont={"size": 22}, title_font={"size": 22})
    return fig


def _with_deck_only(s: pd.DataFrame) -> pd.DataFrame:
    """Add a row for each deck architecture without runs, so its deck marker still shows."""
    from .report import DECK

    missing = [a for a in DECK if a not in set(s["arch"])]
    extra = pd.DataFrame([{"label": f"{DECK[a]['display']} (deck only)", "arch": a, "model": DECK[a]["display"],
                           "runs": 0, "mean": math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                           "accs": [], "run_ids": [], "n_test": 0, "deck_acc": DECK[a]["acc"]} for a in missing],
                         columns=s.columns)
    return pd.concat([s, extra], ignore_index=True) if missing else s


def _valid(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["accuracy"].notna()] if not df.empty else df


# ---------------------------------------------------------------- accuracy vs training time
def acc_vs_time(df: pd.DataFrame, big: bool = False) -> go.Figure:
    """Test accuracy (with its Wilson 95 % interval) against training time; bubble area ~ parameters."""
    d = _valid(df)
    if d.empty:
        return _empty("No evaluated runs to plot")
    fig = go.Figure()
    pmax = float(d["params_M"].max()) or 1.0
    for model, g in d.groupby("model", sort=False):
        arch = g["arch"].iloc[0]
        acc = 100 * g["accuracy"]
        sizes = 12 + 48 * np.sqrt(g["params_M"] / pmax)
        stopped = g["status"] == "stopped"
        fig.add_trace(go.Scatter(
            x=g["train_min"], y=acc, mode="markers", name=model,
            marker={"size": sizes, "color": arch_color(arch), "opacity": 0.75,
                    "symbol": ["circle-open" if s else "circle" for s in stopped], "line": {"width": 1}},
            error_y={"type": "data", "symmetric": False, "array": 100 * g["ci_high"] - acc,
                     "arrayminus": acc - 100 * g["ci_low"], "thickness": 1.5, "width": 4},
            customdata=np.stack([g["run"], g["params_M"], 100 * g["ci_low"], 100 * g["ci_high"],
                                 g["status"]], axis=-1),
            hovertemplate="%{customdata[0]}<br>acc %{y:.1f} % (95 % CI %{customdata[2]:.1f}–%{customdata[3]:.1f})"
                          "<br>train %{x:.2f} min<br>%{customdata[1]:.2f} M params<br>%{customdata[4]}<extra></extra>",
        ))
    fig.update_layout(xaxis_title="training time (min, train + per-epoch eval)", yaxis_title="test accuracy (%)",
                      legend_title="model", height=480, margin={"t": 30})
    return _scaled(fig, big)


# ---------------------------------------------------------------- accuracy per architecture
def acc_per_arch(df: pd.DataFrame, deck: bool = False, big: bool = False) -> go.Figure:
    """Mean test accuracy per architecture with the 95 % interval over the test images, each run (seed) as a
    point, and optionally the deck's reported figure as a marker."""
    s = arch_summary(df)
    if s.empty:
        return _empty("No evaluated runs to plot")
    if deck:
        s = _with_deck_only(s)
    s = s.iloc[::-1]  # best on top in a horizontal chart
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=100 * s["mean"], y=s["label"], mode="markers", name="mean (95 % interval over test images)",
        marker={"size": 16 if not big else 22, "symbol": "line-ns-open", "color": "black",
                "line": {"width": 3}},
        error_x={"type": "data", "symmetric": False, "array": 100 * (s["ci_high"] - s["mean"]),
                 "arrayminus": 100 * (s["mean"] - s["ci_low"]), "thickness": 2, "width": 8},
        customdata=np.stack([s["runs"], 100 * s["sd"].fillna(0), 100 * s["ci_low"], 100 * s["ci_high"]], axis=-1),
        hovertemplate="%{y}: mean %{x:.1f} % ± %{customdata[1]:.1f} (sd over %{customdata[0]} runs)"
                      "<br>95 % CI %{customdata[2]:.1f}–%{customdata[3]:.1f}<extra></extra>",
    ))
    xs, ys, cs, ids = [], [], [], []
    for _, r in s.iterrows():
        xs += [100 * a for a in r["accs"]]
        ys += [r["label"]] * len(r["accs"])
        cs += [arch_color(r["arch"])] * len(r["accs"])
        ids += r["run_ids"]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="individual runs (seeds)", text=ids,
                             marker={"size": 10 if not big else 14, "color": cs, "opacity": 0.8,
                                     "line": {"width": 1, "color": "white"}},
                             hovertemplate="%{text}: %{x:.1f} %<extra></extra>"))
    if deck:
        dk = s[s["deck_acc"].notna()]
        if not dk.empty:
            fig.add_trace(go.Scatter(x=100 * dk["deck_acc"], y=dk["label"], mode="markers", name="deck (single run)",
                                     marker={"size": 14 if not big else 20, "symbol": "diamond", "color": DECK_COLOR},
                                     hovertemplate="deck: %{x:.1f} %<extra></extra>"))
    fig.update_layout(xaxis_title="test accuracy (%)", height=max(320, (90 if big else 70) * len(s) + 160),
                      margin={"t": 60, "l": 10}, legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0})
    fig.update_yaxes(automargin=True)
    return _scaled(fig, big)


# ---------------------------------------------------------------- confusion matrices
def _confusion(r: Run) -> np.ndarray | None:
    ev = r.evaluation or {}
    return np.asarray(ev["confusion"]) if ev.get("confusion") else None


def confusions(runs: list[Run]) -> go.Figure:
    """The selected runs' confusion matrices side by side (rows = true class, columns = predicted)."""
    runs = [r for r in runs if _confusion(r) is not None]
    if not runs:
        return _empty("No evaluated runs selected")
    labels = unique_labels(runs)
    fig = make_subplots(rows=1, cols=len(runs), subplot_titles=labels, horizontal_spacing=0.06)
    for i, (r, lab) in enumerate(zip(runs, labels), start=1):
        cm = _confusion(r)
        fig.add_trace(go.Heatmap(z=cm, x=r.classes, y=r.classes, text=cm, texttemplate="%{text}",
                                 colorscale="Blues", showscale=False, name=lab,
                                 hovertemplate="true %{y}<br>predicted %{x}<br>%{z} images<extra></extra>"),
                      row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i, showticklabels=(i == 1))
        fig.update_xaxes(title_text="predicted", row=1, col=i)
    fig.update_yaxes(title_text="true", row=1, col=1)
    fig.update_layout(height=360, margin={"t": 50})
    return fig


# ---------------------------------------------------------------- ROC curves
def _roc(r: Run) -> dict:
    try:
        p = r.predictions
    except RunError:
        return {}
    if not p or not p.get("probs"):
        return {}
    return roc_curves(p["labels"], np.asarray(p["probs"]), r.classes)


def roc(runs: list[Run]) -> go.Figure:
    """One-vs-rest ROC curves: one panel per class, one line per selected run (AUC in the legend)."""
    curves = [(col, lab, _roc(r)) for r, lab, col in zip(runs, unique_labels(runs), run_colors(runs))]
    curves = [c for c in curves if c[2]]
    if not curves:
        return _empty("No stored predictions for the selected runs")
    classes = list(dict.fromkeys(c for _, _, cv in curves for c in cv))
    fig = make_subplots(rows=1, cols=len(classes), subplot_titles=[f"{c} vs rest" for c in classes],
                        horizontal_spacing=0.05)
    for j, cls in enumerate(classes, start=1):
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                                 showlegend=False, hoverinfo="skip"), row=1, col=j)
        for color, lab, cv in curves:
            if cls in cv:
                fig.add_trace(go.Scatter(x=cv[cls]["fpr"], y=cv[cls]["tpr"], mode="lines",
                                         name=f"{lab} (AUC {cv[cls]['auc']:.3f})", legendgroup=lab,
                                         line={"color": color},
                                         hovertemplate=f"{lab}<br>FPR %{{x:.2f}}, TPR %{{y:.2f}}<extra></extra>"),
                              row=1, col=j)
        fig.update_xaxes(title_text="false positive rate", range=[0, 1], row=1, col=j)
    fig.update_yaxes(title_text="true positive rate", range=[0, 1.02], row=1, col=1)
    fig.update_layout(height=400, margin={"t": 50})
    return fig


# ---------------------------------------------------------------- training curves
def _history(r: Run) -> list[dict]:
    """Per-epoch rows; the held-out curve is validation, or test for runs trained before the validation split
    (their rows have test_*): both are drawn as ``test_*`` here and the titles say "held-out"."""
    try:
        rows = list(r.history.get("history") or [])
    except RunError:
        return []
    return [{**row, "test_loss": row.get("val_loss"), "test_acc": row.get("val_acc")} if "val_acc" in row else row
            for row in rows]


def training_curves(runs: list[Run]) -> go.Figure:
    """Selected runs' per-epoch curves overlaid: loss (train solid, test dashed) and test accuracy."""
    hs = [(col, lab, _history(r)) for r, lab, col in zip(runs, unique_labels(runs), run_colors(runs))]
    hs = [h for h in hs if h[2]]
    if not hs:
        return _empty("No training history for the selected runs")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["loss (thin: train, thick: validation, or test in older runs)",
                                                        "accuracy (thin: train, thick: validation, or test in older runs)"],
                        horizontal_spacing=0.08)
    for color, lab, h in hs:
        ep = [row["epoch"] for row in h]
        common = {"legendgroup": lab, "mode": "lines+markers"}
        fig.add_trace(go.Scatter(x=ep, y=[row.get("train_loss") for row in h], name=f"{lab} train",
                                 line={"color": color, }, opacity=0.55,
                                 **common), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[row.get("test_loss") for row in h], name=f"{lab} test",
                                 line={"color": color, "width": 3},
                                 **common), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[100 * row["test_acc"] if row.get("test_acc") is not None else None
                                          for row in h], name=f"{lab} test acc", showlegend=False,
                                 line={"color": color, "width": 3},
                                 **common), row=1, col=2)
        fig.add_trace(go.Scatter(x=ep, y=[100 * row["train_acc"] if row.get("train_acc") is not None else None
                                          for row in h], name=f"{lab} train acc", showlegend=False,
                                 line={"color": color, }, opacity=0.55,
                                 **common), row=1, col=2)
    fig.update_xaxes(title_text="epoch", dtick=1 if max(len(h) for _, _, h in hs) <= 20 else None)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="%", row=1, col=2)
    fig.update_layout(height=420, margin={"t": 50})
    return fig


# ---------------------------------------------------------------- significance matrix
def significance_heatmap(sig: dict) -> go.Figure:
    p = sig["p"]
    if p.empty or len(p) < 2:
        return _empty("Select at least two runs")
    dis = sig["disagree"]
    text = [[("–" if math.isnan(p.iat[i, j]) else ("" if i == j else f"{_short_p(p.iat[i, j])}<br>{int(dis.iat[i, j])} disagree"))
             for j in range(len(p))] for i in range(len(p))]
    z = p.values.astype(float).copy()
    np.fill_diagonal(z, np.nan)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(p.columns), y=list(p.index), text=text, texttemplate="%{text}", zmin=0, zmax=1,
        colorscale=[[0, "#d73027"], [0.05, "#fc8d59"], [0.0501, "#fee090"], [1, "#f7f7f7"]],
        colorbar={"title": "p"}, hovertemplate="%{y} vs %{x}<br>%{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=max(320, 70 * len(p) + 120), margin={"t": 30})
    return fig


# ================================================================ matplotlib twins (PNG)
def _mpl_figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=150, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _png_message(msg: str) -> bytes:
    fig = _mpl_figure(6, 2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, msg, ha="center", va="center")
    return _png(fig)


def acc_vs_time_png(df: pd.DataFrame) -> bytes:
    d = _valid(df)
    if d.empty:
        return _png_message("No evaluated runs to plot")
    fig = _mpl_figure(8, 5)
    ax = fig.add_subplot()
    pmax = float(d["params_M"].max()) or 1.0
    for model, g in d.groupby("model", sort=False):
        acc = 100 * g["accuracy"].to_numpy()
        err = np.vstack([acc - 100 * g["ci_low"].to_numpy(), 100 * g["ci_high"].to_numpy() - acc])
        c = arch_color(g["arch"].iloc[0])
        ax.errorbar(g["train_min"], acc, yerr=err, fmt="none", ecolor=c, alpha=0.7, capsize=3)
        ax.scatter(g["train_min"], acc, s=40 + 900 * g["params_M"] / pmax, color=c, alpha=0.6, label=model,
                   edgecolors="k", linewidths=0.5)
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", markerscale=0.5)
    ax.set_title("Accuracy vs training time (bubble area ~ parameters, bars = 95 % CI)", fontsize="medium")
    return _png(fig)


def acc_per_arch_png(df: pd.DataFrame, deck: bool = False) -> bytes:
    s = arch_summary(df)
    if s.empty:
        return _png_message("No evaluated runs to plot")
    if deck:
        s = _with_deck_only(s)
    s = s.iloc[::-1].reset_index(drop=True)
    fig = _mpl_figure(8, 1.0 + 0.6 * len(s))
    ax = fig.add_subplot()
    y = np.arange(len(s))
    err = np.vstack([100 * (s["mean"] - s["ci_low"]), 100 * (s["ci_high"] - s["mean"])])
    ax.errorbar(100 * s["mean"], y, xerr=err, fmt="|", color="k", markersize=14, capsize=5, lw=1.5,
                label="mean, 95 % interval")
    for i, r in s.iterrows():
        ax.scatter([100 * a for a in r["accs"]], [i] * len(r["accs"]), color=arch_color(r["arch"]), s=30,
                   zorder=3, edgecolors="white")
    if deck:
        dk = s[s["deck_acc"].notna()]
        if not dk.empty:
            ax.scatter(100 * dk["deck_acc"], dk.index, marker="D", color=DECK_COLOR, s=50, zorder=4, label="deck")
    ax.set_yticks(y, s["label"])
    ax.set_xlabel("test accuracy (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)


def confusions_png(runs: list[Run]) -> bytes:
    runs = [r for r in runs if _confusion(r) is not None]
    if not runs:
        return _png_message("No evaluated runs selected")
    labels = unique_labels(runs)
    fig = _mpl_figure(3.4 * len(runs) + 0.6, 3.6)
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, r, lab in zip(axes, runs, labels):
        cm = _confusion(r)
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        short = [c[:10] for c in r.classes]
        ax.set_xticks(range(len(short)), short, rotation=30, fontsize="small")
        ax.set_yticks(range(len(short)), short, fontsize="small")
        ax.set_title(lab, fontsize="small")
        ax.set_xlabel("predicted")
    axes[0].set_ylabel("true")
    return _png(fig)


def roc_png(runs: list[Run]) -> bytes:
    curves = [(col, lab, _roc(r)) for r, lab, col in zip(runs, unique_labels(runs), run_colors(runs))]
    curves = [c for c in curves if c[2]]
    if not curves:
        return _png_message("No stored predictions for the selected runs")
    classes = list(dict.fromkeys(c for _, _, cv in curves for c in cv))
    fig = _mpl_figure(3.8 * len(classes), 3.8)
    axes = fig.subplots(1, len(classes), squeeze=False)[0]
    for ax, cls in zip(axes, classes):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        for color, lab, cv in curves:
            if cls in cv:
                ax.plot(cv[cls]["fpr"], cv[cls]["tpr"], color=color, label=f"{lab} ({cv[cls]['auc']:.3f})")
        ax.set_title(f"{cls} vs rest", fontsize="small")
        ax.set_xlabel("false positive rate")
        ax.legend(fontsize="x-small", loc="lower right")
    axes[0].set_ylabel("true positive rate")
    return _png(fig)


def training_curves_png(runs: list[Run]) -> bytes:
    from matplotlib.ticker import MaxNLocator

    hs = [(col, lab, _history(r)) for r, lab, col in zip(runs, unique_labels(runs), run_colors(runs))]
    hs = [h for h in hs if h[2]]
    if not hs:
        return _png_message("No training history for the selected runs")
    fig = _mpl_figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for c, lab, h in hs:
        ep = [row["epoch"] for row in h]
        ax1.plot(ep, [row.get("train_loss", np.nan) for row in h], ".-", color=c, alpha=0.5, label=f"{lab} train")
        ax1.plot(ep, [row.get("test_loss", np.nan) for row in h], "o--", color=c, lw=2, label=f"{lab} test")
        ax2.plot(ep, [100 * row.get("test_acc", np.nan) for row in h], "o--", color=c, lw=2, label=lab)
    ax1.set_title("loss (solid train, dashed validation, or test in older runs)", fontsize="small")
    ax2.set_title("validation (older runs: test) accuracy (%)", fontsize="small")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax2.legend(fontsize="x-small")
    return _png(fig)


def significance_png(sig: dict) -> bytes:
    p = sig["p"]
    if p.empty or len(p) < 2:
        return _png_message("Select at least two runs")
    n = len(p)
    fig = _mpl_figure(1.3 * n + 2.5, 1.1 * n + 1.5)
    ax = fig.add_subplot()
    z = p.values.astype(float).copy()
    np.fill_diagonal(z, np.nan)
    z = np.ma.masked_invalid(z)
    im = ax.imshow(z, cmap="RdYlGn", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            v = p.iat[i, j]
            t = "" if i == j else "n/a" if math.isnan(v) else f"{_short_p(v)}\n{int(sig['disagree'].iat[i, j])} differ"
            ax.text(j, i, t, ha="center", va="center", fontsize="x-small")
    ax.set_xticks(range(n), list(p.columns), rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(n), list(p.index), fontsize="small")
    fig.colorbar(im, ax=ax, label="exact McNemar p")
    return _png(fig)
