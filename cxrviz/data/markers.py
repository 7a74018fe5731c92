"""Generated datasets whose class is encoded by a marker at a known place: the ground truth for the
shortcut probes (:mod:`cxrviz.probes`).

Every image is a synthetic "Normal" chest phantom (random patient, pose and exposure); class ``Marked``
carries a bright square, class ``Plain`` does not. With ``where="outside"`` the square sits in the top-left
corner, far outside the lung fields (a shortcut, like a hospital's corner label); with ``where="lungs"`` it
is a disc at the centre of the image-left lung field. Written as PNG files in the Kaggle layout
(``train/`` and ``test/``, one folder per class), through a temp name and a rename.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

CLASSES = ("Marked", "Plain")


def marker_image(marked: bool, where: str, size: int, rng: np.random.Generator) -> np.ndarray:
    from .synthetic import NORMAL, make_phantom

    img = make_phantom(NORMAL, size, rng).copy()
    if not marked:
        return img
    c = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(c, c)
    if where == "outside":
        m = (x < 0.16) & (y < 0.16) & (x > 0.02) & (y > 0.02)
    elif where == "lungs":
        from ..lungs import TEMPLATE

        m = (x - (0.5 - TEMPLATE.dx)) ** 2 + (y - TEMPLATE.cy) ** 2 < 0.07 ** 2
    else:
        raise ValueError(f"where must be 'outside' or 'lungs', not {where!r}")
    img[m] = 255
    return img


def write_marker_folder(root, where: str, counts: dict[str, int] | None = None, size: int = 48,
                        seed: int = 0) -> Path:
    """``root/{train,test}/{Marked,Plain}/*.png``; ``counts`` = images per class per split."""
    from PIL import Image

    counts = counts or {"train": 40, "test": 20}
    root = Path(root)
    for s, (split, n) in enumerate(sorted(counts.items())):
        for k, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = marker_image(cls == "Marked", where, size, np.random.default_rng([seed, s, k, i]))
                out = d / f"{split}-{i:04d}.png"
                tmp = out.with_name(out.name + ".part")
                Image.fromarray(img).save(tmp, "PNG")
                os.replace(tmp, out)
    return root
