"""Where the lungs are: a fixed geometric lung-field template.

The template is two ellipses, mirror images of each other about the vertical midline, in normalised
image coordinates (x right, y down, both 0..1) of the square model input (images are squashed to a
square, as training does). Its parameters are fitted to the 275 OpenIST normal adult radiographs' lung
masks (``external/openist-normal/lung-masks/``): each mask is squashed to 128 px, the masks are averaged,
the mean is thresholded at 0.5 and each half is matched by moments (a uniform ellipse of semi-axis ``a``
has standard deviation ``a / 2``); left and right are averaged into one symmetric pair. The fit is
:func:`fit_template`; :data:`TEMPLATE` holds its result, so nothing is fitted at run time, and
``python -m cxrviz lungs --masks FOLDER`` refits it and measures how well it covers each real mask
(:func:`overlap`). The built-in synthetic phantoms draw their lungs at known places; their whole class
signal (the difference between a patient's Covid and Normal rendering) falls inside the template
(:func:`synthetic_signal_inside`, tested).

A fixed region cannot follow an unusual patient position; that is why every result that uses it is
reported as an average over many images, never per image.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Template:
    dx: float  # horizontal distance of each lung's centre from the midline
    cy: float  # vertical centre
    a: float  # horizontal semi-axis
    b: float  # vertical semi-axis

    def to_dict(self) -> dict:
        return asdict(self)


# fitted with fit_template() on the 275 OpenIST masks at 128 px (left/right averaged)
TEMPLATE = Template(dx=0.2006, cy=0.4348, a=0.1526, b=0.3417)


def lung_mask(size: int, template: Template = TEMPLATE) -> np.ndarray:
    """Boolean [size, size] lung-field mask of the template (pixel centres inside either ellipse)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    x, y = np.meshgrid(c, c)
    inside = np.zeros((size, size), dtype=bool)
    for cx in (0.5 - template.dx, 0.5 + template.dx):
        inside |= ((x - cx) / template.a) ** 2 + ((y - template.cy) / template.b) ** 2 <= 1.0
    return inside


def read_mask(path: str | os.PathLike, size: int) -> np.ndarray:
    """A binary lung mask file squashed to [size, size] boolean (as images are squashed for the models)."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return a >= 128


def mask_files(folder: str | os.PathLike) -> list[Path]:
    d = Path(folder)
    if not d.is_dir():
        from .errors import CxrvizError

        raise CxrvizError(f"{d}: lung-mask folder not found")
    return sorted(f for f in d.iterdir() if f.suffix.lower() in (".png", ".bmp", ".gif", ".tif", ".tiff")
                  and not f.name.startswith("."))


def fit_template(masks: list[np.ndarray]) -> Template:
    """Fit the symmetric two-ellipse template to the mean of boolean masks [S, S] by moments."""
    if not masks:
        raise ValueError("no masks to fit")
    mean = np.mean([m.astype(np.float64) for m in masks], axis=0)
    size = mean.shape[0]
    b = mean >= 0.5
    pars = []
    for lo, hi in ((0, size // 2), (size // 2, size)):
        yy, xx = np.nonzero(b[:, lo:hi])
        xx = (xx + lo + 0.5) / size
        yy = (yy + 0.5) / size
        pars.append((abs(xx.mean() - 0.5), yy.mean(), 2 * xx.std(), 2 * yy.std()))
    dx, cy, a, bb = np.mean(pars, axis=0)
    return Template(round(float(dx), 4), round(float(cy), 4), round(float(a), 4), round(float(bb), 4))


def overlap(mask: np.ndarray, template_mask: np.ndarray) -> dict:
    """IoU, share of the real lungs inside the template, share of the template on real lungs."""
    inter = float((mask & template_mask).sum())
    union = float((mask | template_mask).sum())
    return {"iou": inter / union if union else float("nan"),
            "lungs_inside": inter / mask.sum() if mask.sum() else float("nan"),
            "template_on_lungs": inter / template_mask.sum() if template_mask.sum() else float("nan")}


def check(folder: str | os.PathLike, size: int = 128, template: Template = TEMPLATE) -> dict:
    """Refit the template on a mask folder and measure the stored template against every mask."""
    files = mask_files(folder)
    masks = [read_mask(f, size) for f in files]
    if not masks:
        from .errors import CxrvizError

        raise CxrvizError(f"{folder}: no mask images (PNG) found")
    t = lung_mask(size, template)
    rows = [overlap(m, t) for m in masks]
    summary = {k: {"mean": float(np.mean([r[k] for r in rows])), "p10": float(np.percentile([r[k] for r in rows], 10)),
                   "min": float(np.min([r[k] for r in rows]))} for k in rows[0]}
    mean_mask = np.mean(masks, axis=0) >= 0.5
    return {"n": len(masks), "size": size, "template": template.to_dict(), "refit": fit_template(masks).to_dict(),
            "overlap": summary, "mean_mask_overlap": overlap(mean_mask, t), "area_share": float(t.mean())}


def synthetic_signal_inside(size: int = 96, n: int = 24, seed: int = 0, template: Template = TEMPLATE) -> float:
    """Share of the synthetic phantoms' class signal that lies inside the template: for ``n`` random patients,
    the absolute difference between their Covid and Normal (and Viral Pneumonia and Normal) renderings, which
    differ only in the lungs, summed inside the template over the total."""
    from .data.synthetic import COVID, NORMAL, VIRAL, make_phantom

    t = lung_mask(size, template)
    inside = total = 0.0
    for i in range(n):
        base = make_phantom(NORMAL, size, np.random.default_rng([seed, i])).astype(np.float64)
        for label in (COVID, VIRAL):
            d = np.abs(make_phantom(label, size, np.random.default_rng([seed, i])).astype(np.float64) - base)
            inside += float(d[t].sum())
            total += float(d.sum())
    return inside / total if total else float("nan")
