"""Explanation figures (Explain): the input and every run's CAM overlay side by side, as a PNG."""
from __future__ import annotations

import math

import numpy as np

from ..explain import Explanation, display_image, overlay
from ..predict import ImageInput
from .style import mpl_figure, png


def side_by_side_png(image, explanations: list[Explanation], alpha: float = 0.5,
                     title: str | None = None, include_original: bool = True, dpi: int = 110,
                     colormap: str = "jet") -> bytes:
    """The original and every run's overlay in one row (wrapping after 4 panels), titled with the run,
    its prediction and the class the map explains; PNG bytes."""
    shown = display_image(image.gray() if isinstance(image, ImageInput) else image)
    panels: list[tuple[np.ndarray | None, str]] = []
    if include_original:
        panels.append((np.stack([shown] * 3, -1), "input"))
    for ex in explanations:
        if ex.ok:
            p = ex.prediction
            what = f"CAM: {ex.target}" if ex.target else "CAM: class-agnostic"
            panels.append((overlay(shown, ex.cam, alpha, colormap),
                           f"{ex.label}\n{p.predicted} {100 * p.confidence:.1f} % · {what}"))
        else:
            panels.append((None, f"{ex.label}\n{(ex.error or 'no map')[:60]}"))
    cols = min(4, max(1, len(panels)))
    rows = math.ceil(len(panels) / cols)
    h, w = shown.shape
    pw = 3.2
    fig = mpl_figure(pw * cols, pw * h / w * rows + 0.75 * rows + (0.4 if title else 0), dpi=dpi, layout=None)
    for j, (img, ttl) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, j + 1)
        if img is not None:
            ax.imshow(img)
        else:
            ax.text(0.5, 0.5, "failed", ha="center", va="center")
        ax.set_title(ttl, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png(fig, dpi=dpi)
