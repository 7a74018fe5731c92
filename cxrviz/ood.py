"""Is an upload like the training images? A warning instead of a confident-looking verdict when it is not.

Training-image statistics (per run, stored with it as the record ``train-stats``; computed from the run's
training split through the decode-once cache the first time they are needed, so train.py is unchanged):

* the aspect ratios (width / height) and the shorter sides of the original files (headers only);
* the mean 32-bin intensity histogram of the images at the run's input size, and each training image's L1
  distance to it (its 99th percentile is the "still like the training images" limit).

An upload gets a warning when its aspect ratio is outside the training range widened 1.5x, its shorter
side is under a quarter of the smallest training image's, its histogram is farther from the training mean
than :data:`HIST_MARGIN` times the 99th-percentile training distance, or when the models disagree widely
(the most common verdict has at most half of the votes, with 3 or more models).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .runs import Run, read_record, write_record

BINS = 32
HIST_MARGIN = 1.5
ASPECT_MARGIN = 1.5
STATS_KEY = "train-stats"


def histogram(gray: np.ndarray) -> np.ndarray:
    h = np.bincount((np.asarray(gray, dtype=np.uint8) // (256 // BINS)).ravel(), minlength=BINS).astype(np.float64)
    return h / max(1.0, h.sum())


def compute_train_stats(run: Run) -> dict:
    from .data import image_size_stats, load_split, open_dataset

    src = open_dataset(run.meta["dataset"].get("root"))
    train = load_split(src, "train", int(run.config["img_size"]))
    hists = np.stack([histogram(x[0].numpy()) for x in train.images])
    mean = hists.mean(0)
    dist = np.abs(hists - mean).sum(1)
    sizes = image_size_stats(src)
    aspects = [r["width"] / r["height"] for r in sizes if r["split"] == "train" and r["height"]] or [1.0]
    short = [min(r["width"], r["height"]) for r in sizes if r["split"] == "train"] or [int(run.config["img_size"])]
    return {"kind": "train-stats", "run": run.id, "n": len(train), "hist_mean": mean.tolist(),
            "hist_p99": float(np.percentile(dist, 99)), "aspect_min": float(min(aspects)),
            "aspect_max": float(max(aspects)), "short_side_min": int(min(short))}


def train_stats(run: Run) -> dict:
    """The run's training-image statistics: stored record, or computed now and stored."""
    rec = read_record(run, STATS_KEY)
    if rec and "hist_mean" in rec:
        return rec
    rec = compute_train_stats(run)
    try:
        write_record(run, STATS_KEY, rec)
    except OSError:
        pass  # a read-only runs folder only costs recomputing next time
    return rec


def unlike_training(gray: np.ndarray, size: int, stats: dict) -> list[str]:
    """Reasons why one decoded upload (uint8 [H, W], original size) is unlike a run's training images."""
    from .data import resize_square

    h, w = np.asarray(gray).shape[:2]
    out = []
    aspect = w / max(1, h)
    lo, hi = stats["aspect_min"] / ASPECT_MARGIN, stats["aspect_max"] * ASPECT_MARGIN
    if not lo <= aspect <= hi:
        out.append(f"its shape ({w}×{h} px, aspect {aspect:.2g}) is far from the training images' "
                   f"(aspect {stats['aspect_min']:.2f}–{stats['aspect_max']:.2f})")
    if min(w, h) < stats["short_side_min"] / 4:
        out.append(f"it is much smaller ({min(w, h)} px on its short side) than any training image "
                   f"(at least {stats['short_side_min']} px)")
    d = float(np.abs(histogram(resize_square(gray, size)) - np.asarray(stats["hist_mean"])).sum())
    if d > HIST_MARGIN * stats["hist_p99"]:
        out.append(f"its brightness histogram is far from the training images' (distance {d:.2f}; "
                   f"99 % of training images are within {stats['hist_p99']:.2f})")
    return out


def disagreement(preds) -> str | None:
    if len(preds) < 3:
        return None
    votes = Counter(p.predicted for p in preds)
    cls, n = votes.most_common(1)[0]
    if n * 2 <= len(preds):
        return f"the models disagree widely (the most common answer, {cls}, has {n} of {len(preds)} votes)"
    return None


def assess(image, runs: list[Run], preds=None, stats_loader=train_stats) -> list[str]:
    """Plain-language warnings for an upload (an ImageInput or a uint8 array); empty when it looks like the
    training images of every run and the models agree. A run whose statistics cannot be computed (its
    dataset is gone) is skipped."""
    from .errors import CxrvizError

    reasons: list[str] = []
    for r in runs:
        try:
            stats = stats_loader(r)
        except (CxrvizError, ValueError, OSError):
            continue
        from .predict import gray_for

        gray = gray_for(image, r)
        for why in unlike_training(gray, int(r.config["img_size"]), stats):
            if why not in reasons:
                reasons.append(why)
    if preds:
        d = disagreement(preds)
        if d:
            reasons.append(d)
    return reasons


def warning_text(reasons: list[str]) -> str:
    return ("This image is unlike the images these models were trained on, so their answers say little: "
            + "; ".join(reasons) + ".")
