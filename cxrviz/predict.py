"""Predicting one radiograph with stored runs, each with exactly the preprocessing it was trained with."""
from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.decode import resize_square
from .errors import message
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


_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.RLock:
    """One lock per loaded model. A cached model is shared by every session of the app; Grad-CAM
    temporarily registers hooks on it, so predictions and CAMs on the same model take turns."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def fast_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Channels-last weights for a loaded (cached) model: oneDNN's CPU convolutions are 1.3-2x faster on
    NHWC than on NCHW at 224 px. Idempotent; call with the model's lock held."""
    if not getattr(model, "_cxrviz_nhwc", False):
        model.to(memory_format=torch.channels_last)
        model._cxrviz_nhwc = True
    return model


def nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def prediction_from_logits(run: Run, logits: torch.Tensor, ms: float) -> Prediction:
    p = torch.softmax(logits.detach().float().reshape(1, -1), 1)[0].tolist()
    k = int(np.argmax(p))
    return Prediction(run.id, run.label, run.arch, run.classes, p, run.classes[k], p[k], ms)


def predict_with_model(gray: np.ndarray, run: Run, model, pre) -> Prediction:
    x = nhwc(pre(input_tensor(gray, run)))
    with model_lock(model):
        fast_inference(model)
        t = time.perf_counter()
        with torch.no_grad():
            logits = model(x)
        ms = (time.perf_counter() - t) * 1000
    return prediction_from_logits(run, logits, ms)


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


# ------------------------------------------------------------------ inputs and per-run error handling
SYNTHETIC_VIEW_SIZE = 256  # synthetic test images are rendered at this size for viewing and predicting
VIEW_SIZE = 448  # decoded size (at least) for display and CAM overlays


def view_image(gray: np.ndarray, max_side: int = VIEW_SIZE) -> np.ndarray:
    """The image to show: longest side at most ``max_side`` (aspect kept). A full-size 8000x8000 upload would
    otherwise be re-encoded and sent to the browser at 64 M pixels on every rerun."""
    from PIL import Image

    g = np.asarray(gray)
    h, w = g.shape[:2]
    if max(h, w) <= max_side:
        return g
    nh, nw = max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w)))
    return np.asarray(Image.fromarray(g).resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=2.0))


def _head(src) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:3])
    try:
        with open(src, "rb") as f:
            return f.read(3)
    except OSError:
        return b""


class ImageInput:
    """One radiograph to predict: uploaded bytes, a file, or an array (synthetic set).

    ``gray(size)`` decodes it the way training decoded images for a run of input size ``size``
    (``decode_image(..., draft_size=size)``: JPEGs are DCT-downscaled to at least ``size`` px) and keeps
    each result, so every run sees exactly its training pipeline; ``gray()`` is the view for display.
    Construction decodes once, so a bad file raises ImageDecodeError (one line) right away."""

    def __init__(self, data: bytes | None = None, name: str = "upload", path: str | Path | None = None,
                 array: np.ndarray | None = None, true_class: str | None = None) -> None:
        from .data import decode_image

        self.name, self.path, self.data, self.true_class = name, path, data, true_class
        self._by_size: dict[int | None, np.ndarray] = {}
        if array is not None:
            a = np.asarray(array)
            if a.ndim != 2 or a.dtype != np.uint8:
                raise ValueError(f"{name}: expected a 2-D uint8 image, got {a.dtype} {a.shape}")
            self._by_size[None] = a
        else:
            if data is None and path is None:
                raise ValueError("ImageInput needs data, a path or an array")
            src = data if data is not None else path
            self._jpeg = _head(src) == b"\xff\xd8\xff"
            self._decode = lambda draft: decode_image(src, name=name, draft_size=draft)
            self._by_size[VIEW_SIZE if self._jpeg else None] = self._decode(VIEW_SIZE)

    def gray(self, size: int | None = None) -> np.ndarray:
        if None in self._by_size:  # not a JPEG (or an array): one decode serves every size
            return self._by_size[None]
        key = VIEW_SIZE if size is None else int(size)
        if key not in self._by_size:
            self._by_size[key] = self._decode(key)
        return self._by_size[key]

    @property
    def shape(self) -> tuple[int, int]:
        return self.gray().shape


def gray_for(image, run: Run) -> np.ndarray:
    """The decoded image for one run: an ImageInput's decode at the run's size, or a plain array."""
    return image.gray(int(run.config["img_size"])) if isinstance(image, ImageInput) else image


def predict_runs(image, runs: list[Run], model_loader=None) -> tuple[list[Prediction], list[tuple[Run, str]]]:
    """Like ``predict_image`` (``image``: an ImageInput or a decoded uint8 array), but a run that cannot be
    used (corrupt weights, deleted meanwhile) is reported as (run, one-line reason) instead of stopping the
    others."""
    from .runs import RunError

    loader = model_loader or (lambda r: load_model(r))
    preds, errors = [], []
    for r in runs:
        try:
            model, pre = loader(r)
            preds.append(predict_with_model(gray_for(image, r), r, model, pre))
        except (RunError, RuntimeError, ValueError, OSError) as e:
            errors.append((r, message(e, 300)))
    return preds, errors


def list_test_images(source) -> list[tuple[str, str]]:
    """(name, true class) of every test image of a dataset (``cxrviz.data.DatasetSource``)."""
    from .data import load_split

    if source.synthetic:
        s = load_split(source, "test", SYNTHETIC_VIEW_SIZE)
        return [(p, s.classes[int(y)]) for p, y in zip(s.paths, s.labels.tolist())]
    root = source.root
    out = []
    for p, y in source.files.get("test", []):
        try:
            name = str(Path(p).relative_to(root / "test"))
        except ValueError:
            name = Path(p).name
        out.append((name, source.classes[y]))
    return out


def get_test_image(source, index: int) -> ImageInput:
    """Test image ``index`` of a dataset; raises ImageDecodeError (one line) if unreadable."""
    from .data import load_split

    if source.synthetic:
        s = load_split(source, "test", SYNTHETIC_VIEW_SIZE)
        return ImageInput(name=s.paths[index], array=s.images[index, 0].numpy(),
                          true_class=s.classes[int(s.labels[index])])
    p, y = source.files["test"][index]
    return ImageInput(path=p, name=Path(p).name, true_class=source.classes[y])


def stored_test_image(path: str, true_class: str | None = None) -> ImageInput:
    """A test image named in a run's predictions: a file path, or a synthetic set name such as
    ``synthetic/test/Covid/0003``. Raises ImageDecodeError (one line) if it cannot be read."""
    from .data import ImageDecodeError, load_split, synthetic_source

    parts = str(path).split("/")
    if parts[0] == "synthetic" and len(parts) == 4 and not Path(path).exists():
        try:
            s = load_split(synthetic_source(), parts[1], SYNTHETIC_VIEW_SIZE)
            return ImageInput(name=str(path), array=s.images[int(parts[3]), 0].numpy(), true_class=true_class)
        except (ValueError, IndexError):
            raise ImageDecodeError(f"{path}: not an image of the built-in synthetic set") from None
    return ImageInput(path=path, name=Path(path).name, true_class=true_class)
