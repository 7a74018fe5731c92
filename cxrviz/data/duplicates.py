"""Duplicate images in a dataset: byte-identical files (content hash) and near duplicates (the same image
re-encoded or resized: a 64-bit difference hash of the small cached image, within a few bits), across splits
and across sources. A test image that duplicates a training image makes test accuracy optimistic."""
from __future__ import annotations

import json

import numpy as np

from .cache import ImageCache, default_cache

NEAR_SIZE = 32  # px of the cached image the difference hash is computed from
NEAR_BITS = 4  # at most this many of the 64 hash bits differ: a candidate
NEAR_MAD = 6.0  # ... confirmed when the 32 px images differ by at most this much on average (of 255)
_BANDS = 5  # pigeonhole: two hashes within NEAR_BITS bits agree exactly on at least one of NEAR_BITS + 1 bands


def _name(source, split: str, i: int, p) -> tuple[str, str, str]:
    from .dataset import display_path

    return split, display_path(source, p), source.source_names(split)[i]


def _summarise(source, groups: list[list[tuple[str, str, str]]]) -> dict:
    groups = [sorted(g) for g in groups]
    cross = sorted({f for g in groups if {s for s, _, _ in g} == {"train", "test"} for s, f, _ in g if s == "test"})
    cross_source = [g for g in groups if len({o for _, _, o in g}) > 1]
    return {"groups": [[(s, f) for s, f, _ in g] for g in groups], "cross_split": cross,
            "cross_source": [[(o, s, f) for s, f, o in g] for g in cross_source]}


def find_duplicates(source, cache: ImageCache | None = None) -> dict:
    """Byte-identical files (same content hash): ``groups`` [[(split, file), ...]], ``cross_split`` (test
    images that are copies of training images: leakage; the Kaggle set has some) and ``cross_source``
    [[(source, split, file), ...]] (the same image in two sources)."""
    from .scan import cached_scan

    if source.synthetic:
        return {"groups": [], "cross_split": [], "cross_source": []}
    cache = cache or default_cache()
    return cached_scan(source, "duplicates", lambda: _exact(source, cache), cache)


def _exact(source, cache: ImageCache) -> dict:
    by_hash: dict[str, list[tuple[str, str, str]]] = {}
    for split, items in source.files.items():
        for i, (p, _) in enumerate(items):
            try:
                h = cache.content_hash(p)
            except OSError:
                continue
            by_hash.setdefault(h, []).append(_name(source, split, i, p))
    return _summarise(source, [v for v in by_hash.values() if len(v) > 1])


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit difference hashes of uint8 images [N, S, S] (S a multiple of 8 is exact; others are binned)."""
    x = np.asarray(images, dtype=np.float32)
    n, s = x.shape[0], x.shape[1]
    rows = np.array_split(np.arange(s), 8)
    cols = np.array_split(np.arange(s), 9)
    small = np.stack([np.stack([x[:, r][:, :, c].mean(axis=(1, 2)) for c in cols], 1) for r in rows], 1)  # N,8,9
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(n, 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def near_groups(hashes: np.ndarray, max_bits: int = NEAR_BITS, images: np.ndarray | None = None,
                max_mad: float = NEAR_MAD) -> list[list[int]]:
    """Groups (connected components) of indices whose hashes differ in at most ``max_bits`` bits and, with
    ``images``, whose pixels differ by at most ``max_mad`` on average (chest radiographs look alike at 8x9, so
    the hash alone would chain different patients together). Candidates come from exact matches on one of
    ``max_bits + 1`` bands, so the cost grows with N, not N². Identical small images (or identical hashes,
    without ``images``) are one group before any pair is compared: a set holding many copies of a picture
    would otherwise compare every copy with every look-alike of every other picture."""
    n = len(hashes)
    if n == 0:
        return []
    flat = np.ascontiguousarray(images.reshape(n, -1) if images is not None else hashes.reshape(n, 1))
    rows = flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    root = _banded_roots(hashes[first], max_bits, images[first] if images is not None else None, max_mad)
    comp: dict[int, list[int]] = {}
    for i, r in enumerate(root[inverse.ravel()].tolist()):
        comp.setdefault(r, []).append(i)
    return [sorted(g) for g in comp.values() if len(g) > 1]


def _banded_roots(hashes: np.ndarray, max_bits: int, images: np.ndarray | None, max_mad: float) -> np.ndarray:
    """The component (a representative index) of every hash: union-find over the banded candidate pairs."""
    n = len(hashes)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    bands = max_bits + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    h = hashes.astype(np.uint64)
    for lo, hi in zip(edges[:-1], edges[1:]):
        key = (h >> np.uint64(64 - hi)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts, ends):
            if b - a < 2:
                continue
            idx = order[a:b]
            x = h[idx]
            dist = np.bitwise_count(x[:, None] ^ x[None, :])
            for u, v in zip(*np.nonzero(np.triu(dist <= max_bits, 1))):
                ru, rv = find(int(idx[u])), find(int(idx[v]))
                if ru == rv:  # already one group: no pixels to compare
                    continue
                if images is not None and np.abs(images[idx[u]].astype(np.int16)
                                                 - images[idx[v]].astype(np.int16)).mean() > max_mad:
                    continue
                parent[ru] = rv
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def near_duplicates(source, cache: ImageCache | None = None, max_bits: int = NEAR_BITS, progress=None) -> dict:
    """Near-duplicate groups (re-encoded, resized or byte-identical copies), in the same form as
    :func:`find_duplicates`. Decodes every image once at 32 px (cached, on every core)."""
    from .dataset import load_split

    if source.synthetic:
        return {"groups": [], "cross_split": [], "cross_source": []}
    names, hashes, images = [], [], []
    for split in ("train", "test"):
        s = load_split(source, split, NEAR_SIZE, cache=cache, progress=progress)
        names += [(split, path, o) for path, o in zip(s.paths, s.sources)]
        images.append(s.images[:, 0].numpy())
        hashes.append(dhash(images[-1]))
    groups = near_groups(np.concatenate(hashes), max_bits, np.concatenate(images))
    return json.loads(json.dumps(_summarise(source, [[names[i] for i in g] for g in groups])))
