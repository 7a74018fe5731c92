"""Facts about the real Kaggle "Covid19 Image Dataset" itself: its counts, its duplicates, its JPEGs.

Every other test makes its own data. This module needs the real folder (``CXRVIZ_TEST_DATA``, default
``../shared/data/Covid19-dataset``): where that folder is absent it is not collected at all (conftest.py says
so in pytest's header, so nothing is skipped silently), and in CI (``CI`` or ``CXRVIZ_REQUIRE_REAL_DATA=1``,
as ``.ci/run`` sets) a missing folder fails the run instead.
"""
import numpy as np

from cxrviz.data import find_duplicates, open_dataset
from cxrviz.data.decode import decode_image, resize_square


def test_kaggle_layout_counts(real_data):
    src = open_dataset(real_data)
    assert src.classes == ["Covid", "Normal", "Viral Pneumonia"]
    assert src.counts() == {"train": {"Covid": 111, "Normal": 70, "Viral Pneumonia": 70},
                            "test": {"Covid": 26, "Normal": 20, "Viral Pneumonia": 20}}
    assert not src.synthetic and src.label == "Covid19-dataset"


def test_duplicates_across_splits_of_the_kaggle_set(real_data):
    # the Kaggle set ships 6 test images that are byte-identical copies of training images (README, Overview)
    dup = find_duplicates(open_dataset(real_data))
    assert len(dup["cross_split"]) == 6 and "test/Covid/COVID-00033.jpg" in dup["cross_split"]
    assert len(dup["groups"]) == 10  # the other 4 groups are copies within one split


def test_real_dataset_files(real_data):
    files = sorted(p for p in (real_data / "train" / "Covid").iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    assert len(files) >= 3
    for p in files[:3]:
        full = decode_image(p)
        fast = decode_image(p, draft_size=256)
        assert full.dtype == fast.dtype == np.uint8
        assert full.ndim == fast.ndim == 2
        assert min(fast.shape) >= min(256, min(full.shape))
        a = resize_square(full, 128).astype(int)
        b = resize_square(fast, 128).astype(int)
        assert np.abs(a - b).mean() < 6
