"""Exports of any table: CSV, Markdown, LaTeX (booktabs) and JSON."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd


def export(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "md":
        return df.to_markdown(index=False) + "\n" if _has_tabulate() else _markdown(df)
    if fmt == "latex":
        return _latex(df)
    if fmt == "json":
        return df.to_json(orient="records", indent=2)
    raise ValueError(f"unknown format {fmt!r}; choose md, csv, latex or json")


EXPORT_MIME = {"csv": "text/csv", "md": "text/markdown", "latex": "application/x-tex", "json": "application/json"}
EXPORT_EXT = {"csv": "csv", "md": "md", "latex": "tex", "json": "json"}


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def _cell(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{v:g}"
    return str(v)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "–": "--",
              "±": r"$\pm$"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESC.get(ch, ch) for ch in s)


def _latex(df: pd.DataFrame) -> str:
    """A booktabs table (no jinja2 needed): numeric columns right-aligned."""
    buf = io.StringIO()
    cols = [str(c) for c in df.columns]
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) else "l"
                    for c in df.columns)
    buf.write("\\begin{tabular}{" + align + "}\n\\toprule\n")
    buf.write(" & ".join(_tex(c) for c in cols) + " \\\\\n\\midrule\n")
    for row in df.itertuples(index=False):
        buf.write(" & ".join(_tex(_cell(v)) for v in row) + " \\\\\n")
    buf.write("\\bottomrule\n\\end{tabular}\n")
    return buf.getvalue()
