"""Finding and validating a dataset, and loading a split as cached uint8 tensors.

A dataset is an ImageFolder-style tree: ``train/`` and ``test/`` (or ``val/``), each with one folder per
class. The Kaggle "Covid19 Image Dataset" layout works as is. With no path, the built-in synthetic set
is used. Several folders can be merged into one dataset, each a named source (see :mod:`.sources`). Each
original is decoded once, by every core (see :mod:`cxrviz.data.cache`); a split larger than the RAM budget
is a memory-mapped file.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import CxrvizError
from . import synthetic
from .cache import ImageCache, SplitArrays, decode_items, default_cache, ram_budget

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")

Progress = Callable[[int, int], None]


class DatasetError(CxrvizError):
    """A dataset folder that cannot be used; the message says which folder and what is wrong."""


@dataclass
class DatasetSource:
    name: str
    root: Path | None  # None for the built-in synthetic set
    classes: list[str]
    files: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)  # split -> [(path, label)]
    ignored: list[str] = field(default_factory=list)  # junk that was skipped (hidden files, notes, ...)
    split_dirs: dict[str, str] = field(default_factory=dict)  # "test" -> "val" when the tree says val/
    origins: dict[str, list[str]] = field(default_factory=dict)  # split -> source name of each file (multi-source)
    sources: list[dict] = field(default_factory=list)  # multi-source: name, path, kind, classes, split, fingerprint
    warnings: list[str] = field(default_factory=list)  # e.g. a class that comes from one source only
    spec: str | None = None  # the dataset spec that reopens this dataset (None: ``root`` alone does)

    @property
    def synthetic(self) -> bool:
        return self.root is None and not self.sources

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

    def source_names(self, split: str) -> list[str]:
        """The source of every file of a split (one name for a single-folder dataset)."""
        if self.origins.get(split):
            return self.origins[split]
        return [self.name] * len(self.files.get(split, []))

    def source_counts(self) -> list[dict]:
        """Rows {source, split, class, n}: counts per class x source x split."""
        if self.synthetic:
            return [{"source": self.name, "split": s, "class": c, "n": n}
                    for s, per in self.counts().items() for c, n in per.items()]
        tally: dict[tuple[str, str, str], int] = {}
        for split, items in self.files.items():
            for (_, y), o in zip(items, self.source_names(split)):
                k = (o, split, self.classes[y])
                tally[k] = tally.get(k, 0) + 1
        return [{"source": o, "split": s, "class": c, "n": n} for (o, s, c), n in sorted(tally.items())]

    def describe(self) -> dict:
        d = {"name": self.name, "root": str(self.root) if self.root else None, "synthetic": self.synthetic,
             "classes": self.classes, "counts": self.counts()}
        if self.sources:  # multi-source: every folder with a fingerprint of its files, and per-source counts
            d.update(spec=self.spec, sources=self.sources, source_counts=self.source_counts(),
                     warnings=self.warnings)
        return d


def synthetic_source() -> DatasetSource:
    return DatasetSource(name=synthetic.SYNTHETIC_NAME, root=None, classes=list(synthetic.CLASSES))


def is_junk(p: Path) -> bool:
    return p.name.startswith(".") or p.name.lower() in JUNK_NAMES


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not is_junk(d))


def _find_root(root: Path) -> Path:
    """Accept the dataset folder itself, or a folder holding exactly one such folder (a fresh unzip)."""
    if (root / "train").is_dir():
        return root
    subs = [d for d in root.iterdir() if d.is_dir() and not is_junk(d)]
    if len(subs) == 1 and (subs[0] / "train").is_dir():
        return subs[0]
    return root


def open_dataset(path=None, add=None, split_fraction: float | None = None, seed: int = 0) -> DatasetSource:
    """Validate a dataset and return it (the synthetic set for ``None``/empty). Raises DatasetError.

    ``path`` is a folder, a list of folders, or a dataset spec (see :mod:`.sources`: what ``TrainConfig.data``
    stores); ``add`` is a list of ``"CLASS=PATH[:SPLIT]"`` or (class, path, split) single-class folders from
    other sources; ``split_fraction`` the test share of an added folder with no split (seeded by ``seed``)."""
    from .sources import DEFAULT_SPLIT_FRACTION, dataset_spec, open_sources, parse_spec

    if add or isinstance(path, (list, tuple)):
        path = dataset_spec(path, add, split_fraction or DEFAULT_SPLIT_FRACTION, seed)
    spec = parse_spec(path)
    if spec is not None:
        if len(spec["data"]) == 1 and not spec["add"]:
            return open_folder(spec["data"][0])
        return open_sources(spec)
    if path is None or str(path).strip() == "":
        return synthetic_source()
    return open_folder(path)


def open_folder(path: str | os.PathLike) -> DatasetSource:
    """One ImageFolder tree."""
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
            folder = root / dirname / c
            with os.scandir(folder) as it:  # the entry's type comes with the listing: no stat per file
                entries = sorted((e.name, e.is_dir()) for e in it)
            for name, is_dir in entries:
                f = folder / name
                if is_dir or is_junk(f) or f.suffix.lower() not in IMAGE_EXTS:
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
    sources: list[str] = field(default_factory=list)  # the source of every image (default: one, "dataset")
    mapped: bool = False  # images are a memory-mapped file on disk (the split is larger than the RAM budget)

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = ["dataset"] * len(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def mean_std(self, chunk: int = 2048) -> tuple[float, float]:
        """Mean and (unbiased) standard deviation of the pixels in [0, 1], read in chunks (a memory-mapped
        split is never loaded whole)."""
        n, s, s2 = 0, 0.0, 0.0
        for i in range(0, len(self.images), chunk):
            x = self.images[i:i + chunk].to(torch.float64).div_(255)
            n, s, s2 = n + x.numel(), s + float(x.sum()), s2 + float((x * x).sum())
        if n == 0:
            return 0.0, 1e-3
        mean = s / n
        var = max(0.0, (s2 - n * mean * mean) / max(1, n - 1))
        return float(mean), max(float(np.sqrt(var)), 1e-3)


_SPLIT_MEMO: dict[tuple, ImageSet] = {}


def forget_splits(split: str | None = None, size: int | None = None) -> None:
    """Drop the decoded splits this process holds in memory (all of them, or those of one split name and/or
    size), so the next :func:`load_split` reads its cache again. For benchmarks that time a cold load."""
    for k in [k for k in _SPLIT_MEMO if (split is None or k[1] == split) and (size is None or k[2] == size)]:
        del _SPLIT_MEMO[k]


def load_split(source: DatasetSource, split: str, size: int, *, progress: Progress | None = None,
               cache: ImageCache | None = None, workers: int | None = None,
               ram_budget_bytes: int | None = None) -> ImageSet:
    """Decode (once, on every core) and resize every image of a split. Unreadable files are skipped and listed
    in ``errors``; a split left with no image at all, or a source with no readable image, raises DatasetError.
    A split larger than the RAM budget (``CXRVIZ_RAM_BUDGET``) is a memory-mapped file on disk."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    if source.synthetic:
        key = ("synthetic", split, size)
        if key not in _SPLIT_MEMO:
            imgs, labels = synthetic.make_split(split, size)
            names = [f"synthetic/{split}/{source.classes[y]}/{i:04d}" for i, y in enumerate(labels.tolist())]
            _SPLIT_MEMO[key] = ImageSet(torch.from_numpy(imgs).unsqueeze(1), torch.from_numpy(labels), names,
                                        list(source.classes), size, sources=[source.name] * len(names))
        if progress:
            progress(len(_SPLIT_MEMO[key]), len(_SPLIT_MEMO[key]))
        return _SPLIT_MEMO[key]

    cache = cache or default_cache()
    budget = ram_budget() if ram_budget_bytes is None else ram_budget_bytes
    items = source.files[split]
    origins = source.source_names(split)
    stamp = tuple((str(p), *_stat(p)) for p, _ in items)
    key = (source.spec or str(source.root), split, size, hash(stamp), id(cache), budget)
    if key in _SPLIT_MEMO:
        if progress:
            progress(len(items), len(items))
        return _SPLIT_MEMO[key]

    def check(keep: list[int], errs: list[tuple[int, str]]) -> None:  # before anything is stored
        if not keep:
            where = f"{source.root}" if not source.sources else source.name
            raise DatasetError(f"{where}: no readable image in {split}/ ({len(errs)} unreadable)")
        if source.sources:
            kept = {origins[i] for i in keep}
            for name in dict.fromkeys(origins):
                if name not in kept:
                    raise DatasetError(f"source {name}: no readable image in {split}/ "
                                       f"({sum(o == name for o in origins)} unreadable)")

    arrays: SplitArrays = decode_items([p for p, _ in items], size, stamp, cache=cache, workers=workers,
                                       progress=progress, ram_budget_bytes=budget, check=check)
    keep = arrays.keep
    errors = [f"{display_path(source, items[i][0])}: {err.split(': ', 1)[-1]}" for i, err in arrays.errors]
    images = torch.from_numpy(arrays.images).unsqueeze(1)
    labels = torch.tensor([items[i][1] for i in keep], dtype=torch.int64)
    paths = [display_path(source, items[i][0]) for i in keep]
    out = ImageSet(images, labels, paths, list(source.classes), size, errors, sources=[origins[i] for i in keep],
                   mapped=arrays.mapped)
    if len(_SPLIT_MEMO) > 16:
        _SPLIT_MEMO.pop(next(iter(_SPLIT_MEMO)))
    _SPLIT_MEMO[key] = out
    return out


