"""External scores already stored with runs: the latest record of each run (optionally for one folder's
fingerprint), as the internal-vs-external rows of the Leaderboard and the Seminar view."""
from __future__ import annotations

from .external import format_ci
from .runs import Run, list_records, read_record


def latest_records(runs: list[Run], fingerprint: str | None = None) -> list[dict]:
    """For each run, its external record for ``fingerprint``, or (None) its most recently written one."""
    out = []
    for r in runs:
        rec = read_record(r, fingerprint) if fingerprint else (list_records(r, "external") or [None])[-1]
        if rec and rec.get("kind") == "external":
            out.append(rec)
    return out


def side_by_side(records: list[dict]) -> list[dict]:
    """Internal (the run's test split) and external accuracy side by side, with both intervals and the drop."""
    rows = []
    for rec in records:
        i, e = rec["internal"], rec["external"]
        rows.append({"run": rec["run"], "model": rec["display"], "external data": rec["data"]["root"],
                     "internal acc": 100 * i["accuracy"], "internal 95 % CI": format_ci(i),
                     "external acc": 100 * e["accuracy"], "external 95 % CI": format_ci(e),
                     "drop (points)": 100 * rec["drop"], "external n": e["n"],
                     "external majority": 100 * e["majority"]["accuracy"]})
    return rows
