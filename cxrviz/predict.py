"""Predicting one radiograph with stored runs, each with exactly the preprocessing it was trained with."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from .data.decode import resize_square
from .runs import Run, load_model


@dataclass
class Prediction:
    run_id: str
    label: str  # run label for display
    arch: str
    classes: list[str]
    probs: list[float]
    predicted: str
    confidence: float
    latency_ms: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def best_runs(runs: list[Run]) -> list[Run]:
    """The best finished run of each architecture (highest test accuracy, newest on ties)."""
    best: dict[str, Run] = {}
    for r in runs:
        if r.status != "done" or r.evaluation is None:
            continue
        cur = best.get(r.arch)
        if cur is None or r.accuracy > cur.accuracy:
            best[r.arch] = r
    return sorted(best.values(), key=lambda r: -r.accuracy)


def input_tensor(gray: np.ndarray, run: Run) -> torch.Tensor:
    """A decoded uint8 grayscale image -> the run's input size as uint8 [1,1,S,S]."""
    size = int(run.config["img_size"])
    return torch.from_numpy(resize_square(gray, size)).view(1, 1, size, size)


def predict_with_model(gray: np.ndarray, run: Run, model, pre) -> Prediction:
    x = pre(input_tensor(gray, run))
    t = time.perf_counter()
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), 1)[0]
    ms = (time.perf_counter() - t) * 1000
    p = probs.tolist()
    k = int(np.argmax(p))
    return Prediction(run.id, run.label, run.arch, run.classes, p, run.classes[k], p[k], ms)


def predict_image(gray: np.ndarray, runs: list[Run], model_loader=None) -> list[Prediction]:
    """Predict with every run. ``model_loader(run) -> (model, pre)`` lets the app reuse cached models."""
    loader = model_loader or (lambda r: load_model(r))
    out = []
    for r in runs:
        model, pre = loader(r)
        out.append(predict_with_model(gray, r, model, pre))
    return out


def agreement(preds: list[Prediction]) -> str:
    """One line such as "3 of 4 models say Covid"."""
    if not preds:
        return "no models"
    votes = Counter(p.predicted for p in preds)
    cls, n = votes.most_common(1)[0]
    if n == len(preds):
        return f"all {n} models say {cls}" if n > 1 else f"the model says {cls}"
    others = ", ".join(f"{m} {c}" for c, m in votes.most_common()[1:])
    return f"{n} of {len(preds)} models say {cls} ({others})"


class ModelCache:
    """Loaded models of stored runs, kept once per process (LRU) and released when a run is deleted.
    Models here are loaded copies: never the object a training job is updating."""

    def __init__(self, max_items: int = 16) -> None:
        import threading
        from collections import OrderedDict

        self.max_items = max_items
        self._items: "OrderedDict[tuple[str, float], tuple]" = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(run: Run) -> tuple[str, float]:
        try:
            return run.id, (run.path / "run.json").stat().st_mtime
        except OSError:
            return run.id, 0.0

    def get(self, run: Run):
        key = self._key(run)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = load_model(run)
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return loaded

    def release(self, run_id: str) -> None:
        with self._lock:
            for k in [k for k in self._items if k[0] == run_id]:
                del self._items[k]

    def ids(self) -> list[str]:
        with self._lock:
            return [k[0] for k in self._items]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
