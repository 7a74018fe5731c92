"""Scans of a whole dataset (image sizes, duplicate files) stored on disk, keyed by every file's path, mtime
and size: reopening the Overview of a large dataset reads one small JSON file instead of every image."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable

from .cache import ImageCache, default_cache

SCAN_VERSION = 1


def files_key(source) -> str:
    """sha1 of every file's split, path, label, mtime and size; computed once per opened dataset."""
    key = getattr(source, "_files_key", None)
    if key is None:
        h = hashlib.sha1(f"{SCAN_VERSION}\0{source.spec or source.root}\n".encode())
        for split in sorted(source.files):
            for p, y in source.files[split]:
                try:
                    st = os.stat(p)
                    h.update(f"{split}\0{p}\0{y}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
                except OSError:
                    h.update(f"{split}\0{p}\0{y}\0missing\n".encode())
        key = h.hexdigest()[:24]
        source._files_key = key
    return key


def scan_key(source, kind: str) -> str:
    return f"{kind}-{files_key(source)}"


def cached_scan(source, kind: str, compute: Callable[[], object], cache: ImageCache | None = None):
    """``compute()`` once per state of the dataset's files; the result (JSON-able) is stored on disk."""
    cache = cache or default_cache()
    if cache.dir is None or source.synthetic:
        return json.loads(json.dumps(compute()))
    f = cache.dir / "scans" / f"{scan_key(source, kind)}.json"
    try:
        return json.loads(f.read_text())
    except (OSError, ValueError):
        pass  # not scanned yet, or a corrupt entry: scan again
    result = json.loads(json.dumps(compute()))
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh)
        os.replace(tmp, f)
    except OSError:
        pass  # read-only disk: the next open scans again
    return result
