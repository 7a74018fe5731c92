"""Finding and validating a dataset, and loading a split as cached uint8 tensors.

A dataset is an ImageFolder-style tree: ``train/`` and ``test/`` (or ``val/``), each with one folder per
class. The Kaggle "Covid19 Image Dataset" layout works as is. With no path, the built-in synthetic set
is used. Each original is decoded once (see :mod:`cxrviz.data.cache`).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import synthetic
from .cache import ImageCache, default_cache
from .decode import ImageDecodeError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")

Progress = Callable[[int, int], None]


class DatasetError(ValueError):
    """A dataset folder that cannot be used; the message says which folder and what is wrong."""


@dataclass
class DatasetSource:
    name: str
    root: Path | None  # None for the built-in synthetic set
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)  # split -> [(path, label)]
    ignored: list[str] = field(default_factory=list)  # junk that was skipped (hidden files, notes, ...)
    split_dirs: dict[str, str] = field(default_factory=dict)  # "test" -> "val" when the tree says val/

    @property
    def synthetic(self) -> bool:
        return self.root is None

    @property
    def label(self) -> str:
        return f"{self.name} (synthetic)" if self.synthetic else self.name

    def counts(self) -> dict[str, dict[str, int]]:
        if self.synthetic:
            return {s: {c: synthetic.DEFAULT_COUNTS[s] for c in self.classes} for s in ("train", "test")}
        out = {}
        for split, items in self.files.items():
            per = {c: 0 for c in self.classes}
            for _, y in items:
                per[self.classes[y]] += 1
            out[split] = per
        return out

    def describe(self) -> dict:
        return {"name": self.name, "root": str(self.root) if self.root else None, "synthetic": self.synthetic,
                "classes": self.classes, "counts": self.counts()}


def synthetic_source() -> DatasetSource:
    return DatasetSource(name=synthetic.SYNTHETIC_NAME, root=None, classes=list(synthetic.CLASSES))


def _is_junk(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower() in JUNK_NAMES


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not _is_junk(d))


def _find_root(root: Path) -> Path:
    """Accept the dataset folder itself, or a folder holding exactly one such folder (a fresh unzip)."""
    if (root / "train").is_dir():
        return root
    subs = [d for d in root.iterdir() if d.is_dir() and not _is_junk(d)]
    if len(subs) == 1 and (subs[0] / "train").is_dir():
        return subs[0]
    return root


def open_dataset(path: str | os.PathLike | None = None) -> DatasetSource:
    """Validate a dataset folder (or return the synthetic set for ``None``/empty). Raises DatasetError."""
    if path is None or str(path).strip() == "":
        return synthetic_source()
    root = Path(os.path.expanduser(str(path).strip()))
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected a folder with train/ and test/ inside)")
    root = _find_root(root)
    train = root / "train"
    if not train.is_dir():
        raise DatasetError(f"{root}: no train/ folder (expected train/ and test/ or val/, one sub-folder per class)")
    test_name = next((n for n in TEST_SPLIT_NAMES if (root / n).is_dir()), None)
    if test_name is None:
        raise DatasetError(f"{root}: no test/ (or val/) folder next to train/")
    classes = _class_dirs(train)
    if len(classes) < 2:
        raise DatasetError(f"{train}: needs at least two class folders, found {len(classes)}")
    test_classes = _class_dirs(root / test_name)
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DatasetError(f"{root}: train/ and {test_name}/ have different classes "
                           f"(only in train: {only_train or 'none'}; only in {test_name}: {only_test or 'none'})")
    src = DatasetSource(name=root.name, root=root, classes=classes, split_dirs={"test": test_name})
    for split, dirname in (("train", "train"), ("test", test_name)):
        items: list[tuple[Path, int]] = []
        for y, c in enumerate(classes):
            found = 0
            for f in sorted((root / dirname / c).iterdir()):
                if _is_junk(f) or f.is_dir() or f.suffix.lower() not in IMAGE_EXTS:
                    src.ignored.append(str(f.relative_to(root)))
                    continue
                items.append((f, y))
                found += 1
            if found == 0:
                raise DatasetError(f"{root / dirname / c}: class {c!r} has no images in {dirname}/")
        src.files[split] = items
    return src


@dataclass
class ImageSet:
    """One split, decoded and resized: uint8 images [N, 1, S, S] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    classes: list[str]
    size: int
    errors: list[str] = field(default_factory=list)  # "file: reason" for each unreadable file skipped

    def __len__(self) -> int:
        return len(self.labels)

    def mean_std(self) -> tuple[float, float]:
        x = self.images.float().div_(255)
        return float(x.mean()), float(x.std().clamp_min(1e-3))


