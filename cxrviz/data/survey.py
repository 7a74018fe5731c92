"""A first look at a dataset (the Overview page): a few sample images per class and a summary of the
original image sizes."""
from __future__ import annotations

import statistics

import numpy as np

from . import synthetic
from .cache import default_cache
from .dataset import DatasetSource
from .decode import ImageDecodeError


def sample_images(source: DatasetSource, per_class: int = 6,
                  size: int = 160) -> dict[str, list[tuple[np.ndarray, str]]]:
    """A few training images per class as uint8 HxW arrays with a caption (evenly spread over the class)."""
    out: dict[str, list[tuple[np.ndarray, str]]] = {c: [] for c in source.classes}
    if source.synthetic:
        imgs, labels = synthetic.make_split("train", size, n_per_class=per_class)
        for i, (img, y) in enumerate(zip(imgs, labels.tolist())):
            out[source.classes[y]].append((img, f"synthetic #{len(out[source.classes[y]]) + 1}"))
        return out
    cache = default_cache()
    for y, cls in enumerate(source.classes):
        files = [p for p, lab in source.files.get("train", []) if lab == y]
        if not files:
            continue
        picks = sorted({round(i * (len(files) - 1) / max(1, per_class - 1)) for i in range(per_class)})
        for i in picks:
            p = files[i]
            try:
                out[cls].append((cache.get(p, size), p.name))
            except (ImageDecodeError, OSError):
                continue  # unreadable files are reported by the trainer; the grid just skips them
    return out


def size_summary(rows: list[dict]) -> list[dict]:
    """Per split and class: number of files, width/height (min, median, max) and pixel modes."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["class"]), []).append(r)
    out = []
    for (split, cls), rs in sorted(groups.items()):
        w = [r["width"] for r in rs]
        h = [r["height"] for r in rs]
        out.append({"split": split, "class": cls, "files": len(rs),
                    "width min": min(w), "width median": int(statistics.median(w)), "width max": max(w),
                    "height min": min(h), "height median": int(statistics.median(h)), "height max": max(h),
                    "modes": ", ".join(sorted({r["mode"] for r in rs}))})
    return out
