"""Dataset charts (Overview): images per class and split, original image sizes."""
from __future__ import annotations

import plotly.graph_objects as go

from .style import LAYOUT, PALETTE

_CLOSEST = {**LAYOUT, "hovermode": "closest", "margin": dict(l=10, r=10, t=60, b=10)}


def counts_figure(counts: dict[str, dict[str, int]], *, synthetic: bool = False, height: int = 280) -> go.Figure:
    """Images per class, one bar group per split."""
    fig = go.Figure()
    for i, (split, per) in enumerate(counts.items()):
        fig.add_trace(go.Bar(x=list(per), y=list(per.values()), name=split, text=list(per.values()),
                             textposition="outside", marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(barmode="group", height=height, yaxis_title="images",
                      title="Images per class and split" + (" (synthetic)" if synthetic else ""), **_CLOSEST)
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
                      title="Original image sizes", **_CLOSEST)
    return fig
