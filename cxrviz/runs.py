"""Run storage: one folder per run under ``checkpoints/``.

    checkpoints/<run-id>/run.json           config, dataset, evaluation, timings, environment, status
                        /history.json       per-epoch metrics and per-batch losses
                        /predictions.json   per-image test probabilities and sources (paired tests, galleries)
                        /weights.safetensors

A run is written into a hidden temp folder and renamed into place, so a half-written run is never
listed. Weights are safetensors (no pickle); a legacy ``weights.pt`` is read with ``weights_only=True``.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CxrvizError
from .models import get_spec
from .models.registry import UnknownArchitecture

FORMAT_VERSION = 1
CHECKPOINTS_ENV = "CXRVIZ_CHECKPOINTS"
REQUIRED = ("run.json", "history.json", "predictions.json")
PREPROCESSING_FLAGS = ("clahe", "standardize", "lung_crop")  # TrainConfig options added later: off when missing


class RunError(CxrvizError):
    """A run that cannot be read or used; the message names the run and what is wrong."""


def default_root() -> Path:
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "checkpoints"


@dataclass
class Run:
    id: str
    path: Path
    meta: dict  # run.json
    _history: dict | None = field(default=None, repr=False)
    _predictions: dict | None = field(default=None, repr=False)

    @property
    def config(self) -> dict:
        """The run's TrainConfig as stored; a preprocessing flag an older run lacks was off."""
        return {**dict.fromkeys(PREPROCESSING_FLAGS, False), **self.meta["config"]}

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def status(self) -> str:
        return self.meta.get("status", "done")

    @property
    def evaluation(self) -> dict | None:
        return self.meta.get("evaluation")

    @property
    def accuracy(self) -> float:
        ev = self.evaluation
        return ev["accuracy"] if ev else math.nan

    @property
    def classes(self) -> list[str]:
        return self.meta["dataset"]["classes"]

    @property
    def history(self) -> dict:
        if self._history is None:
            self._history = _read_json(self.path / "history.json", self.id)
        return self._history

    @property
    def predictions(self) -> dict:
        if self._predictions is None:
            self._predictions = _read_json(self.path / "predictions.json", self.id)
        return self._predictions

    @property
    def group_key(self) -> str:
        """Runs that differ only in seed share this key (a seed group)."""
        c = {k: v for k, v in self.config.items() if k not in ("seed", "device")}
        c["dataset"] = self.meta["dataset"].get("root") or "synthetic"
        return json.dumps(c, sort_keys=True)

    @property
    def label(self) -> str:
        c = self.config
        return f"{self.meta['display']} {c['img_size']}px e{c['epochs']} s{c['seed']}"


def _read_json(path: Path, run_id: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"run {run_id}: {path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise RunError(f"run {run_id}: {path.name} is unreadable ({e})") from None


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _dump(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, default=_json_default, allow_nan=True))


def new_run_id(arch: str, img_size: int, seed: int) -> str:
    return f"{arch}-{img_size}px-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def save_run(result, root: str | os.PathLike | None = None, run_id: str | None = None) -> Run:
    """Store a TrainResult atomically and return the stored Run."""
    root = Path(root) if root else default_root()
    root.mkdir(parents=True, exist_ok=True)
    c = result.config
    spec = get_spec(c["arch"])
    run_id = run_id or new_run_id(spec.name, c["img_size"], c["seed"])
    meta = {
        "format_version": FORMAT_VERSION, "id": run_id, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "status": result.status, "arch": spec.name, "display": spec.display, "family": spec.family,
        "depth": spec.depth, "params": sum(v.numel() for k, v in result.state_dict.items()
                                           if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))),
        "config": c, "dataset": result.dataset, "norm": result.norm, "timings": result.timings,
        "environment": result.environment, "evaluation": result.evaluation,
        "epochs_done": len(result.history),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{run_id}-", dir=root))
    try:
        save_file(result.state_dict, str(tmp / "weights.safetensors"), metadata={"arch": spec.name})
        _dump({"history": result.history, "batch_losses": result.batch_losses}, tmp / "history.json")
        _dump(result.predictions or {}, tmp / "predictions.json")
        _dump(meta, tmp / "run.json")  # written last: its presence marks a complete folder
        final = root / run_id
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(run_id, final, meta)


def read_run(path: Path) -> Run:
    if not path.is_dir():
        raise RunError(f"run {path.name}: not found")
    missing = [f for f in REQUIRED if not (path / f).exists()]
    if not ((path / "weights.safetensors").exists() or (path / "weights.pt").exists()):
        missing.append("weights.safetensors")
    if missing:
        raise RunError(f"run {path.name}: incomplete or foreign folder (missing {', '.join(missing)})")
    meta = _read_json(path / "run.json", path.name)
    if not isinstance(meta, dict) or "config" not in meta or "dataset" not in meta:
        raise RunError(f"run {path.name}: run.json is not a cxrviz run description")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise RunError(f"run {path.name}: written by a newer cxrviz (format {meta['format_version']})")
    try:
        get_spec(meta["config"]["arch"])
    except (UnknownArchitecture, KeyError, TypeError):
        raise RunError(f"run {path.name}: unknown architecture {meta['config'].get('arch')!r}") from None
    return Run(path.name, path, meta)


STALE_TMP_S = 3600.0  # a temp folder untouched this long is a crashed write (a real save takes seconds)


