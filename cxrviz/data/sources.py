"""Multi-source datasets: several folders merged class by class, every image keeping its source's name.

A *dataset spec* says which folders make one dataset, and is what ``TrainConfig.data`` and the app store:

- ``None`` / ``""``: the built-in synthetic set; ``"/path/to/folder"``: one ImageFolder tree (as before);
- a JSON object (as a string or a dict) ``{"data": [paths], "add": [[class, path, split|null], ...],
  "split_fraction": 0.2, "seed": 0}``: complete ImageFolder trees (``data``) merged class by class, plus single
  class folders (``add``) from other sources. An added folder with no split is split into train/test by a
  seeded ``split_fraction`` (the test share) of its files.

:func:`dataset_spec` writes the canonical form (a plain path when there is one folder and nothing added), so a
run trained on one folder stores exactly what it stored before.
"""
from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np

DEFAULT_SPLIT_FRACTION = 0.2
SPLITS = ("train", "test")
_GENERIC_NAMES = {"images", "image", "imgs", "img", "png", "jpg", "jpeg", "data", "files", "all", "train", "test",
                  "val", "valid", "validation"}


def parse_add(text: str) -> tuple[str, str, str | None]:
    """``"CLASS=PATH[:SPLIT]"`` -> (class, path, split or None). Raises DatasetError on a malformed value."""
    from .dataset import DatasetError

    cls, eq, rest = str(text).partition("=")
    if not eq or not cls.strip() or not rest.strip():
        raise DatasetError(f"--add {text!r}: expected CLASS=PATH or CLASS=PATH:SPLIT (split: train or test)")
    split = None
    head, colon, tail = rest.rpartition(":")
    if colon and tail.strip().lower() in SPLITS:
        rest, split = head, tail.strip().lower()
    elif colon and tail.strip().lower() in ("val", "valid", "validation"):
        raise DatasetError(f"--add {text!r}: split must be train or test (a validation split is held out of train)")
    return cls.strip(), rest.strip(), split


def dataset_spec(data=None, add=None, split_fraction: float = DEFAULT_SPLIT_FRACTION, seed: int = 0) -> str | None:
    """The canonical, serialisable spec (a str, or None for the synthetic set) for ``open_dataset``.

    ``data``: a folder or a list of folders; ``add``: ``"CLASS=PATH[:SPLIT]"`` strings or (class, path, split)."""
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data or [])
    paths = [str(p).strip() for p in paths if p is not None and str(p).strip()]
    adds = [parse_add(a) if isinstance(a, str) else (str(a[0]), str(a[1]), a[2] if len(a) > 2 else None)
            for a in (add or [])]
    if not adds and len(paths) <= 1:
        return paths[0] if paths else None
    spec = {"data": paths, "add": [list(a) for a in adds]}
    if any(s is None for _, _, s in adds):
        spec["split_fraction"] = float(split_fraction)
        spec["seed"] = int(seed)
    return json.dumps(spec, sort_keys=True)


def parse_spec(spec) -> dict | None:
    """A spec (str path, JSON str, dict, list of paths) -> a dict, or None for a single path / synthetic set."""
    from .dataset import DatasetError

    if isinstance(spec, (list, tuple)):
        return {"data": [str(p) for p in spec], "add": []}
    if isinstance(spec, dict):
        d = spec
    elif isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            d = json.loads(spec)
        except json.JSONDecodeError as e:
            raise DatasetError(f"dataset spec is not valid JSON ({e.msg} at char {e.pos})") from None
    else:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("data", []), list) or not isinstance(d.get("add", []), list):
        raise DatasetError('dataset spec must look like {"data": [folders], "add": [[class, folder, split], ...]}')
    frac = float(d.get("split_fraction", DEFAULT_SPLIT_FRACTION))
    if not 0.0 < frac < 1.0:
        raise DatasetError(f"split fraction must be between 0 and 1 (the test share), not {frac}")
    adds = []
    for a in d.get("add", []):
        if isinstance(a, str):
            adds.append(parse_add(a))
        elif isinstance(a, (list, tuple)) and len(a) in (2, 3):
            split = a[2] if len(a) == 3 else None
            if split is not None and split not in SPLITS:
                raise DatasetError(f"added folder {a[1]}: split must be train or test, not {split!r}")
            adds.append((str(a[0]), str(a[1]), split))
        else:
            raise DatasetError(f"dataset spec: each added folder is [class, folder, split], not {a!r}")
    return {"data": [str(p) for p in d.get("data", [])], "add": adds, "split_fraction": frac,
            "seed": int(d.get("seed", 0))}


