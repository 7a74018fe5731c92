"""Interval, McNemar, pairing and aggregation functions against known values."""
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from statsmodels.stats.proportion import proportion_confint

from cxrviz.format import fmt_p
from cxrviz.metrics import (
    aggregate,
    evaluate_predictions,
    interval_width,
    mcnemar_exact,
    mcnemar_reading,
    paired_correctness,
    wilson_interval,
)


def _wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_wilson_60_of_66_known_value():
    lo, hi = wilson_interval(60, 66)
    assert lo == pytest.approx(0.8156, abs=1e-4)
    assert hi == pytest.approx(0.9577, abs=1e-4)
    hl, hh = _wilson_by_hand(60, 66)
    assert (lo, hi) == pytest.approx((hl, hh), abs=1e-12)
    sl, sh = proportion_confint(60, 66, alpha=0.05, method="wilson")
    assert (lo, hi) == pytest.approx((sl, sh), abs=1e-12)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 3), (53, 66), (59, 66)])
def test_wilson_edges_and_others_match_hand_formula(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    assert (lo, hi) == pytest.approx(_wilson_by_hand(k, n), abs=1e-9)


def test_wilson_empty_is_nan_and_level_widens():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    lo90, hi90 = wilson_interval(60, 66, 0.90)
    lo95, hi95 = wilson_interval(60, 66)
    assert lo95 < lo90 and hi90 < hi95


def test_interval_width_at_deck_accuracy():
    lo, hi, w = interval_width(0.909, 66)  # 0.909 * 66 = 60 images
    assert (lo, hi) == pytest.approx((0.8156, 0.9577), abs=1e-4)
    assert w == pytest.approx(hi - lo)


def _pairs(b: int, c: int, both: int = 10, neither: int = 2):
    a = [True] * b + [False] * c + [True] * both + [False] * neither
    bb = [False] * b + [True] * c + [True] * both + [False] * neither
    return a, bb


def test_mcnemar_exact_known_values():
    r = mcnemar_exact(*_pairs(1, 4))
    assert r == {"a_only": 1, "b_only": 4, "disagree": 5, "p_value": pytest.approx(0.375)}
    assert r["p_value"] == pytest.approx(binomtest(1, 5, 0.5).pvalue)
    r0 = mcnemar_exact(*_pairs(0, 0))
    assert r0["disagree"] == 0 and r0["p_value"] == 1.0
    # symmetric in the order of the runs
    assert mcnemar_exact(*reversed(_pairs(1, 4)))["p_value"] == pytest.approx(0.375)
    # a lopsided disagreement is significant: 2 * 0.5**10
    assert mcnemar_exact(*_pairs(0, 10))["p_value"] == pytest.approx(2 * 0.5 ** 10)


def test_mcnemar_needs_same_length():
    with pytest.raises(ValueError):
        mcnemar_exact([True, False], [True])


def test_aggregate_known_values():
    a = aggregate([0.8, 0.9])
    assert a["n"] == 2
    assert a["mean"] == pytest.approx(0.85)
    assert a["sd"] == pytest.approx(0.0707, abs=1e-4)
    assert (a["min"], a["max"]) == (0.8, 0.9)
    one = aggregate([0.7])
    assert one["sd"] == 0.0 and one["mean"] == 0.7
    assert aggregate([]) ["n"] == 0 and math.isnan(aggregate([math.nan])["mean"])
    assert aggregate([0.8, math.nan, 0.9])["mean"] == pytest.approx(0.85)


def _pred(paths, labels, predicted, k=3):
    probs = np.full((len(paths), k), 0.1)
    probs[np.arange(len(paths)), predicted] = 0.8
    return {"paths": list(paths), "labels": list(labels), "probs": probs.tolist()}


def test_paired_correctness_aligns_by_path_and_refuses_other_test_sets():
    paths = ["t/a.png", "t/b.png", "t/c.png", "t/d.png"]
    labels = [0, 1, 2, 0]
    a = _pred(paths, labels, [0, 1, 0, 0])  # wrong on c
    # same images in another order; wrong on a
    order = [3, 2, 1, 0]
    b = _pred([paths[i] for i in order], [labels[i] for i in order], [0, 2, 1, 1])
    ca, cb = paired_correctness(a, b)
    assert ca.tolist() == [True, True, False, True]
    assert cb.tolist() == [False, True, True, True]
    other = _pred(["u/a.png", "t/b.png", "t/c.png", "t/d.png"], labels, [0, 1, 2, 0])
    assert paired_correctness(a, other) is None
    assert paired_correctness(a, _pred(paths[:3], labels[:3], [0, 1, 2])) is None
    relabelled = _pred(paths, [1, 1, 2, 0], [0, 1, 2, 0])
    assert paired_correctness(a, relabelled) is None
    assert paired_correctness(a, {"paths": [], "labels": [], "probs": []}) is None


def test_mcnemar_readings_are_plain_language():
    r = {"a_only": 1, "b_only": 2, "disagree": 3, "p_value": 1.0}
    s = mcnemar_reading("ResNet-18", "GoogLeNet", r)
    assert s.startswith("ResNet-18 vs GoogLeNet: they disagree on 3 images")
    assert "p = 1.00" in s and "no evidence that either is better" in s
    sig = mcnemar_reading("ResNet-18", "AlexNet", {"a_only": 10, "b_only": 0, "disagree": 10, "p_value": 0.00195})
    assert "evidence that ResNet-18 is better" in sig and "p = 0.002" in sig
    assert mcnemar_reading("A", "B", None) == "A vs B: not comparable: different test sets"
    same = {"a_only": 0, "b_only": 0, "disagree": 0, "p_value": 1.0}
    assert "agree on every image" in mcnemar_reading("A", "B", same)
    assert fmt_p(0.62) == "p = 0.62" and fmt_p(0.0001) == "p < 0.001"


def test_evaluate_predictions_interval_matches_counts():
    labels = [0] * 22 + [1] * 22 + [2] * 22
    pred = labels.copy()
    for i in range(6):  # 6 wrong -> 60 / 66
        pred[i] = 1
    probs = np.full((66, 3), 0.05)
    probs[np.arange(66), pred] = 0.9
    ev = evaluate_predictions(labels, probs, ["Covid", "Normal", "Viral Pneumonia"])
    assert ev["correct"] == 60 and ev["n"] == 66
    assert (ev["ci_low"], ev["ci_high"]) == pytest.approx((0.8156, 0.9577), abs=1e-4)
    assert ev["per_class"]["Covid"]["recall"] == pytest.approx(16 / 22)