def display_path(source: DatasetSource, p: Path) -> str:
    """Relative to the dataset folder (as runs store it); absolute for a file of another source."""
    try:
        return str(p.relative_to(source.root))
    except (ValueError, TypeError):
        return str(p)


def _stat(p: Path) -> tuple[int, int]:
    try:
        st = p.stat()
        return st.st_mtime_ns, st.st_size
    except OSError:
        return 0, 0


def image_size_stats(source: DatasetSource, cache: ImageCache | None = None) -> list[dict]:
    """Original width/height/mode of every file (headers only, no full decode) for the Overview page; stored
    per state of the files, so a reopen reads no image."""
    from .scan import cached_scan

    if source.synthetic:
        return []
    return cached_scan(source, "sizes", lambda: _size_rows(source), cache)


def _size_rows(source: DatasetSource) -> list[dict]:
    from PIL import Image

    rows = []
    for split, items in source.files.items():
        for (p, y), o in zip(items, source.source_names(split)):
            try:
                with Image.open(p) as im:
                    rows.append({"split": split, "class": source.classes[y], "source": o, "width": im.width,
                                 "height": im.height, "mode": im.mode, "file": p.name})
            except Exception:  # DICOM or unreadable: not part of the size statistics
                continue
    return rows


from .duplicates import find_duplicates  # noqa: F401, E402  (kept importable from here)
