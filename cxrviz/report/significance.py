"""Paired significance between runs: short unique run labels and exact McNemar tests on shared test images."""
from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

import numpy as np
import pandas as pd

from ..metrics import mcnemar_exact, mcnemar_reading, paired_correctness
from ..runs import Run, RunError


def unique_labels(runs: list[Run]) -> list[str]:
    """Short, unique names for runs: "ResNet-18 s0", adding image size / run id only where needed."""
    base = [f"{r.meta['display']} s{r.config['seed']}" for r in runs]
    counts = Counter(base)
    base = [b if counts[b] == 1 else f"{r.meta['display']} {r.config['img_size']}px e{r.config['epochs']} "
            f"s{r.config['seed']}" for b, r in zip(base, runs)]
    counts = Counter(base)
    return [b if counts[b] == 1 else f"{b} ({r.id[-4:]})" for b, r in zip(base, runs)]


def _predictions(r: Run) -> dict | None:
    try:
        p = r.predictions
    except RunError:
        return None
    return p if p and p.get("paths") else None


def significance(runs: list[Run], alpha: float = 0.05) -> dict:
    """Pairwise exact McNemar tests between runs, only where both were evaluated on the same test images.

    Returns {"labels", "p" (DataFrame of p-values, NaN where not comparable, 1 on the diagonal),
    "disagree" (DataFrame of counts), "pairs": [{a, b, comparable, a_only, b_only, disagree, p_value,
    reading}]}."""
    labels = unique_labels(runs)
    preds = [_predictions(r) for r in runs]
    n = len(runs)
    p = pd.DataFrame(np.full((n, n), np.nan), index=labels, columns=labels)
    dis = pd.DataFrame(np.full((n, n), np.nan), index=labels, columns=labels)
    pairs = []
    for i in range(n):
        if preds[i] is not None:
            p.iloc[i, i], dis.iloc[i, i] = 1.0, 0
    for i, j in combinations(range(n), 2):
        la, lb = labels[i], labels[j]
        paired = paired_correctness(preds[i], preds[j]) if preds[i] is not None and preds[j] is not None else None
        if paired is None:
            why = "no stored test predictions" if preds[i] is None or preds[j] is None else None
            reading = mcnemar_reading(la, lb, None)
            if why:
                reading = f"{la} vs {lb}: not comparable: {why}"
            pairs.append({"a": la, "b": lb, "comparable": False, "a_only": None, "b_only": None,
                          "disagree": None, "p_value": math.nan, "reading": reading})
            continue
        res = mcnemar_exact(*paired)
        p.iloc[i, j] = p.iloc[j, i] = res["p_value"]
        dis.iloc[i, j] = dis.iloc[j, i] = res["disagree"]
        pairs.append({"a": la, "b": lb, "comparable": True, **res, "reading": mcnemar_reading(la, lb, res, alpha)})
    return {"labels": labels, "p": p, "disagree": dis, "pairs": pairs}