_SPLIT_MEMO: dict[tuple, ImageSet] = {}


def load_split(source: DatasetSource, split: str, size: int, *, progress: Progress | None = None,
               cache: ImageCache | None = None) -> ImageSet:
    """Decode (once) and resize every image of a split. Unreadable files are skipped and listed in
    ``errors``; a split left with no image at all raises DatasetError."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if source.synthetic:
        key = ("synthetic", split, size)
        if key not in _SPLIT_MEMO:
            imgs, labels = synthetic.make_split(split, size)
            names = [f"synthetic/{split}/{source.classes[y]}/{i:04d}" for i, y in enumerate(labels.tolist())]
            _SPLIT_MEMO[key] = ImageSet(torch.from_numpy(imgs).unsqueeze(1), torch.from_numpy(labels), names,
                                        list(source.classes), size)
        if progress:
            progress(len(_SPLIT_MEMO[key]), len(_SPLIT_MEMO[key]))
        return _SPLIT_MEMO[key]

    cache = cache or default_cache()
    items = source.files[split]
    stamp = tuple((str(p), *_stat(p)) for p, _ in items)
    key = (str(source.root), split, size, hash(stamp))
    if key in _SPLIT_MEMO:
        if progress:
            progress(len(items), len(items))
        return _SPLIT_MEMO[key]

    results: list[np.ndarray | None] = [None] * len(items)
    errors: list[str] = []
    done = 0

    def work(i: int) -> tuple[int, np.ndarray | None, str | None]:
        path = items[i][0]
        try:
            return i, cache.get(path, size), None
        except ImageDecodeError as e:
            return i, None, str(e)
        except OSError as e:
            return i, None, f"{path.name}: cannot read file ({e.strerror or e})"

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for i, arr, err in pool.map(work, range(len(items))):
            results[i] = arr
            if err:
                errors.append(f"{items[i][0].relative_to(source.root)}: {err.split(': ', 1)[-1]}")
            done += 1
            if progress:
                progress(done, len(items))
    keep = [i for i, a in enumerate(results) if a is not None]
    if not keep:
        raise DatasetError(f"{source.root}: no readable image in {split}/ ({len(errors)} unreadable)")
    images = torch.from_numpy(np.stack([results[i] for i in keep])).unsqueeze(1)
    labels = torch.tensor([items[i][1] for i in keep], dtype=torch.int64)
    paths = [str(items[i][0].relative_to(source.root)) for i in keep]
    out = ImageSet(images, labels, paths, list(source.classes), size, errors)
    if len(_SPLIT_MEMO) > 16:
        _SPLIT_MEMO.pop(next(iter(_SPLIT_MEMO)))
    _SPLIT_MEMO[key] = out
    return out


def _stat(p: Path) -> tuple[int, int]:
    try:
        st = p.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, 0


def image_size_stats(source: DatasetSource) -> list[dict]:
    """Original width/height/mode of every file (headers only, no full decode) for the Overview page."""
    from PIL import Image

    rows = []
    if source.synthetic:
        return rows
    for split, items in source.files.items():
        for p, y in items:
            try:
                with Image.open(p) as im:
                    rows.append({"split": split, "class": source.classes[y], "width": im.width,
                                 "height": im.height, "mode": im.mode, "file": p.name})
            except Exception:  # DICOM or unreadable: not part of the size statistics
                continue
    return rows


def find_duplicates(source: DatasetSource, cache: ImageCache | None = None) -> dict:
    """Byte-identical files (same content hash). ``cross_split`` lists test images that are exact copies of
    training images: leakage that makes test accuracy optimistic (the Kaggle set has some)."""
    if source.synthetic:
        return {"groups": [], "cross_split": []}
    cache = cache or default_cache()
    by_hash: dict[str, list[tuple[str, str]]] = {}
    for split, items in source.files.items():
        for p, _ in items:
            try:
                h = cache.content_hash(p)
            except OSError:
                continue
            by_hash.setdefault(h, []).append((split, str(p.relative_to(source.root))))
    groups = [sorted(v) for v in by_hash.values() if len(v) > 1]
    # every test copy of a training image (a group can hold several)
    cross = [f for g in groups if {s for s, _ in g} == {"train", "test"} for s, f in g if s == "test"]
    return {"groups": groups, "cross_split": sorted(cross)}
