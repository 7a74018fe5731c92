"""Every formatter of numbers for people: parameters, GFLOPs, durations, sizes, percentages, intervals,
mean ± sd and p-values. ``–`` stands for a missing value everywhere."""
from __future__ import annotations

import math

import numpy as np

MISSING = "–"


def isnan(x) -> bool:
    """None or a float NaN (numpy floats included)."""
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def format_params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def format_gflops(g: float) -> str:
    """Three significant digits: 19.6, 0.566, 0.00261."""
    return f"{g:.3g}" if g < 100 else f"{g:.0f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return MISSING
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def fmt_pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.909 -> "90.9 %"."""
    return MISSING if isnan(x) else f"{100 * x:.1f} %"


def fmt_ci(lo: float, hi: float) -> str:
    """An interval of fractions in percent: "81.6–95.8"."""
    return MISSING if isnan(lo) or isnan(hi) else f"{100 * lo:.1f}–{100 * hi:.1f}"


def fmt_mean_sd(mean: float, sd: float, n: int, pct: bool = True, digits: int = 1) -> str:
    """"90.9 ± 1.2" (the sd only for n > 1); fractions in percent unless ``pct=False``."""
    if isnan(mean):
        return MISSING
    k = 100 if pct else 1
    s = f"{k * mean:.{digits}f}"
    if n > 1 and not isnan(sd):
        s += f" ± {k * sd:.{digits}f}"
    return s


def fmt_p(p: float) -> str:
    """A p-value for a sentence: "p = 0.62", "p = 0.004", "p < 0.001"."""
    if p is None or math.isnan(p):
        return f"p = {MISSING}"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def short_p(p: float) -> str:
    """A p-value for a chart cell: "p<0.001", "p=0.004", "p=0.62"."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"
