"""Evaluation metrics: accuracy with a Wilson interval, per-class metrics, ROC-AUC, McNemar, seed
aggregation. Built on scikit-learn and statsmodels rather than hand-written formulas."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score, roc_curve
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from .format import fmt_p


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (as fractions)."""
    if n <= 0:
        return (math.nan, math.nan)
    lo, hi = proportion_confint(int(correct), int(n), alpha=1 - confidence, method="wilson")
    # exact at the edges (the formula gives 1 - 1e-16 for correct == n)
    return (0.0 if correct == 0 else float(lo)), (1.0 if correct == n else float(hi))


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


def per_source(labels: Sequence[int], pred: Sequence[int], sources: Sequence[str],
               classes: Sequence[str]) -> dict[str, dict]:
    """Accuracy (Wilson interval) of the images of each source: {source: {n, correct, accuracy, ci_low,
    ci_high, classes}} (``sources``: the source name of every image, as stored with a run's predictions)."""
    y, pr, srcs = np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64), np.asarray(sources)
    out = {}
    for s in sorted(set(srcs.tolist())):
        m = srcs == s
        k, n = int((pr[m] == y[m]).sum()), int(m.sum())
        lo, hi = wilson_interval(k, n)
        out[s] = {"n": n, "correct": k, "accuracy": k / n, "ci_low": lo, "ci_high": hi,
                  "classes": sorted({classes[c] for c in y[m].tolist()})}
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


def paired_correctness(pred_a: dict, pred_b: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-image correctness of two runs' stored test predictions ({paths, labels, probs}), aligned by image
    path. ``None`` when the runs were not evaluated on the same test images (different path sets, duplicate
    paths, or labels that disagree for the same image), so no paired test is possible."""
    pa, pb = list(pred_a.get("paths") or []), list(pred_b.get("paths") or [])
    if not pa or len(pa) != len(pb) or len(set(pa)) != len(pa) or set(pa) != set(pb):
        return None
    ya, yb = np.asarray(pred_a["labels"]), np.asarray(pred_b["labels"])
    qa, qb = np.asarray(pred_a["probs"]), np.asarray(pred_b["probs"])
    if (qa.ndim != 2 or qb.ndim != 2 or len(qa) != len(pa) or len(qb) != len(pb) or len(ya) != len(pa)
            or len(yb) != len(pb)):
        return None
    order = {p: i for i, p in enumerate(pb)}
    idx = np.asarray([order[p] for p in pa])
    yb, qb = yb[idx], qb[idx]
    if not np.array_equal(ya, yb):
        return None
    return qa.argmax(1) == ya, qb.argmax(1) == yb


def mcnemar_reading(name_a: str, name_b: str, res: dict | None, alpha: float = 0.05) -> str:
    """A plain-language sentence for one exact McNemar result (``res`` from :func:`mcnemar_exact`);
    ``res=None`` means the runs were not evaluated on the same images."""
    head = f"{name_a} vs {name_b}: "
    if res is None:
        return head + "not comparable: different test sets"
    d, a, b, p = res["disagree"], res["a_only"], res["b_only"], res["p_value"]
    if d == 0:
        return head + f"they agree on every image, {fmt_p(p)} — no evidence that either is better"
    detail = (f"they disagree on {d} image{'s' if d != 1 else ''} "
              f"({name_a} alone right on {a}, {name_b} alone right on {b}), {fmt_p(p)}")
    if p < alpha:
        better = name_a if a > b else name_b
        return head + detail + f" — evidence that {better} is better on these test images"
    return head + detail + " — no evidence that either is better"


def interval_width(accuracy: float, n: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, width) of the Wilson interval at an observed accuracy over n images (fractions)."""
    lo, hi = wilson_interval(round(accuracy * n), n, confidence)
    return lo, hi, hi - lo
