"""The decode cache's RAM: a split decoded with a disk cache is not kept a second time image by image (its
stored split file is the cache), and the per-image memory is bounded by bytes, not by a count of images."""
import numpy as np
import torch

from cxrviz.data import ImageCache, load_split, open_dataset
from cxrviz.data.dataset import forget_splits


def test_split_with_a_disk_cache_is_not_kept_twice(tmp_path, synthetic_folder):
    src = open_dataset(synthetic_folder)
    cache = ImageCache(tmp_path / "cache")
    a = load_split(src, "train", 40, cache=cache)
    assert cache.decodes == len(a) and len(cache._mem) == 0 and cache._mem_bytes == 0
    forget_splits()
    b = load_split(src, "train", 40, cache=cache)  # from the stored split: nothing decoded again
    assert cache.decodes == len(a) and torch.equal(a.images, b.images)
    forget_splits()
    nodisk = ImageCache(None)  # no disk: the per-image memory is the only cache, so it is kept
    c = load_split(src, "train", 40, cache=nodisk)
    assert len(nodisk._mem) == len(c) and torch.equal(a.images, c.images)
    forget_splits()
    load_split(src, "train", 40, cache=nodisk)
    assert nodisk.decodes == len(c)


def test_memory_is_bounded_by_bytes():
    cache = ImageCache(None, max_memory_bytes=3 * 64 * 64)
    for k in range(5):
        cache.remember((str(k), 64), np.full((64, 64), k, np.uint8))
    assert [key[0] for key in cache._mem] == ["2", "3", "4"] and cache._mem_bytes == 3 * 64 * 64
    cache.remember(("3", 64), np.zeros((64, 64), np.uint8))  # replacing an entry does not count it twice
    assert cache._mem_bytes == 3 * 64 * 64
    cache.clear_memory()
    assert cache._mem_bytes == 0 and not cache._mem
