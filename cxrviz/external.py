"""External validation: score stored runs on a folder of radiographs from other sources.

An external folder holds one sub-folder per class (all of it is the external test set), or a ``test/``
(or ``val/``) folder with them (then only that split is used). Class folder names are matched to the run's
classes case-insensitively, or through an explicit map (``"COVID-19=Covid,No finding=Normal"``); a class
the run does not know is a one-line :class:`ExternalError` naming it.

Sources (per-source accuracy): images inside a sub-folder of a class folder belong to the source named by
that sub-folder (``Covid/figure1/a.jpg`` -> source ``figure1``); a ``sources.csv`` (columns ``path,source``,
paths relative to the folder) names them explicitly and wins. Images with no source are ``unnamed``.

Images are decoded through the same decode-once cache as training (``cxrviz.data.load_split``), so the run
sees exactly its training pipeline. The result of :func:`score_run` is a plain dict, stored with the run
(``runs.write_record``) under the folder's fingerprint.
"""
from __future__ import annotations

import csv
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .calibration import calibration
from .data import DatasetSource, ImageCache, default_cache, load_split
from .data.dataset import IMAGE_EXTS, TEST_SPLIT_NAMES
from .errors import CxrvizError
from .metrics import per_source, roc_auc_ovr, wilson_interval
from .runs import Run, load_model

UNNAMED = "unnamed"
SOURCES_CSV = "sources.csv"
Progress = Callable[[int, int], None]


class ExternalError(CxrvizError):
    """An external folder or class mapping that cannot be used."""


@dataclass
class ExternalSet:
    """An external folder resolved against one list of run classes."""

    root: Path  # the folder holding the class folders
    folder_classes: list[str]  # class folder names as on disk
    mapping: dict[str, str]  # folder class -> run class
    classes: list[str]  # the run's classes (labels index these)
    files: list[tuple[Path, int]]
    sources: dict[str, str] = field(default_factory=dict)  # relative path -> source
    fingerprint: str = ""

    @property
    def present(self) -> list[str]:
        """Run classes present in the folder, in the run's order."""
        ys = {y for _, y in self.files}
        return [c for i, c in enumerate(self.classes) if i in ys]

    def describe(self) -> dict:
        return {"root": str(self.root), "fingerprint": self.fingerprint, "n_files": len(self.files),
                "mapping": self.mapping, "classes_present": self.present,
                "sources": sorted(set(self.sources.values())) if self.sources else []}


