"""Plotly figures for the dashboard (no Streamlit here: pages call these and show the result).

Training curves take :class:`Series` objects, built from a live job (:func:`series_from_snapshot`) or a
stored run (:func:`series_from_run`), so the same chart shows one job, or several runs overlaid.
Every trace carries ``meta={"series": label, "kind": "test_acc" | ...}`` and epoch traces carry
``customdata=[[wall_timestamp, "HH:MM:SS"], ...]`` (when known) so a browser test, or a user hovering,
can tell when each epoch ended.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.Plotly + qualitative.D3
STATUS_COLOURS = {"queued": "#8c8c8c", "running": "#1f77b4", "done": "#2ca02c", "stopped": "#ff7f0e",
                  "failed": "#d62728", "cancelled": "#8c8c8c"}
_LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
               legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, font=dict(size=11)))


@dataclass
class Series:
    """One run's curves: per-epoch rows (``epoch``, ``train_loss``, ``test_loss``, ``train_acc``,
    ``test_acc``, optionally ``wall``) and, optionally, per-batch losses at fractional epochs."""

    label: str
    history: list[dict] = field(default_factory=list)
    batch_x: list[float] = field(default_factory=list)
    batch_losses: list[float] = field(default_factory=list)
    status: str | None = None


def series_from_snapshot(snap, label: str | None = None) -> Series:
    """A live job (``cxrviz.jobs.JobSnapshot``)."""
    bx = list(getattr(snap, "batch_x", ()) or ())
    n = min(len(bx), len(snap.batch_losses))
    return Series(label or snap.label, list(snap.history), bx[:n], list(snap.batch_losses)[:n], snap.status)


def series_from_run(run, label: str | None = None, batches: bool = False) -> Series:
    """A stored run (``cxrviz.runs.Run``); per-batch losses are spread evenly over the epochs done."""
    h = run.history
    rows = list(h.get("history", []))
    bx, bl = [], []
    if batches and rows and h.get("batch_losses"):
        bl = list(h["batch_losses"])
        n = len(rows)
        bx = [(i + 1) * n / len(bl) for i in range(len(bl))]
    return Series(label or run.label, rows, bx, bl, run.status)


def _clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def history_figure(series: list[Series] | Series, *, height: int = 300, show_batches: bool = True,
                   title: str | None = None) -> go.Figure:
    """Loss (left) and accuracy in % (right) against epochs; train dotted, test solid, one colour per run.
    With one run, its per-batch training loss is drawn faintly behind the epoch points."""
    if isinstance(series, Series):
        series = [series]
    single = len(series) == 1
    key_note = "" if single else " (solid: validation, or test for older runs; dotted: train)"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss" + key_note, "Accuracy (%)" + key_note),
                        horizontal_spacing=0.08)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        rows = [r for r in s.history if "epoch" in r]
        x = [r["epoch"] for r in rows]
        walls = [[r["wall"], _clock(r["wall"])] if r.get("wall") else [None, ""] for r in rows]
        name = (lambda what: what) if single else (lambda what, s=s: f"{s.label} · {what}")
        if single and show_batches and s.batch_losses:
            fig.add_trace(go.Scatter(x=s.batch_x, y=s.batch_losses, mode="lines", name=name("batch loss"),
                                     line=dict(color="rgba(120,120,120,0.45)", width=1), hoverinfo="skip",
                                     meta={"series": s.label, "kind": "batch_loss"}), row=1, col=1)
        held = "val" if any("val_acc" in r for r in rows) else "test"  # runs before the validation split: test
        for key, col, what, scale in (("train_loss", 1, "train loss", 1), (f"{held}_loss", 1, f"{held} loss", 1),
                                      ("train_acc", 2, "train acc", 100), (f"{held}_acc", 2, f"{held} acc", 100)):
            y = [None if r.get(key) is None else r[key] * scale for r in rows]
            test = not key.startswith("train")
            unit = " %" if scale == 100 else ""
            fmt = ".1f" if scale == 100 else ".3f"
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=s.label if not single else what,
                legendgroup=None if single else s.label,
                line=dict(color=colour, width=2 if test else 1.5, dash=None if test else "dot"),
                marker=dict(size=7 if test else 5), customdata=walls,
                hovertemplate=(f"{name(what)}: %{{y:{fmt}}}{unit} (epoch %{{x}}, ended %{{customdata[1]}})"
                               "<extra></extra>"),
                meta={"series": s.label, "kind": key}, showlegend=single or key == f"{held}_acc"),
                row=1, col=col)
    last = max([r.get("epoch", 0) for s in series for r in s.history]
               + [max(s.batch_x, default=0) for s in series] + [1])
    fig.update_xaxes(title_text="epoch", rangemode="tozero", dtick=1 if last <= 12 else None)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 101], row=1, col=2)
    fig.update_layout(height=height, title=dict(text=title, x=0, font=dict(size=14)) if title else None, **_LAYOUT)
    if title:
        fig.update_layout(margin=dict(l=10, r=10, t=64, b=10))
    if not any(s.history or s.batch_losses for s in series):
        fig.add_annotation(text="waiting for the first batch…", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#888"))
    return fig


def counts_figure(counts: dict[str, dict[str, int]], *, synthetic: bool = False, height: int = 280) -> go.Figure:
    """Images per class, one bar group per split."""
    fig = go.Figure()
    for i, (split, per) in enumerate(counts.items()):
        fig.add_trace(go.Bar(x=list(per), y=list(per.values()), name=split, text=list(per.values()),
                             textposition="outside", marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group", height=height, yaxis_title="images",
                      title="Images per class and split" + (" (synthetic)" if synthetic else ""),
                      **{**_LAYOUT, "hovermode": "closest", "margin": dict(l=10, r=10, t=60, b=10)})
    return fig


def size_scatter_figure(rows: list[dict], *, height: int = 300) -> go.Figure:
    """Original width against height of every image, one colour per class (``image_size_stats`` rows)."""
    fig = go.Figure()
    classes = list(dict.fromkeys(r["class"] for r in rows))
    for i, cls in enumerate(classes):
        rs = [r for r in rows if r["class"] == cls]
        fig.add_trace(go.Scatter(x=[r["width"] for r in rs], y=[r["height"] for r in rs], mode="markers",
                                 name=cls, marker=dict(color=PALETTE[i % len(PALETTE)], size=6, opacity=0.7),
                                 text=[f'{r["split"]}/{r["file"]} ({r["mode"]})' for r in rs],
                                 hovertemplate="%{text}<br>%{x} × %{y} px<extra></extra>"))
    fig.update_layout(height=height, xaxis_title="width (px)", yaxis_title="height (px)",
                      title="Original image sizes", **{**_LAYOUT, "hovermode": "closest",
                                                       "margin": dict(l=10, r=10, t=60, b=10)})
    return fig


__all__ = ["Series", "series_from_snapshot", "series_from_run", "history_figure", "counts_figure",
           "size_scatter_figure", "PALETTE", "STATUS_COLOURS"]
