"""Training curves: the ONE chart of loss and accuracy per epoch, used by the live job cards (Train) and the
Leaderboard, plus its matplotlib twin.

The chart takes :class:`Series` objects, built from a live job (:func:`series_from_snapshot`) or a stored run
(:func:`series_from_run`), so the same chart shows one job, or several runs overlaid. Every trace carries
``meta={"series": label, "kind": "test_acc" | ...}`` and epoch traces carry
``customdata=[[wall_timestamp, "HH:MM:SS"], ...]`` (when known) so a browser test, or a user hovering,
can tell when each epoch ended. Colours come from the architecture (:func:`cxrviz.plots.style.series_colors`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..report.significance import unique_labels
from ..runs import RunError
from .style import LAYOUT, empty, mpl_figure, png, png_message, series_colors

EMPTY_RUNS = "No training history for the selected runs"
def _curves(rows: list[dict]) -> tuple:
    """(key, panel, name, scale) of the four curves. The held-out curve is validation; runs trained before the
    validation split existed have per-epoch test rows instead, and say so."""
    held = "val" if any("val_acc" in r for r in rows) else "test"
    return (("train_loss", 1, "train loss", 1), (f"{held}_loss", 1, f"{held} loss", 1),
            ("train_acc", 2, "train acc", 100), (f"{held}_acc", 2, f"{held} acc", 100))


@dataclass
class Series:
    """One run's curves: per-epoch rows (``epoch``, ``train_loss``, ``test_loss``, ``train_acc``,
    ``test_acc``, optionally ``wall``) and, optionally, per-batch losses at fractional epochs."""

    label: str
    history: list[dict] = field(default_factory=list)
    batch_x: list[float] = field(default_factory=list)
    batch_losses: list[float] = field(default_factory=list)
    status: str | None = None
    arch: str | None = None  # picks the colour


def series_from_snapshot(snap, label: str | None = None) -> Series:
    """A live job (``cxrviz.jobs.JobSnapshot``)."""
    bx = list(getattr(snap, "batch_x", ()) or ())
    n = min(len(bx), len(snap.batch_losses))
    return Series(label or snap.label, list(snap.history), bx[:n], list(snap.batch_losses)[:n], snap.status,
                  getattr(snap, "arch", None))


def series_from_run(run, label: str | None = None, batches: bool = False) -> Series:
    """A stored run (``cxrviz.runs.Run``); per-batch losses are spread evenly over the epochs done. A run
    whose history cannot be read gives an empty series."""
    try:
        h = run.history
    except RunError:
        h = {}
    rows = list(h.get("history") or [])
    bx, bl = [], []
    if batches and rows and h.get("batch_losses"):
        bl = list(h["batch_losses"])
        n = len(rows)
        bx = [(i + 1) * n / len(bl) for i in range(len(bl))]
    return Series(label or run.label, rows, bx, bl, run.status, run.arch)


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
    for s, colour in zip(series, series_colors([s.arch for s in series])):
        rows = [r for r in s.history if "epoch" in r]
        x = [r["epoch"] for r in rows]
        walls = [[r["wall"], _clock(r["wall"])] if r.get("wall") else [None, ""] for r in rows]
        name = (lambda what: what) if single else (lambda what, s=s: f"{s.label} · {what}")
        if single and show_batches and s.batch_losses:
            fig.add_trace(go.Scatter(x=s.batch_x, y=s.batch_losses, mode="lines", name=name("batch loss"),
                                     line=dict(color="rgba(120,120,120,0.45)", width=1), hoverinfo="skip",
                                     meta={"series": s.label, "kind": "batch_loss"}), row=1, col=1)
        curves = _curves(rows)
        for key, col, what, scale in curves:
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
                meta={"series": s.label, "kind": key}, showlegend=single or key == curves[3][0]),
                row=1, col=col)
    last = max([r.get("epoch", 0) for s in series for r in s.history]
               + [max(s.batch_x, default=0) for s in series] + [1])
    fig.update_xaxes(title_text="epoch", rangemode="tozero", dtick=1 if last <= 12 else None)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 101], row=1, col=2)
    fig.update_layout(height=height, title=dict(text=title, x=0, font=dict(size=14)) if title else None, **LAYOUT)
    if title:
        fig.update_layout(margin=dict(l=10, r=10, t=64, b=10))
    if not any(s.history or s.batch_losses for s in series):
        fig.add_annotation(text="waiting for the first batch…", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#888"))
    return fig


def _run_series(runs, labels: list[str] | None) -> list[Series]:
    labels = labels or unique_labels(runs)
    return [s for s in (series_from_run(r, lab) for r, lab in zip(runs, labels)) if s.history]


def training_curves(runs, labels: list[str] | None = None, height: int = 420) -> go.Figure:
    """Stored runs' curves overlaid (the Leaderboard): :func:`history_figure` over :func:`series_from_run`."""
    series = _run_series(runs, labels)
    if not series:
        return empty(EMPTY_RUNS)
    return history_figure(series, height=height, show_batches=False)


def history_png(series: list[Series]) -> bytes:
    """The matplotlib twin of :func:`history_figure`: loss and accuracy, train dotted, test solid."""
    from matplotlib.ticker import MaxNLocator

    fig = mpl_figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for s, c in zip(series, series_colors([s.arch for s in series])):
        rows = [r for r in s.history if "epoch" in r]
        ep = [r["epoch"] for r in rows]
        for key, ax, what, scale in ((k, ax1 if col == 1 else ax2, w, sc) for k, col, w, sc in _curves(rows)):
            y = [np.nan if r.get(key) is None else r[key] * scale for r in rows]
            test = not key.startswith("train")
            ax.plot(ep, y, "o-" if test else ".:", color=c, lw=2 if test else 1.2, alpha=1 if test else 0.7,
                    label=f"{s.label} {what}" if len(series) > 1 else what)
    ax1.set_title("loss (solid: validation, or test for older runs; dotted: train)", fontsize="small")
    ax2.set_title("accuracy % (solid: validation, or test for older runs; dotted: train)", fontsize="small")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax2.legend(fontsize="x-small")
    return png(fig)


def training_curves_png(runs, labels: list[str] | None = None) -> bytes:
    """PNG twin of :func:`training_curves`."""
    series = _run_series(runs, labels)
    return history_png(series) if series else png_message(EMPTY_RUNS)


__all__ = ["Series", "series_from_snapshot", "series_from_run", "history_figure", "training_curves",
           "history_png", "training_curves_png"]
