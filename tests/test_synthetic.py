"""Tests for the built-in synthetic chest-phantom dataset (fast: small sets)."""

from __future__ import annotations

import numpy as np
import pytest

from cxrviz.data import synthetic as syn
from cxrviz.data.synthetic import (
    CLASSES,
    DEFAULT_COUNTS,
    SYNTHETIC_NAME,
    make_phantom,
    make_split,
)

SMALL = 64  # most tests render at 64 px to stay fast


@pytest.fixture(scope="module")
def small_train():
    return make_split("train", size=SMALL, n_per_class=8, seed=0)


def test_contract_constants():
    assert CLASSES == ["Covid", "Normal", "Viral Pneumonia"]
    assert "synthetic" in SYNTHETIC_NAME
    assert set(DEFAULT_COUNTS) >= {"train", "test"}
    assert all(isinstance(v, int) and v > 0 for v in DEFAULT_COUNTS.values())


def test_shapes_dtypes_and_label_counts(small_train):
    x, y = small_train
    assert x.shape == (24, SMALL, SMALL)
    assert x.dtype == np.uint8
    assert y.shape == (24,)
    assert y.dtype == np.int64
    assert np.bincount(y, minlength=3).tolist() == [8, 8, 8]
    assert x.flags["C_CONTIGUOUS"]


def test_order_is_shuffled_not_grouped(small_train):
    _, y = small_train
    assert not np.all(np.diff(y) >= 0)


def test_default_counts_used():
    x, y = make_split("test", size=32)
    n = DEFAULT_COUNTS["test"]
    assert x.shape == (3 * n, 32, 32)
    assert np.bincount(y, minlength=3).tolist() == [n, n, n]


def test_deterministic_same_arguments(small_train):
    x2, y2 = make_split("train", size=SMALL, n_per_class=8, seed=0)
    x1, y1 = small_train
    assert np.array_equal(x1, x2)
    assert np.array_equal(y1, y2)
    assert x1.tobytes() == x2.tobytes()


def test_different_seed_differs(small_train):
    x1, _ = small_train
    x2, _ = make_split("train", size=SMALL, n_per_class=8, seed=1)
    assert not np.array_equal(x1, x2)


def test_train_and_test_differ():
    xtr, _ = make_split("train", size=SMALL, n_per_class=6)
    xte, _ = make_split("test", size=SMALL, n_per_class=6)
    flat_tr = {im.tobytes() for im in xtr}
    assert not any(im.tobytes() in flat_tr for im in xte)
    # not even near-duplicates
    d = np.abs(xtr[:, None].astype(np.int16) - xte[None].astype(np.int16)).mean(axis=(2, 3))
    assert d.min() > 2.0


def test_images_within_a_split_are_distinct(small_train):
    x, _ = small_train
    assert len({im.tobytes() for im in x}) == len(x)


def test_intensity_range_sensible(small_train):
    x, _ = small_train
    for im in x:
        assert im.std() > 20, "image is (nearly) constant"
        lo, hi = np.percentile(im, [2, 98])
        assert lo < 90 and hi > 140, (lo, hi)
        assert 50 < im.mean() < 200


def test_larger_n_per_class_contains_smaller():
    xs, _ = make_split("train", size=32, n_per_class=3)
    xl, _ = make_split("train", size=32, n_per_class=5)
    big = {im.tobytes() for im in xl}
    assert all(im.tobytes() in big for im in xs)


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_sizes(size):
    for label in range(3):
        im = make_phantom(label, size, np.random.default_rng(7))
        assert im.shape == (size, size)
        assert im.dtype == np.uint8
        assert im.std() > 15


def test_same_anatomy_across_sizes():
    """One generator state → the same picture at any resolution."""
    a = make_phantom(1, 64, np.random.default_rng(3)).astype(np.float32)
    b = make_phantom(1, 128, np.random.default_rng(3)).astype(np.float32)
    b_small = b.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    other = make_phantom(1, 64, np.random.default_rng(4)).astype(np.float32)
    assert np.abs(a - b_small).mean() < 0.5 * np.abs(a - other).mean()


def test_label_only_changes_the_lungs():
    """With the same generator state, the three classes differ only inside the chest."""
    ims = [make_phantom(c, 96, np.random.default_rng(11)).astype(np.int16) for c in range(3)]
    assert not np.array_equal(ims[0], ims[1])
    assert not np.array_equal(ims[2], ims[1])
    for im in (ims[0], ims[2]):
        diff = np.abs(im - ims[1])
        # the outer frame (air, shoulders, abdomen corners) is untouched
        frame = np.ones_like(diff, dtype=bool)
        frame[8:-8, 8:-8] = False
        assert diff[frame].max() <= 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_phantom(3, 64, np.random.default_rng(0))
    with pytest.raises(ValueError):
        make_split("validation")  # no default count for that name
    x, y = make_split("validation", size=32, n_per_class=2)
    assert x.shape == (6, 32, 32)
    with pytest.raises(ValueError):
        make_split("train", size=32, n_per_class=1, seed=-1)


def _lung_and_outside_masks(size):
    yy, xx = np.mgrid[0:size, 0:size]
    xc = (xx + 0.5) / size * 2 - 1
    yc = (yy + 0.5) / size * 2 - 1
    # central parts of the two lung fields, away from the mediastinum
    lungs = (np.abs(np.abs(xc) - 0.42) < 0.14) & (yc > -0.45) & (yc < 0.25)
    return lungs


def test_class_means_differ_in_lungs():
    size = 64
    x, y = make_split("train", size=size, n_per_class=16, seed=5)
    x = x.astype(np.float32)
    lungs = _lung_and_outside_masks(size)
    # contrast of lungs vs the whole image removes the global exposure
    rel = np.stack([im[lungs].mean() - im.mean() for im in x])
    m = [rel[y == c].mean() for c in range(3)]
    covid, normal, viral = m
    assert covid > normal + 3
    assert viral > normal + 3
    # and the mean images themselves differ in the lung fields
    mean_img = [x[y == c].mean(axis=0) for c in range(3)]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        assert np.abs(mean_img[a] - mean_img[b])[lungs].mean() > 2.0


def test_viral_is_more_asymmetric_than_covid():
    size = 64
    x, y = make_split("train", size=size, n_per_class=16, seed=2)
    x = x.astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    xc = (xx + 0.5) / size * 2 - 1
    yc = (yy + 0.5) / size * 2 - 1
    band = (yc > -0.5) & (yc < 0.3) & (np.abs(np.abs(xc) - 0.42) < 0.14)
    left, right = band & (xc < 0), band & (xc > 0)
    asym = np.array([abs(im[left].mean() - im[right].mean()) for im in x])
    assert asym[y == 2].mean() > 1.5 * asym[y == 0].mean()


def test_no_streamlit_dependency():
    src = open(syn.__file__, encoding="utf-8").read()
    assert "import streamlit" not in src and "from streamlit" not in src


@pytest.mark.parametrize(
    "split,size,n,seed,expected",
    [
        # sha256 of images then labels, computed before make_phantom was split into named steps
        ("train", 64, 4, 0, "c61ad8ccfce5f7797122d5de38dd146c5152ccc4696dcf02104a2240948fdd40"),
        ("test", 48, 3, 1, "512fa41ab808da445abd51cd55a47cc17dfad911c1410485eb60bf896f30424f"),
    ],
)
def test_synthetic_set_is_byte_identical(split, size, n, seed, expected):
    import hashlib

    x, y = make_split(split, size, n_per_class=n, seed=seed)
    digest = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    assert digest == expected