def _resolve(path: str) -> Path:
    return Path(os.path.expanduser(str(path).strip())).resolve()


def _source_name(folder: Path, classes: set[str]) -> str:
    """A readable name for an added folder: its own name, or its parent's when that says nothing
    (``openist-normal/images`` -> ``openist-normal``; ``other/Normal`` -> ``other``)."""
    for part in (folder, *folder.parents):
        if part.name and part.name.lower() not in _GENERIC_NAMES and part.name not in classes:
            return part.name
    return folder.name or str(folder)


def _split_files(files: list[Path], fraction: float, seed: int, cls: str) -> dict[str, list[Path]]:
    """Seeded split of one class folder (so the split is stratified by class and source)."""
    n = len(files)
    n_test = 0 if n < 2 else min(n - 1, max(1, round(n * fraction)))
    rng = np.random.default_rng([seed, zlib.crc32(cls.encode())])
    test_idx = set(rng.permutation(n)[:n_test].tolist())
    return {"train": [f for i, f in enumerate(files) if i not in test_idx],
            "test": [f for i, f in enumerate(files) if i in test_idx]}


def fingerprint(files: list[Path], base: Path) -> str:
    """sha1 of the sorted relative file names and byte sizes: cheap, and stable when a folder is copied."""
    h = hashlib.sha1()
    for f in sorted(files):
        try:
            size = f.stat().st_size
        except OSError:
            size = -1
        h.update(f"{f.relative_to(base)}\0{size}\n".encode())
    return h.hexdigest()[:16]


