"""Figures of external validation: internal vs external accuracy, predicted-class distribution, reliability
diagrams, shortcut probes, and the lung-field template drawn on real radiographs. Plotly for the pages,
matplotlib for PNG files. Inputs are the plain-dict records of :mod:`cxrviz.external` and
:mod:`cxrviz.probes`."""
from __future__ import annotations

import io
import math

import numpy as np
import plotly.graph_objects as go

from .style import arch_color

INTERNAL, EXTERNAL = "#1f77b4", "#d62728"


def _err(v: dict, lo: str = "ci_low", hi: str = "ci_high", acc: str = "accuracy") -> tuple[float, float]:
    return 100 * (v[acc] - v[lo]), 100 * (v[hi] - v[acc])


def internal_vs_external(records: list[dict], big: bool = False) -> go.Figure:
    """Grouped bars: each run's internal (its test split) and external accuracy with Wilson 95 % intervals,
    and the external majority baseline as a marker."""
    names = [f"{r['display']} · {r['run'][-4:]}" for r in records]
    fig = go.Figure()
    for key, color, label in (("internal", INTERNAL, "internal (test split)"), ("external", EXTERNAL, "external")):
        vals = [r[key] for r in records]
        lo = [_err(v)[0] for v in vals]
        hi = [_err(v)[1] for v in vals]
        fig.add_bar(name=label, x=names, y=[100 * v["accuracy"] for v in vals], marker_color=color,
                    error_y=dict(type="data", array=hi, arrayminus=lo, visible=True),
                    text=[f"{100 * v['accuracy']:.1f}" for v in vals], textposition="inside")
    fig.add_scatter(name="external majority baseline", x=names,
                    y=[100 * r["external"]["majority"]["accuracy"] for r in records], mode="markers",
                    marker=dict(symbol="line-ew", size=40, line=dict(width=3, color="black")))
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy (%)", range=[0, 100]), height=420 if big else 340,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12),
                      font=dict(size=20) if big else None)
    return fig


def predicted_distribution(records: list[dict]) -> go.Figure:
    """Stacked bars: how many external images each run calls each class (everything "Covid" shows at once)."""
    fig = go.Figure()
    classes = list(records[0]["external"]["predicted"]) if records else []
    palette = ["#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
    names = [f"{r['display']} · {r['run'][-4:]}" for r in records]
    for i, c in enumerate(classes):
        fig.add_bar(name=c, y=names, x=[r["external"]["predicted"].get(c, 0) for r in records], orientation="h",
                    marker_color=palette[i % len(palette)])
    fig.update_layout(barmode="stack", xaxis_title="external images predicted as", height=160 + 40 * len(records),
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(title="predicted"))
    return fig


def reliability(cals: list[tuple[str, str, dict]]) -> go.Figure:
    """Reliability diagram: accuracy against mean confidence per bin, one line per (name, arch, calibration)."""
    fig = go.Figure()
    fig.add_scatter(x=[0, 100], y=[0, 100], mode="lines", line=dict(dash="dash", color="gray"), name="perfect")
    for i, (name, arch, cal) in enumerate(cals):
        if not cal or not cal["bins"]:
            continue
        b = cal["bins"]
        fig.add_scatter(x=[100 * x["confidence"] for x in b], y=[100 * x["accuracy"] for x in b], mode="lines+markers",
                        name=f"{name} (ECE {100 * cal['ece']:.1f})",
                        line=dict(color=arch_color(arch), dash=("solid", "dash", "dot", "dashdot")[i % 4]),
                        marker=dict(size=[6 + 2 * math.sqrt(x["n"]) for x in b]),
                        hovertemplate="confidence %{x:.0f} %, accuracy %{y:.0f} %<extra></extra>")
    fig.update_layout(xaxis=dict(title="mean confidence (%)", range=[0, 100]),
                      yaxis=dict(title="accuracy (%)", range=[0, 100]),
                      height=380, margin=dict(l=10, r=10, t=30, b=10))
    return fig


def probes_chart(records: list[dict]) -> go.Figure:
    """Accuracy full / lungs hidden / only lungs per run with intervals, and the majority baseline."""
    from ..probes import VARIANTS

    names = [f"{r['display']} · {r['run'][-4:]}" for r in records]
    fig = go.Figure()
    for name, color in zip(VARIANTS, ("#7f7f7f", "#d62728", "#2ca02c")):
        vals = [r["variants"][name] for r in records]
        fig.add_bar(name=name, x=names, y=[100 * v["accuracy"] for v in vals], marker_color=color,
                    error_y=dict(type="data", array=[_err(v)[1] for v in vals], arrayminus=[_err(v)[0] for v in vals]))
    fig.add_scatter(name="majority baseline", x=names, y=[100 * r["baseline"] for r in records], mode="markers",
                    marker=dict(symbol="line-ew", size=40, line=dict(width=3, color="black")))
    fig.update_layout(barmode="group", yaxis=dict(title="accuracy (%)", range=[0, 100]), height=340,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12))
    return fig