def parse_map(text: str | None) -> dict[str, str]:
    """``"COVID-19=Covid, No finding=Normal"`` -> {"COVID-19": "Covid", "No finding": "Normal"}."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ExternalError(f"class map entry {part.strip()!r} is not FOLDER=CLASS "
                                "(example: \"COVID-19=Covid,No finding=Normal\")")
        k, v = (s.strip() for s in part.split("=", 1))
        if not k or not v:
            raise ExternalError(f"class map entry {part.strip()!r} has an empty side")
        out[k] = v
    return out


def _junk(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower() in {"thumbs.db", "desktop.ini", "__macosx"}


def _images(d: Path) -> list[Path]:
    out = []
    for f in sorted(d.rglob("*")):
        rel = f.relative_to(d)
        if any(_junk(Path(part)) for part in rel.parts) or not f.is_file():
            continue
        if f.suffix.lower() in IMAGE_EXTS:
            out.append(f)
    return out


def class_root(folder: str | os.PathLike) -> Path:
    """The folder holding the class folders: ``folder/test`` (or val/) when present, else ``folder``."""
    root = Path(os.path.expanduser(str(folder).strip()))
    if not str(folder).strip():
        raise ExternalError("no external folder given")
    if not root.is_dir():
        raise ExternalError(f"{root}: external folder not found" if not root.exists() else f"{root}: not a folder")
    split = next((root / n for n in TEST_SPLIT_NAMES if (root / n).is_dir()), None)
    return split or root


def folder_classes(folder: str | os.PathLike) -> list[str]:
    """The class folder names of an external folder (for a mapping widget)."""
    root = class_root(folder)
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not _junk(d))


def resolve_classes(names: list[str], run_classes: list[str], mapping: dict[str, str]) -> dict[str, str]:
    """Folder class -> run class: the explicit map first, then a case-insensitive match."""
    lower = {c.lower(): c for c in run_classes}
    unknown_keys = [k for k in mapping if k.lower() not in {n.lower() for n in names}]
    if unknown_keys:
        raise ExternalError(f"class map names folder {unknown_keys[0]!r}, which is not in the external folder "
                            f"(folders: {', '.join(names)})")
    out = {}
    for n in names:
        target = next((v for k, v in mapping.items() if k.lower() == n.lower()), n)
        if target.lower() not in lower:
            raise ExternalError(f"external class {n!r}" + (f" (mapped to {target!r})" if target != n else "")
                                + f" is not a class of the run ({', '.join(run_classes)}); "
                                  "map it with --map \"FOLDER=CLASS\" or leave it out")
        out[n] = lower[target.lower()]
    return out


def _read_sources(root: Path, top: Path) -> dict[str, str]:
    f = top / SOURCES_CSV
    if not f.is_file():
        return {}
    try:
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ExternalError(f"{f}: unreadable ({e})") from None
    if rows and not {"path", "source"} <= set(rows[0]):
        raise ExternalError(f"{f}: needs the columns path,source")
    return {str(Path(r["path"].strip())): r["source"].strip() or UNNAMED for r in rows if r.get("path")}


def fingerprint(files: list[Path], root: Path, cache: ImageCache | None = None) -> str:
    """Sorted relative paths, sizes and content hashes -> 16 hex digits (same files = same key)."""
    cache = cache or default_cache()
    h = hashlib.sha1()
    for f in sorted(files, key=lambda p: str(p.relative_to(root))):
        h.update(f"{f.relative_to(root)}\0{f.stat().st_size}\0{cache.content_hash(f)}\n".encode())
    return h.hexdigest()[:16]


def open_external(folder: str | os.PathLike, run_classes: list[str], mapping: dict[str, str] | str | None = None,
                  cache: ImageCache | None = None) -> ExternalSet:
    """Validate an external folder against a run's classes. Raises ExternalError (one line)."""
    top = Path(os.path.expanduser(str(folder).strip()))
    root = class_root(folder)
    mapping = parse_map(mapping) if isinstance(mapping, str) or mapping is None else dict(mapping)
    names = folder_classes(folder)
    if not names:
        raise ExternalError(f"{root}: no class folders (expected e.g. Covid/ and Normal/ with images inside)")
    resolved = resolve_classes(names, list(run_classes), mapping)
    explicit = _read_sources(root, top)
    files: list[tuple[Path, int]] = []
    sources: dict[str, str] = {}
    for n in names:
        imgs = _images(root / n)
        if not imgs:
            raise ExternalError(f"{root / n}: class folder {n!r} has no images")
        y = run_classes.index(resolved[n])
        for f in imgs:
            files.append((f, y))
            rel = f.relative_to(root)
            sub = f.relative_to(root / n).parts
            src = explicit.get(str(rel)) or explicit.get(str(f.relative_to(top))) or (sub[0] if len(sub) > 1 else None)
            if src:
                sources[str(rel)] = src
    if sources:
        for f, _ in files:
            sources.setdefault(str(f.relative_to(root)), UNNAMED)
    ext = ExternalSet(root, names, resolved, list(run_classes), files, sources)
    try:
        ext.fingerprint = fingerprint([f for f, _ in files], root, cache)
    except OSError as e:
        raise ExternalError(f"{root}: cannot read a file ({e})") from None
    return ext


def load_images(ext: ExternalSet, size: int, progress: Progress | None = None, cache: ImageCache | None = None):
    """Decode (once, cached) and resize every image: a ``cxrviz.data.ImageSet`` whose labels index the run's
    classes and whose paths are relative to ``ext.root``."""
    src = DatasetSource(name=ext.root.name, root=ext.root, classes=ext.classes, files={"test": ext.files})
    return load_split(src, "test", int(size), progress=progress, cache=cache)