def open_sources(d: dict):
    """Merge the folders of a parsed spec into one DatasetSource. Raises DatasetError (one line)."""
    from .dataset import IMAGE_EXTS, DatasetError, DatasetSource, is_junk, open_folder

    data, adds = d["data"], d["add"]
    if not data and not adds:
        raise DatasetError("dataset spec names no folder")
    trees = [open_folder(p) for p in data]
    # the same folder twice, or one folder inside another, would count images twice
    folders: list[tuple[Path, str]] = [(t.root.resolve(), f"--data {t.root}") for t in trees]
    for cls, p, _ in adds:
        folders.append((_resolve(p), f"--add {cls}={p}"))
    for i, (a, what_a) in enumerate(folders):
        for b, what_b in folders[:i]:
            if a == b:
                raise DatasetError(f"{a}: the same folder is given twice ({what_b}; {what_a})")
            if a.is_relative_to(b) or b.is_relative_to(a):
                inner, outer = (a, b) if a.is_relative_to(b) else (b, a)
                raise DatasetError(f"{inner} is inside {outer}: overlapping sources would count images twice")
    if trees:
        classes = list(trees[0].classes)
        for t in trees[1:]:
            if t.classes != classes:
                extra, missing = sorted(set(t.classes) - set(classes)), sorted(set(classes) - set(t.classes))
                raise DatasetError(f"{t.root}: its classes differ from {trees[0].root.name}'s (only here: "
                                   f"{extra or 'none'}; missing here: {missing or 'none'})")
    else:
        classes = sorted({c for c, _, _ in adds})
        if len(classes) < 2:
            raise DatasetError(f"added folders give only {len(classes)} class ({', '.join(classes)}): need two")
    for cls, p, _ in adds:
        if cls not in classes:
            raise DatasetError(f"--add {cls}={p}: class {cls!r} is not one of the dataset's classes "
                               f"({', '.join(classes)})")

    names: dict[Path, str] = {}

    def unique(folder: Path, base: str) -> str:
        taken = set(names.values())
        name, k = base, 2
        while name in taken and not any(n == name and f.parent == folder.parent for f, n in names.items()):
            name, k = f"{base}-{k}", k + 1
        names[folder] = name
        return name

    root = trees[0].root if trees else None
    out = DatasetSource(name="", root=root, classes=classes, split_dirs={"test": "test"})
    out.files, out.origins = {"train": [], "test": []}, {"train": [], "test": []}
    for t in trees:
        name = unique(t.root.resolve(), t.root.name)
        for split in SPLITS:
            out.files[split] += t.files[split]
            out.origins[split] += [name] * len(t.files[split])
        out.ignored += [f"{name}: {i}" for i in t.ignored]
        all_files = [p for s in SPLITS for p, _ in t.files[s]]
        out.sources.append({"name": name, "path": str(t.root), "kind": "folder", "classes": list(t.classes),
                            "split": None, "files": len(all_files), "fingerprint": fingerprint(all_files, t.root)})
    for cls, p, split in adds:
        folder = _resolve(p)
        if not folder.exists():
            raise DatasetError(f"--add {cls}={p}: folder not found")
        if not folder.is_dir():
            raise DatasetError(f"--add {cls}={p}: not a folder")
        name = unique(folder, _source_name(folder, set(classes)))
        entries = sorted(folder.iterdir())
        files = [f for f in entries if f.is_file() and not is_junk(f) and f.suffix.lower() in IMAGE_EXTS]
        if not files:
            subs = [f.name for f in entries if f.is_dir() and not is_junk(f)]
            hint = f" (it has sub-folders {', '.join(subs[:3])}: give the folder that holds the images)" if subs else ""
            raise DatasetError(f"--add {cls}={p}: no image files in this folder{hint}")
        out.ignored += [f"{name}: {f.name}" for f in entries if f not in files]
        parts = {split: files} if split else _split_files(files, d["split_fraction"], d["seed"], cls)
        y = classes.index(cls)
        for s, fs in parts.items():
            out.files[s] += [(f, y) for f in fs]
            out.origins[s] += [name] * len(fs)
        out.sources.append({"name": name, "path": str(folder), "kind": "class folder", "classes": [cls],
                            "split": split or f"{1 - d['split_fraction']:.2f} train / {d['split_fraction']:.2f} test "
                                              f"(seed {d['seed']})",
                            "files": len(files), "fingerprint": fingerprint(files, folder)})
    for split in SPLITS:
        present = {out.classes[y] for _, y in out.files[split]}
        if not present:
            raise DatasetError(f"the merged dataset has no {split} images")
        missing = [c for c in classes if c not in present]
        if missing:
            raise DatasetError(f"the merged dataset has no {split} images of {', '.join(missing)}")
    src_names = sorted({s["name"] for s in out.sources})
    out.name = " + ".join(src_names)
    if len(src_names) > 1:
        for c in classes:
            y = classes.index(c)
            from_ = sorted({o for s in SPLITS for (_, lab), o in zip(out.files[s], out.origins[s]) if lab == y})
            if len(from_) == 1:
                out.warnings.append(f"class {c!r} comes from one source only ({from_[0]}): a model may learn to "
                                    "recognise the source instead of the class")
    out.spec = json.dumps({"data": data, "add": [list(a) for a in adds], "split_fraction": d["split_fraction"],
                           "seed": d["seed"]}, sort_keys=True)
    return out


def spec_parts(spec) -> tuple[list[str], list[tuple[str, str, str | None]], float, int]:
    """(folders, added class folders, split fraction, seed) of any spec (a plain path is one folder)."""
    d = parse_spec(spec)
    if d is None:
        return ([str(spec).strip()] if spec and str(spec).strip() else []), [], DEFAULT_SPLIT_FRACTION, 0
    return d["data"], d["add"], d["split_fraction"], d["seed"]


def extend_spec(spec, data: str | None = None, add: tuple[str, str, str | None] | None = None,
                split_fraction: float | None = None) -> str | None:
    """The spec with one more folder or class folder (what the Overview page's "Add a source" does)."""
    folders, adds, frac, seed = spec_parts(spec)
    if data:
        folders = [*folders, str(data).strip()]
    if add:
        adds = [*adds, add]
    return dataset_spec(folders, adds, split_fraction if split_fraction is not None else frac, seed)


def drop_source(spec, index: int) -> str | None:
    """The spec without its ``index``-th folder (folders first, then added class folders)."""
    folders, adds, frac, seed = spec_parts(spec)
    if index < len(folders):
        folders = folders[:index] + folders[index + 1:]
    else:
        k = index - len(folders)
        adds = adds[:k] + adds[k + 1:]
    return dataset_spec(folders, adds, frac, seed)