# ---------------------------------------------------------------- PNG (matplotlib)
def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def internal_vs_external_png(records: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(records)), 3.6))
    x = np.arange(len(records))
    for off, key, color, label in ((-0.2, "internal", INTERNAL, "internal (test split)"),
                                   (0.2, "external", EXTERNAL, "external")):
        vals = [r[key] for r in records]
        ax.bar(x + off, [100 * v["accuracy"] for v in vals], 0.4, color=color, label=label,
               yerr=np.array([_err(v) for v in vals]).T, capsize=3)
    ax.scatter(x, [100 * r["external"]["majority"]["accuracy"] for r in records], marker="_", s=900, color="black",
               label="external majority baseline", zorder=3)
    ax.set_xticks(x, [r["display"] for r in records])
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower left")
    return _png(fig)


def reliability_png(cals: list[tuple[str, str, dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 100], [0, 100], "--", color="gray")
    for i, (name, arch, cal) in enumerate(cals):
        if cal and cal["bins"]:
            b = cal["bins"]
            ax.plot([100 * x["confidence"] for x in b], [100 * x["accuracy"] for x in b], marker="o",
                    linestyle=("-", "--", ":", "-.")[i % 4], color=arch_color(arch),
                    label=f"{name} (ECE {100 * cal['ece']:.1f})")
    ax.set_xlabel("mean confidence (%)")
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    return _png(fig)


def lung_overlay_png(images_folder, masks_folder=None, n: int = 6, size: int = 256) -> bytes:
    """The lung-field template (red outline) on ``n`` radiographs of a folder, squashed to a square as the
    models see them; with ``masks_folder`` (same file stems) the real lung mask in green."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    from ..data import decode_image, resize_square
    from ..data.dataset import IMAGE_EXTS
    from ..errors import CxrvizError
    from ..lungs import lung_mask, read_mask

    d = Path(images_folder)
    if not d.is_dir():
        raise CxrvizError(f"{d}: image folder not found")
    files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise CxrvizError(f"{d}: no images")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]
    t = lung_mask(size)
    fig, axes = plt.subplots(1, len(pick), figsize=(2.6 * len(pick), 2.8))
    for ax, f in zip(np.atleast_1d(axes), pick):
        ax.imshow(resize_square(decode_image(f), size), cmap="gray", vmin=0, vmax=255)
        ax.contour(t, levels=[0.5], colors="red", linewidths=1.5)
        if masks_folder:
            mf = next((m for m in Path(masks_folder).glob(f.stem + ".*")), None)
            if mf is not None:
                ax.contour(read_mask(mf, size), levels=[0.5], colors="lime", linewidths=1)
        ax.set_title(f.name[:22], fontsize=7)
        ax.axis("off")
    fig.suptitle("red: cxrviz lung-field template" + (" · green: the image's own lung mask" if masks_folder else ""),
                 fontsize=9)
    return _png(fig)
