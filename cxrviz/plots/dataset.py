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


def source_counts_figure(rows: list[dict], *, height: int = 300) -> go.Figure:
    """Images per class x source x split (rows {source, split, class, n} from ``DatasetSource.source_counts``):
    one panel per split, stacked bars per class, one colour per source."""
    from plotly.subplots import make_subplots

    splits = [s for s in ("train", "test") if any(r["split"] == s for r in rows)]
    sources = sorted({r["source"] for r in rows})
    classes = list(dict.fromkeys(r["class"] for r in sorted(rows, key=lambda r: r["class"])))
    fig = make_subplots(rows=1, cols=max(1, len(splits)), subplot_titles=[f"{s} split" for s in splits],
                        shared_yaxes=True)
    for j, split in enumerate(splits, 1):
        for k, src in enumerate(sources):
            n = {r["class"]: r["n"] for r in rows if r["split"] == split and r["source"] == src}
            fig.add_bar(x=classes, y=[n.get(c, 0) for c in classes], name=src, legendgroup=src, showlegend=j == 1,
                        marker_color=PALETTE[k % len(PALETTE)], row=1, col=j,
                        meta={"source": src, "split": split},
                        hovertemplate=f"{src}<br>%{{x}}: %{{y}} images<extra></extra>")
    fig.update_layout(barmode="stack", height=height, title="Images per class, source and split",
                      **{**LAYOUT, "hovermode": "closest"})
    return fig
