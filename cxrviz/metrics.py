"""Evaluation metrics: accuracy with a Wilson interval, per-class metrics, ROC-AUC, McNemar, seed
aggregation. Built on scikit-learn and statsmodels rather than hand-written formulas."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score, roc_curve
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (as fractions)."""
    if n <= 0:
        return (math.nan, math.nan)
    lo, hi = proportion_confint(int(correct), int(n), alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


def evaluate_predictions(labels: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Everything the app shows about one run's test predictions. ``probs``: [N, C] probabilities."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred = p.argmax(1)
    n, k = len(y), len(classes)
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, n)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    out = {
        "n": n, "correct": correct, "accuracy": correct / n if n else math.nan, "ci_low": lo, "ci_high": hi,
        "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                          "support": int(sup[i])} for i, c in enumerate(classes)},
        "confusion": confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        "roc_auc": roc_auc_ovr(y, p, classes),
    }
    return out


def roc_auc_ovr(y: np.ndarray, p: np.ndarray, classes: Sequence[str]) -> dict:
    """One-vs-rest ROC-AUC per class and macro; NaN where a class is absent from the labels."""
    res: dict = {}
    for i, c in enumerate(classes):
        pos = (y == i)
        res[c] = float(roc_auc_score(pos, p[:, i])) if 0 < pos.sum() < len(y) else math.nan
    vals = [v for v in res.values() if not math.isnan(v)]
    res["macro"] = float(np.mean(vals)) if vals else math.nan
    return res


def roc_curves(labels: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict[str, dict]:
    y = np.asarray(labels)
    p = np.asarray(probs)
    out = {}
    for i, c in enumerate(classes):
        pos = y == i
        if 0 < pos.sum() < len(y):
            fpr, tpr, _ = roc_curve(pos, p[:, i])
            out[c] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(pos, p[:, i]))}
    return out


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact (binomial) McNemar test on paired correctness over the same test images.
    b = A right & B wrong, c = A wrong & B right; p is two-sided."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs the same test images for both runs")
    n01 = int((a & ~b_).sum())
    n10 = int((~a & b_).sum())
    table = [[int((a & b_).sum()), n01], [n10, int((~a & ~b_).sum())]]
    p = 1.0 if n01 + n10 == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"a_only": n01, "b_only": n10, "disagree": n01 + n10, "p_value": p}


def aggregate(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, min and max over seeds."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}