# ---------------------------------------------------------------- metrics
def balanced_accuracy(y: np.ndarray, pred: np.ndarray, present: list[int], draws: int = 4000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean per-class recall over the classes present, and a 95 % interval: each class's recall gets a Jeffreys
    posterior Beta(k + 1/2, n - k + 1/2); the interval is the 2.5-97.5 % range of the mean of draws from them
    (seeded, so the same data give the same interval). Unlike a bootstrap it is not zero-width when a
    recall is 0 or 1 (a model that calls everything "Covid")."""
    if not present:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    recalls, sims = [], []
    for c in present:
        m = y == c
        n, k = int(m.sum()), int((pred[m] == c).sum())
        recalls.append(k / n)
        sims.append(rng.beta(k + 0.5, n - k + 0.5, size=draws))
    mean = np.mean(sims, axis=0)
    return float(np.mean(recalls)), float(np.quantile(mean, 0.025)), float(np.quantile(mean, 0.975))


def summarize(labels, probs: np.ndarray, classes: list[str], sources: list[str] | None = None) -> dict:
    """Every external metric of one run from its labels [N] and probabilities [N, C] (all run classes)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    pred = p.argmax(1)
    n = len(y)
    present = sorted(set(y.tolist()))
    correct = int((pred == y).sum())
    lo, hi = wilson_interval(correct, n)
    bal, blo, bhi = balanced_accuracy(y, pred, present)
    counts = np.bincount(y, minlength=len(classes))
    maj = int(counts.argmax())
    conf = np.zeros((len(present), len(classes)), dtype=int)
    for r, c in enumerate(present):
        conf[r] = np.bincount(pred[y == c], minlength=len(classes))
    auc = roc_auc_ovr(y, p, classes)
    out = {
        "n": n, "correct": correct, "accuracy": correct / n if n else math.nan, "ci_low": lo, "ci_high": hi,
        "balanced_accuracy": bal, "bal_ci_low": blo, "bal_ci_high": bhi,
        "recall": {classes[c]: float((pred[y == c] == c).mean()) for c in present},
        "support": {classes[c]: int(counts[c]) for c in present},
        "roc_auc": {classes[c]: auc[classes[c]] for c in present if not math.isnan(auc[classes[c]])},
        "confusion": conf.tolist(), "confusion_rows": [classes[c] for c in present], "confusion_cols": list(classes),
        "predicted": {c: int((pred == i).sum()) for i, c in enumerate(classes)},
        "majority": {"class": classes[maj], "accuracy": float(counts[maj] / n) if n else math.nan},
        "calibration": calibration(p, y),
    }
    if sources:
        out["per_source"] = per_source(y, pred, sources, classes)
    return out


def internal_of(run: Run) -> dict:
    """The run's own test-split accuracy and interval (from run.json)."""
    ev = run.evaluation or {}
    return {"accuracy": ev.get("accuracy", math.nan), "ci_low": ev.get("ci_low", math.nan),
            "ci_high": ev.get("ci_high", math.nan), "n": ev.get("n", 0)}


def score_run(run: Run, folder: str | os.PathLike, mapping: dict[str, str] | str | None = None, *,
              model_loader=None, progress: Progress | None = None, cache: ImageCache | None = None,
              store: bool = True) -> dict:
    """Score one stored run on an external folder; stored with the run (``store``) and returned."""
    from .runs import write_record
    from .train import predict_probs

    ext = open_external(folder, run.classes, mapping, cache)
    images = load_images(ext, int(run.config["img_size"]), progress, cache)
    model, pre = (model_loader or load_model)(run)
    from .predict import model_lock

    with model_lock(model):
        probs = predict_probs(model, images.images, pre, torch.device("cpu")).numpy()
    sources = [ext.sources.get(pth, UNNAMED) for pth in images.paths] if ext.sources else None
    rec = {"kind": "external", "run": run.id, "arch": run.arch, "display": run.meta.get("display", run.arch),
           "label": run.label, "img_size": int(run.config["img_size"]), "data": ext.describe(),
           "internal": internal_of(run), "skipped": images.errors,
           "external": summarize(images.labels.numpy(), probs, run.classes, sources),
           "paths": images.paths, "labels": images.labels.tolist(), "probs": np.round(probs, 6).tolist()}
    rec["drop"] = rec["internal"]["accuracy"] - rec["external"]["accuracy"]
    if store:
        write_record(run, ext.fingerprint, rec)
    return rec


def score_runs(runs: list[Run], folder, mapping=None, *, model_loader=None,
               progress: Callable[[int, int, str], None] | None = None,
               store: bool = True) -> tuple[list[dict], list[tuple[Run, str]]]:
    """Score several runs; a run that cannot be used is (run, one-line reason) instead of stopping the others.
    ``progress(done, total, what)`` counts runs. Folder and mapping errors raise (they concern every run)."""
    from .errors import one_line
    from .runs import RunError

    out, failed = [], []
    for i, r in enumerate(runs):
        if progress:
            progress(i, len(runs), r.label)
        try:
            out.append(score_run(r, folder, mapping, model_loader=model_loader, store=store))
        except ExternalError:
            raise
        except (RunError, RuntimeError, OSError, ValueError) as e:
            failed.append((r, one_line(e)))
    if progress:
        progress(len(runs), len(runs), "done")
    return out, failed


def table_rows(records: list[dict]) -> list[dict]:
    """One flat row per scored run: internal vs external with both intervals and the drop (percent)."""
    rows = []
    for rec in records:
        e, i = rec["external"], rec["internal"]
        pred = ", ".join(f"{c} {k}" for c, k in e["predicted"].items() if k)
        rows.append({
            "run": rec["run"], "model": rec["display"],
            "internal acc": 100 * i["accuracy"], "internal CI": format_ci(i),
            "external acc": 100 * e["accuracy"], "external CI": format_ci(e),
            "drop (points)": 100 * rec["drop"],
            "balanced acc": 100 * e["balanced_accuracy"],
            "balanced CI": format_ci({"ci_low": e["bal_ci_low"], "ci_high": e["bal_ci_high"]}),
            "majority baseline": 100 * e["majority"]["accuracy"],
            "predicted": pred, "ECE": e["calibration"]["ece"], "n": e["n"],
            **{f"recall {c}": 100 * v for c, v in e["recall"].items()},
            **{f"AUC {c}": v for c, v in e["roc_auc"].items()},
        })
    return rows


def format_ci(d: dict) -> str:
    lo, hi = d.get("ci_low", math.nan), d.get("ci_high", math.nan)
    return "–" if lo is None or hi is None or math.isnan(lo) else f"{100 * lo:.1f}–{100 * hi:.1f}"
