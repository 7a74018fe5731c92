"""Decode-once cache: every original is decoded and resized once per target size, then kept in memory
and on disk as a uint8 array keyed by the file's content hash and the size. Later epochs and later runs
(even after a restart) never decode again.

The first decode of a split uses every core (:func:`decode_items`: spawn-safe worker processes, chunked; a
tiny job stays in-process). A decoded split is also stored whole (``splits/``), so reopening a large dataset
is one file read; a split larger than the RAM budget (``CXRVIZ_RAM_BUDGET``, default a quarter of the
machine's RAM) stays a memory-mapped file on disk that training streams from.

This module imports no torch: worker processes start with numpy and Pillow only.

It is one module (about 390 lines) because it is one concept, the decode-once cache: the per-image entries, the
whole-split files and the parallel first decode share the key (content hash + size), the on-disk layout and the
RAM budget, and the workers write the same entries the parent reads; splitting it would separate the writer of
those files from their reader.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import ImageDecodeError, decode_image, resize_square

CACHE_ENV = "CXRVIZ_CACHE"
RAM_BUDGET_ENV = "CXRVIZ_RAM_BUDGET"  # bytes, or e.g. "2G", "500M"
WORKERS_ENV = "CXRVIZ_DECODE_WORKERS"
RAM_BUDGET_FRACTION = 0.25
MIN_PARALLEL = 96  # fewer images to decode than this: in-process (starting workers costs more)
# Decoded images kept in memory per cache, by bytes (not by count: 20 000 images are 0.3 GB at 128 px but
# 5 GB at 512 px). A whole split decoded with a disk cache is not kept image by image at all: its stored
# split file is the cache, and keeping both doubled the RAM of a large dataset.
MEMORY_BYTES = 256 * 2**20


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "images"


class ImageCache:
    def __init__(self, directory: str | os.PathLike | None, max_memory_bytes: int = MEMORY_BYTES) -> None:
        self.dir = Path(directory) if directory else None
        self.max_bytes = max_memory_bytes
        self._mem: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._mem_bytes = 0
        self._hash_memo: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self.decodes = 0  # how many times an original was actually decoded (for tests and benchmarks)

    def _hash_memo_put(self, path: Path, h: str) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self._hash_memo[(str(path), st.st_mtime_ns, st.st_size)] = h

    def content_hash(self, path: Path) -> str:
        st = path.stat()
        memo_key = (str(path), st.st_mtime_ns, st.st_size)
        h = self._hash_memo.get(memo_key)
        if h is None:
            h = hashlib.sha1(path.read_bytes()).hexdigest()
            self._hash_memo[memo_key] = h
        return h

    def get(self, path: Path, size: int, keep: bool = True) -> np.ndarray:
        arr = self.lookup(path, size, keep=keep)
        if arr is None:
            key = (self.content_hash(path), size)
            arr = resize_square(decode_image(path, draft_size=size), size)
            with self._lock:
                self.decodes += 1
            self._save_disk(key, arr)
            if keep:
                self.remember(key, arr)
        return arr

    def lookup(self, path: Path, size: int, keep: bool = True) -> np.ndarray | None:
        """The cached array (memory, then disk) or None; never decodes. Raises OSError if unreadable."""
        key = (self.content_hash(path), size)
        with self._lock:
            arr = self._mem.get(key)
            if arr is not None:
                self._mem.move_to_end(key)
                return arr
        arr = self._load_disk(key)
        if arr is not None and keep:
            self.remember(key, arr)
        return arr

    def remember(self, key: tuple[str, int], arr: np.ndarray) -> None:
        with self._lock:
            old = self._mem.pop(key, None)
            self._mem_bytes += arr.nbytes - (old.nbytes if old is not None else 0)
            self._mem[key] = arr
            while self._mem_bytes > self.max_bytes and self._mem:
                self._mem_bytes -= self._mem.popitem(last=False)[1].nbytes

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

    def split_file(self, stamp: tuple, size: int) -> Path | None:
        """Where a whole decoded split is stored, keyed by its files (path, mtime, bytes) and the size."""
        if not self.dir:
            return None
        h = hashlib.sha1(repr(stamp).encode()).hexdigest()[:24]
        return self.dir / "splits" / f"{size}-{h}.npy"

    def clear_memory(self) -> None:
        with self._lock:
            self._mem.clear()
            self._mem_bytes = 0


_DEFAULT: ImageCache | None = None


def default_cache() -> ImageCache:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ImageCache(default_cache_dir())
    return _DEFAULT


def set_default_cache(cache: ImageCache | None) -> ImageCache | None:
    """Make ``cache`` the process-wide default (None: the usual one, made again on next use); returns the
    previous default. For benchmarks that time a cold cache."""
    global _DEFAULT
    old, _DEFAULT = _DEFAULT, cache
    return old


# ---------------------------------------------------------------------------------------- RAM budget
def _parse_bytes(text: str) -> int:
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def total_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def ram_budget() -> int:
    """Bytes a decoded split may take in RAM; larger splits are memory-mapped (``CXRVIZ_RAM_BUDGET``)."""
    env = os.environ.get(RAM_BUDGET_ENV, "").strip()
    if env:
        try:
            return max(0, _parse_bytes(env))
        except ValueError:
            pass  # a malformed setting falls back to the default rather than failing a training run
    return int(total_ram() * RAM_BUDGET_FRACTION)


def default_workers() -> int:
    env = os.environ.get(WORKERS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------- decoding a split
@dataclass
class SplitArrays:
    images: np.ndarray  # [K, S, S] uint8, the readable files in order (a np.memmap when ``mapped``)
    keep: list[int]  # index in the split of each image
    errors: list[tuple[int, str]]  # (index, "file: reason") of each unreadable file
    mapped: bool = False


def _decode_one(path: str, size: int) -> tuple[str | None, np.ndarray | None, str | None]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, None, f"{Path(path).name}: cannot read file ({e.strerror or e})"
    h = hashlib.sha1(data).hexdigest()
    try:
        return h, resize_square(decode_image(data, name=Path(path).name, draft_size=size), size), None
    except ImageDecodeError as e:
        return h, None, str(e)


def _decode_chunk(jobs: list[tuple[int, str]], size: int, cache_dir: str | None) -> list[tuple]:
    """Worker process: decode + resize a chunk; store each cache entry (atomically); return the arrays."""
    store = ImageCache(cache_dir) if cache_dir else None
    out = []
    for i, path in jobs:
        h, arr, err = _decode_one(path, size)
        if store is not None and arr is not None:
            store._save_disk((h, size), arr)
        out.append((i, h, arr, err))
    return out


def _load_split_file(f: Path, n: int, size: int, mapped: bool) -> SplitArrays | None:
    meta_f = f.with_suffix(".json")
    try:
        meta = json.loads(meta_f.read_text())
        arr = np.load(f, mmap_mode="c" if mapped else None, allow_pickle=False)
    except (OSError, ValueError):
        return None  # missing or corrupt: decode again (from the per-image cache) and overwrite
    keep, errors = meta.get("keep"), meta.get("errors")
    if (meta.get("n") != n or not isinstance(keep, list) or arr.dtype != np.uint8
            or arr.shape != (len(keep), size, size)):
        return None
    return SplitArrays(arr, keep, [(int(i), str(e)) for i, e in errors], mapped)


def _save_split_file(f: Path, arr: np.ndarray, n: int, keep: list[int], errors: list, tmp: Path | None = None) -> None:
    """Sidecar first, then the array, each written to a temp file and renamed (never half a file)."""
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        fd, meta_tmp = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"n": n, "keep": keep, "errors": errors}, fh)
        os.replace(meta_tmp, f.with_suffix(".json"))
        if tmp is None:
            fd, name = tempfile.mkstemp(dir=f.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
            tmp = Path(name)
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only or full disk costs speed only


def release_freed_memory() -> None:
    """Hand memory freed by a decode back to the OS (glibc keeps the small blocks of thousands of decoded
    images in its heap otherwise, and the process's RAM stays at its peak). A no-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _can_spawn() -> bool:
    """Spawned workers re-import the main module by its path: not possible from stdin or a deleted file."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is None or os.path.isfile(main_file)


def _decode_parallel(paths, misses, size, workers, cache, out, ok, errors, settled, keep_each, report) -> int:
    """Decode ``misses`` on ``workers`` spawned processes (chunked); returns how many images are settled."""
    chunk = max(4, min(64, len(misses) // (workers * 8) or 4))
    jobs = [[(i, str(paths[i])) for i in misses[k:k + chunk]] for k in range(0, len(misses), chunk)]
    cache_dir = str(cache.dir) if cache.dir else None
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(_decode_chunk, job, size, cache_dir) for job in jobs]
        for fut in as_completed(futures):
            decoded = 0
            for i, h, arr, err in fut.result():
                if arr is None:
                    errors.append((i, err))
                else:
                    out[i], ok[i] = arr, True
                    cache._hash_memo_put(paths[i], h)
                    if keep_each:
                        cache.remember((h, size), arr)
                    decoded += 1
                settled.add(i)
            with cache._lock:
                cache.decodes += decoded
            report(len(settled))
    return len(settled)


def decode_items(paths: list[Path], size: int, stamp: tuple, *, cache: ImageCache, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 ram_budget_bytes: int | None = None,
                 check: Callable[[list[int], list[tuple[int, str]]], None] | None = None) -> SplitArrays:
    """Every file of a split as uint8 [K, size, size]: from the stored split, else from the per-image cache,
    decoding the rest on ``workers`` processes (default: every core). Larger than the RAM budget (and the
    cache on disk): the result is a memory-mapped file. ``check(keep, errors)`` may raise before anything
    is stored for the split."""
    n = len(paths)
    budget = ram_budget() if ram_budget_bytes is None else ram_budget_bytes
    split_f = cache.split_file(stamp, size)
    mapped = split_f is not None and n * size * size > budget
    last = [0.0]

    def report(done: int, force: bool = False) -> None:
        now = time.monotonic()
        if progress and (force or now - last[0] > 0.1):
            last[0] = now
            progress(done, n)

    if split_f is not None:
        stored = _load_split_file(split_f, n, size, mapped)
        if stored is not None:
            report(n, True)
            return stored
    tmp = None
    if mapped:
        split_f.parent.mkdir(parents=True, exist_ok=True)
        tmp = split_f.with_name(f"{split_f.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size))
    else:
        out = np.empty((n, size, size), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    errors: list[tuple[int, str]] = []
    misses: list[int] = []
    keep_each = split_f is None  # without a stored split, the per-image memory is the only cache
    done = 0
    try:
        for i, p in enumerate(paths):  # memory and disk hits
            try:
                arr = cache.lookup(p, size, keep=keep_each)
            except OSError as e:
                errors.append((i, f"{p.name}: cannot read file ({e.strerror or e})"))
                done += 1
                continue
            if arr is None:
                misses.append(i)
                continue
            out[i], ok[i] = arr, True
            done += 1
            report(done)
        workers = default_workers() if workers is None else max(1, int(workers))
        settled: set[int] = set()
        if len(misses) >= MIN_PARALLEL and workers > 1 and _can_spawn():
            base = done
            try:
                _decode_parallel(paths, misses, size, workers, cache, out, ok, errors, settled, keep_each,
                                 lambda k: report(base + k))
            except (BrokenProcessPool, OSError, RuntimeError):
                pass  # workers could not run here (e.g. no importable main module): the rest in-process
            done = base + len(settled)
        for i in misses:
            if i in settled:
                continue
            try:
                out[i], ok[i] = cache.get(paths[i], size, keep=keep_each), True
            except ImageDecodeError as e:
                errors.append((i, str(e)))
            except OSError as e:
                errors.append((i, f"{paths[i].name}: cannot read file ({e.strerror or e})"))
            done += 1
            report(done)
        report(done, True)
        keep = [int(i) for i in np.flatnonzero(ok)]
        errors.sort()
        if check is not None:
            check(keep, errors)
        if not keep:
            return SplitArrays(np.empty((0, size, size), np.uint8), [], errors, False)
        if mapped:
            if len(keep) < n:  # compact into a second mapped file, in chunks
                tmp2 = tmp.with_name(tmp.name + "2")
                packed = np.lib.format.open_memmap(tmp2, mode="w+", dtype=np.uint8, shape=(len(keep), size, size))
                for k in range(0, len(keep), 4096):
                    packed[k:k + 4096] = out[keep[k:k + 4096]]
                packed.flush()
                del packed, out
                os.replace(tmp2, tmp)
            else:
                out.flush()
                del out
            _save_split_file(split_f, None, n, keep, errors, tmp=tmp)
            tmp = None
            loaded = _load_split_file(split_f, n, size, True)
            if loaded is None:
                raise OSError(f"{split_f}: cannot map the decoded split")
            return loaded
        images = out if len(keep) == n else out[keep]
        del out
        if split_f is not None:
            _save_split_file(split_f, images, n, keep, errors)
        if misses:
            release_freed_memory()
        return SplitArrays(images, keep, errors, False)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink(missing_ok=True)  # an interrupted mapped decode leaves nothing half-built
