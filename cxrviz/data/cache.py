"""Decode-once cache: every original is decoded and resized once per target size, then kept in memory
and on disk as a uint8 array keyed by the file's content hash and the size. Later epochs and later runs
(even after a restart) never decode again."""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .decode import decode_image, resize_square

CACHE_ENV = "CXRVIZ_CACHE"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "images"


class ImageCache:
    def __init__(self, directory: str | os.PathLike | None, max_memory_items: int = 20000) -> None:
        self.dir = Path(directory) if directory else None
        self.max_items = max_memory_items
        self._mem: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._hash_memo: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self.decodes = 0  # how many times an original was actually decoded (for tests and benchmarks)

    def content_hash(self, path: Path) -> str:
        st = path.stat()
        memo_key = (str(path), st.st_mtime_ns, st.st_size)
        h = self._hash_memo.get(memo_key)
        if h is None:
            h = hashlib.sha1(path.read_bytes()).hexdigest()
            self._hash_memo[memo_key] = h
        return h

    def get(self, path: Path, size: int) -> np.ndarray:
        key = (self.content_hash(path), size)
        with self._lock:
            arr = self._mem.get(key)
            if arr is not None:
                self._mem.move_to_end(key)
                return arr
        arr = self._load_disk(key)
        if arr is None:
            arr = resize_square(decode_image(path, draft_size=size), size)
            with self._lock:
                self.decodes += 1
            self._save_disk(key, arr)
        with self._lock:
            self._mem[key] = arr
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)
        return arr

    def _file(self, key: tuple[str, int]) -> Path | None:
        return self.dir / str(key[1]) / f"{key[0]}.npy" if self.dir else None

    def _load_disk(self, key: tuple[str, int]) -> np.ndarray | None:
        f = self._file(key)
        if f is None or not f.exists():
            return None
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            return None  # corrupt cache entry: decode again and overwrite
        if arr.dtype != np.uint8 or arr.shape != (key[1], key[1]):
            return None
        return arr

    def _save_disk(self, key: tuple[str, int], arr: np.ndarray) -> None:
        f = self._file(key)
        if f is None:
            return
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            os.replace(tmp, f)
        except OSError:
            pass  # a read-only or full disk only costs speed, never correctness

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()


_DEFAULT: ImageCache | None = None


def default_cache() -> ImageCache:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ImageCache(default_cache_dir())
    return _DEFAULT