def cleanup_stale(root: str | os.PathLike | None = None, max_age_s: float = STALE_TMP_S) -> list[str]:
    """Remove what a killed process left behind: ``.tmp-*`` folders (a save cut short) whose newest entry is
    older than ``max_age_s`` (a younger one may be another process saving right now) and ``.del-*`` folders
    (a deletion cut short; already invisible, so removed at any age). Returns the names removed."""
    root = Path(root) if root else default_root()
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    now = time.time()
    for d in entries:
        if not d.name.startswith((".tmp-", ".del-")) or d.is_symlink() or not d.is_dir():
            continue
        if d.name.startswith(".tmp-"):
            try:
                newest = max([d.stat().st_mtime] + [f.stat().st_mtime for f in d.iterdir()])
            except OSError:
                continue
            if now - newest < max_age_s:
                continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d.name)
    return removed


def list_runs(root: str | os.PathLike | None = None) -> tuple[list[Run], list[tuple[str, str]]]:
    """All readable runs (newest first) and, separately, (folder, reason) for each unreadable one.
    Hidden folders (temp writes, deletions in progress) are never listed; stale ones are removed
    (:func:`cleanup_stale`)."""
    root = Path(root) if root else default_root()
    runs, problems = [], []
    if not root.is_dir():
        return runs, problems
    cleanup_stale(root)
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            runs.append(read_run(d))
        except RunError as e:
            problems.append((d.name, str(e).split(": ", 1)[-1]))
    runs.sort(key=lambda r: r.meta.get("created", ""), reverse=True)
    return runs, problems


def get_run(run_id: str, root: str | os.PathLike | None = None) -> Run:
    p = Path(run_id)
    if p.is_dir() and (p / "run.json").exists():
        return read_run(p)
    root = Path(root) if root else default_root()
    if not (root / run_id).is_dir():
        matches = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(run_id)] if root.is_dir() else []
        if len(matches) == 1:
            return read_run(matches[0])
        raise RunError(f"run {run_id}: not found in {root}" + (" (ambiguous prefix)" if matches else ""))
    return read_run(root / run_id)


def delete_run(run: Run | str, root: str | os.PathLike | None = None) -> None:
    """Remove a run: renamed to a hidden name first (so it vanishes from listings at once), then deleted."""
    path = run.path if isinstance(run, Run) else (Path(root) if root else default_root()) / run
    if not path.is_dir():
        raise RunError(f"run {path.name}: not found")
    trash = path.parent / f".del-{path.name}-{secrets.token_hex(2)}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def load_state_dict(run: Run) -> dict[str, torch.Tensor]:
    st = run.path / "weights.safetensors"
    try:
        if st.exists():
            return load_file(str(st))
        # legacy/hand-made checkpoints: tensors only, never arbitrary pickled objects
        sd = torch.load(run.path / "weights.pt", map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as e:
        raise RunError(f"run {run.id}: weights file is corrupt or unsafe ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # weights_only refusal raises UnpicklingError, among others
        raise RunError(f"run {run.id}: refused to load weights ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else 'unsafe content'})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RunError(f"run {run.id}: weights file does not hold a plain state dict")
    return sd


def load_model(run: Run, device: str | torch.device = "cpu"):
    """Build the run's architecture, load and verify its weights; returns (model in eval mode, Preprocess)."""
    from .train import Preprocess

    c = run.config
    spec = get_spec(c["arch"])
    model = spec.build(num_classes=len(run.classes), in_channels=c.get("in_channels", 1))
    sd = load_state_dict(run)
    result = None
    try:
        result = model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        msg = str(e)
        exp = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in sd.items()}
        missing = len(set(exp) - set(got))
        extra = len(set(got) - set(exp))
        shape = [k for k in set(exp) & set(got) if exp[k] != got[k]]
        detail = f"{missing} missing, {extra} unexpected tensors" + (f", shape mismatch at {shape[0]}" if shape else "")
        raise RunError(f"run {run.id}: weights do not fit {spec.display} ({detail})") from None if msg else None
    del result
    model.eval().to(device)
    return model, Preprocess.from_norm(run.meta.get("norm", {}), c.get("in_channels", 1))


# ------------------------------------------------------------------ records stored with a run
RECORDS_DIR = "external"  # checkpoints/<run>/external/<key>.json: external scores, probes, training stats


def _record_key(key: str) -> str:
    if not key or not all(ch.isalnum() or ch in "-_." for ch in key) or key.startswith("."):
        raise RunError(f"record key {key!r}: only letters, digits, '-', '_' and '.'")
    return key


def write_record(run: Run, key: str, obj: dict) -> Path:
    """Store one record (an external dataset's scores, probe results, ...) inside the run folder, atomically:
    written to a temp file in the same folder, then renamed over ``external/<key>.json``."""
    d = run.path / RECORDS_DIR
    d.mkdir(exist_ok=True)
    final = d / f"{_record_key(key)}.json"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(obj, default=_json_default, allow_nan=True))
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def read_record(run: Run, key: str) -> dict | None:
    """One stored record, or None when absent or unreadable (a record is a cache of a measurement)."""
    f = run.path / RECORDS_DIR / f"{_record_key(key)}.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        return None


def list_records(run: Run, kind: str | None = None) -> list[dict]:
    """Every readable record of a run (optionally only those whose ``kind`` matches), oldest first."""
    d = run.path / RECORDS_DIR
    if not d.is_dir():
        return []
    out = []
    for f in sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime):
        if f.name.startswith("."):
            continue
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and (kind is None or rec.get("kind") == kind):
            out.append(rec)
    return out
