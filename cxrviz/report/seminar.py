"""The seminar view: the deck's four models next to cxrviz's own runs, and the caveats that go with them."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..format import fmt_ci, fmt_mean_sd, fmt_pct, isnan
from ..metrics import interval_width
from ..runs import Run
from .deck import DECK, DECK_N_TEST
from .tables import groups_frame


def _representative_group(g: pd.DataFrame) -> pd.Series:
    """Of one architecture's seed groups, the one the seminar table reports: most seeds, then most epochs,
    then the largest image size."""
    return g.sort_values(["seeds", "epochs", "img_size"], ascending=False).iloc[0]


def seminar_frame(runs: list[Run]) -> pd.DataFrame:
    """One row per architecture (the deck's four first, then the rest): cxrviz's figure (mean ± sd over the
    seeds of its most-seeded configuration) next to the deck's reported figure."""
    g = groups_frame(runs)
    rows = []
    archs = list(DECK)
    if not g.empty:
        others = set(g["arch"]) - set(DECK)
        archs += sorted(others, key=lambda a: -np.nan_to_num(g[g["arch"] == a]["accuracy"].max()))
    for arch in archs:
        sub = g[g["arch"] == arch] if not g.empty else g
        deck = DECK.get(arch)
        row = {"arch": arch, "model": deck["display"] if deck else None, "deck_acc": deck["acc"] if deck else math.nan,
               "deck_time_min": deck["time_min"] if deck else math.nan,
               "accuracy": math.nan, "accuracy_sd": math.nan, "seeds": 0, "ci_low": math.nan, "ci_high": math.nan,
               "train_min": math.nan, "device": None, "img_size": None, "epochs": None, "n_test": None}
        if not sub.empty:
            b = _representative_group(sub)
            n = int(b["n_test"]) if not isnan(b["n_test"]) else 0
            lo, hi, _ = interval_width(b["accuracy"], n) if n and not isnan(b["accuracy"]) else (math.nan,) * 3
            row.update({"model": b["model"], "accuracy": b["accuracy"], "accuracy_sd": b["accuracy_sd"],
                        "seeds": int(b["seeds"]), "ci_low": lo, "ci_high": hi, "train_min": b["train_min"],
                        "device": b["device"], "img_size": int(b["img_size"]), "epochs": int(b["epochs"]),
                        "n_test": n})
        rows.append(row)
    return pd.DataFrame(rows)


def seminar_table(runs: list[Run]) -> pd.DataFrame:
    """The projected table: deck figure and cxrviz figure side by side, formatted. Deck times are on a
    Colab GPU (``DECK_DEVICE``); cxrviz times name their device."""
    s = seminar_frame(runs)
    out = pd.DataFrame({
        "model": s["model"],
        "deck acc": s["deck_acc"].map(fmt_pct),
        "cxrviz acc": [("not run yet" if n == 0 else fmt_mean_sd(a, sd, n) + " %")
                       for a, sd, n in zip(s["accuracy"], s["accuracy_sd"], s["seeds"])],
        "95 % CI": [fmt_ci(lo, hi) for lo, hi in zip(s["ci_low"], s["ci_high"])],
        "seeds": s["seeds"],
        "deck time": [("–" if isnan(t) else f"{t:.2f} min") for t in s["deck_time_min"]],
        "cxrviz time": [("–" if isnan(t) else f"{t:.2f} min" + (f" ({d})" if d else ""))
                        for t, d in zip(s["train_min"], s["device"])],
        "setting": [("–" if n == 0 else f"{int(i)} px, {int(e)} epochs")
                    for n, i, e in zip(s["seeds"], s["img_size"], s["epochs"])],
    })
    return out


def caveats(n_test: int | None, accuracy: float | None = None, synthetic: bool = False) -> list[str]:
    """Short Markdown caveats for the seminar view: test-set size, interval width, dataset bias."""
    out = []
    n = n_test or DECK_N_TEST
    acc = accuracy if accuracy is not None and not isnan(accuracy) else DECK["resnet18"]["acc"]
    lo, hi, w = interval_width(acc, n)
    out.append(f"**Small test set.** The test split has {n} images: one image is {100 / n:.1f} points of accuracy. "
               f"At {fmt_pct(acc)} the 95 % Wilson interval is {fmt_ci(lo, hi)} % — {100 * w:.1f} points wide, "
               f"wider than most gaps in the table.")
    out.append("**Single runs are noisy.** Another seed moves a model by a few points; rank on mean ± sd over seeds "
               "and on paired tests (McNemar on the same images), not on one number.")
    if synthetic:
        out.append("**Synthetic data.** These runs used the built-in synthetic phantoms, not chest X-rays; "
                   "their numbers say nothing about the real task.")
    else:
        out.append("**Known dataset bias.** The Normal and Viral Pneumonia images come from a paediatric collection, "
                   "the COVID images from adults: a model can separate the classes by age- and source-related "
                   "shortcuts (body size, bone shape, image format, markers) rather than by lung findings. "
                   "High accuracy here is not evidence of clinical usefulness.")
    return out
