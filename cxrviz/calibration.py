"""Calibration: does a model's confidence match how often it is right?

Expected calibration error (ECE) with equal-width confidence bins on the top-class probability: the
size-weighted mean gap |accuracy - mean confidence| over the bins (Guo et al., 2017). The bins are also
the data of a reliability diagram (``cxrviz.plots.external.reliability``).
"""
from __future__ import annotations

import math

import numpy as np

N_BINS = 10


def calibration(probs, labels, n_bins: int = N_BINS) -> dict:
    """``{"ece", "n", "mean_confidence", "accuracy", "bins": [{lo, hi, n, confidence, accuracy}]}`` for
    probabilities [N, C] and true labels [N]; empty bins are left out."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"expected probabilities [N, C] and N labels, got {p.shape} and {y.shape}")
    n = len(y)
    if n == 0:
        return {"ece": math.nan, "n": 0, "mean_confidence": math.nan, "accuracy": math.nan, "bins": []}
    conf = p.max(1)
    right = (p.argmax(1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        k = int(m.sum())
        if not k:
            continue
        c, a = float(conf[m].mean()), float(right[m].mean())
        ece += k / n * abs(a - c)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": k, "confidence": c, "accuracy": a})
    return {"ece": float(ece), "n": n, "mean_confidence": float(conf.mean()), "accuracy": float(right.mean()),
            "bins": bins}


def run_test_calibration(run) -> dict | None:
    """Calibration on the run's own test split, from its stored predictions (no model needed)."""
    pr = run.predictions
    if not pr or not pr.get("probs"):
        return None
    return calibration(pr["probs"], pr["labels"])
