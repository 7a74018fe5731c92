"""The one style of every cxrviz figure: a palette keyed by architecture name, status colours, plotly layout
defaults and the matplotlib helpers of the static (PNG) twins.

An architecture's colour never depends on its position in the registry: the registered names have fixed
colours below, and any other name (a model added later) gets one from a hash of its name, so adding a model
recolours nothing."""
from __future__ import annotations

import hashlib
import io

import plotly.graph_objects as go
from plotly.colors import qualitative

PALETTE = qualitative.Plotly + qualitative.D3
ARCH_COLORS = {
    "lenet5": "#636EFA",
    "alexnet": "#EF553B",
    "vgg11": "#00CC96",
    "vgg13": "#AB63FA",
    "vgg16": "#FFA15A",
    "vgg19": "#19D3F3",
    "googlenet": "#FF6692",
    "resnet18": "#B6E880",
    "resnet34": "#FF97FF",
    "resnet50": "#FECB52",
    "resnet101": "#1F77B4",
    "resnet152": "#FF7F0E",
}
DECK_COLOR = "#444444"
STATUS_COLOURS = {"queued": "#8c8c8c", "running": "#1f77b4", "done": "#2ca02c", "stopped": "#ff7f0e",
                  "failed": "#d62728", "cancelled": "#8c8c8c"}
LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
              legend=dict(orientation="h", yanchor="top", y=-0.22, x=0, font=dict(size=11)))


def arch_color(arch: str) -> str:
    """The architecture's colour: fixed for the registered names, a stable hash of the name otherwise."""
    if arch in ARCH_COLORS:
        return ARCH_COLORS[arch]
    digest = int(hashlib.sha256(arch.encode()).hexdigest(), 16)
    return PALETTE[digest % len(PALETTE)]


def series_colors(archs: list[str | None]) -> list[str]:
    """One colour per curve: the architecture's colour, or a distinct one per position where the architectures
    are unknown or repeated (several runs of one architecture)."""
    if all(archs) and len(set(archs)) == len(archs):
        return [arch_color(a) for a in archs]
    return [PALETTE[i % len(PALETTE)] for i in range(len(archs))]


def run_colors(runs) -> list[str]:
    """One colour per :class:`cxrviz.runs.Run` (see :func:`series_colors`)."""
    return series_colors([r.arch for r in runs])


def empty(msg: str) -> go.Figure:
    """A blank plotly figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 16})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=300)
    return fig


def scaled(fig: go.Figure, big: bool) -> go.Figure:
    """Larger fonts for a projector (the seminar page)."""
    if big:
        fig.update_layout(font={"size": 22}, legend={"font": {"size": 20}})
        fig.update_xaxes(tickfont={"size": 20}, title_font={"size": 22})
        fig.update_yaxes(tickfont={"size": 22}, title_font={"size": 22})
    return fig


# ---------------------------------------------------------------- matplotlib (static PNG twins)
def mpl_figure(w: float, h: float, dpi: int = 150, layout: str | None = "constrained"):
    """A matplotlib Figure that needs no GUI backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=dpi, layout=layout)


def png(fig, dpi: int | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **({"dpi": dpi} if dpi else {}))
    return buf.getvalue()


def png_message(msg: str) -> bytes:
    """A small PNG that says why there is no chart."""
    fig = mpl_figure(6, 2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, msg, ha="center", va="center")
    return png(fig)
