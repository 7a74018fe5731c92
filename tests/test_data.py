"""Dataset discovery/validation, the decode-once cache and batched augmentation, on real files."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrviz.data import (
    AUGMENT_LEVELS,
    DatasetError,
    ImageCache,
    augment_batch,
    find_duplicates,
    load_split,
    open_dataset,
    synthetic_source,
)
from cxrviz.data.dataset import forget_splits


def _mini_dataset(folder: Path, dst: Path, per_class: int = 3, test_name: str = "test") -> Path:
    """A small copy of a Kaggle-layout folder (the session's synthetic folder: real PNG/JPEG files)."""
    for split, name in (("train", "train"), ("test", test_name)):
        for c in ("Covid", "Normal", "Viral Pneumonia"):
            (dst / name / c).mkdir(parents=True)
            for f in sorted((folder / split / c).iterdir())[:per_class]:
                shutil.copy(f, dst / name / c / f.name)
    return dst


def test_synthetic_default_is_labelled():
    src = open_dataset(None)
    assert src.synthetic and "synthetic" in src.label
    assert src.classes == ["Covid", "Normal", "Viral Pneumonia"]
    s = load_split(src, "train", 48)
    assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 48, 48)
    assert set(s.labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("make,expect", [
    (lambda d: d / "missing", "dataset folder not found"),
    (lambda d: d, "no train/ folder"),
])
def test_bad_folders(tmp_path, make, expect):
    with pytest.raises(DatasetError, match=expect):
        open_dataset(make(tmp_path))


def test_no_test_split_and_class_mismatch_and_empty_class(tmp_path, synthetic_folder):
    root = _mini_dataset(synthetic_folder, tmp_path / "ds", per_class=1)
    shutil.rmtree(root / "test" / "Normal")
    with pytest.raises(DatasetError, match="different classes.*only in train: \\['Normal'\\]"):
        open_dataset(root)
    (root / "test" / "Normal").mkdir()
    with pytest.raises(DatasetError, match="class 'Normal' has no images in test/"):
        open_dataset(root)
    shutil.rmtree(root / "test")
    with pytest.raises(DatasetError, match="no test/"):
        open_dataset(root)


def test_val_split_junk_and_nested_root(tmp_path, synthetic_folder):
    root = _mini_dataset(synthetic_folder, tmp_path / "download" / "Covid19-dataset", per_class=2, test_name="val")
    (root / "train" / "Covid" / ".DS_Store").write_bytes(b"\0\0junk")
    (root / "train" / "Covid" / "Thumbs.db").write_bytes(b"junk")
    (root / "train" / "Covid" / "notes").mkdir()
    (root / "train" / "Covid" / "notes" / "readme.txt").write_text("hi")
    (root / "train" / "Normal" / "readme.txt").write_text("not an image")
    src = open_dataset(tmp_path / "download")  # the folder holding the dataset folder also works
    assert src.root == root and src.split_dirs["test"] == "val"
    assert src.counts()["train"]["Covid"] == 2
    assert any("readme.txt" in i for i in src.ignored) and any("Thumbs.db" in i for i in src.ignored)


def test_unreadable_files_reported_and_skipped(tmp_path, synthetic_folder):
    root = _mini_dataset(synthetic_folder, tmp_path / "ds", per_class=2)
    (root / "train" / "Covid" / "broken.png").write_bytes(b"this is not a png")
    (root / "train" / "Normal" / "empty.jpg").write_bytes(b"")
    src = open_dataset(root)
    s = load_split(src, "train", 32, cache=ImageCache(None))
    assert len(s) == 6
    assert len(s.errors) == 2 and any("broken.png" in e for e in s.errors) and any("empty.jpg" in e for e in s.errors)


def test_decode_once_cache_memory_and_disk(tmp_path, synthetic_folder):
    root = _mini_dataset(synthetic_folder, tmp_path / "ds", per_class=2)
    src = open_dataset(root)
    cache = ImageCache(tmp_path / "cache")
    a = load_split(src, "train", 40, cache=cache)
    assert cache.decodes == 6
    forget_splits()
    b = load_split(src, "train", 40, cache=cache)  # memory hit
    assert cache.decodes == 6 and torch.equal(a.images, b.images)
    forget_splits()
    fresh = ImageCache(tmp_path / "cache")  # a "restart": disk hit, nothing decoded
    c = load_split(src, "train", 40, cache=fresh)
    assert fresh.decodes == 0 and torch.equal(a.images, c.images)
    assert len(list((tmp_path / "cache" / "40").glob("*.npy"))) == 6
    forget_splits()
    load_split(src, "train", 48, cache=fresh)  # another size is another key
    assert fresh.decodes == 6
    # a corrupt cache entry is ignored and rewritten, never trusted
    victim = next((tmp_path / "cache" / "40").glob("*.npy"))
    victim.write_bytes(b"garbage")
    stored = list((tmp_path / "cache" / "splits").glob("40-*.npy"))
    assert len(stored) == 1  # the whole split is stored too: a reopen is one file read
    stored[0].write_bytes(b"garbage")  # a corrupt stored split is not trusted either
    forget_splits()
    again = ImageCache(tmp_path / "cache")
    d = load_split(src, "train", 40, cache=again)
    assert again.decodes == 1 and torch.equal(a.images, d.images)


def test_content_keyed_cache_sees_changed_file(tmp_path, synthetic_folder):
    root = _mini_dataset(synthetic_folder, tmp_path / "ds", per_class=1)
    src = open_dataset(root)
    cache = ImageCache(tmp_path / "cache")
    a = load_split(src, "train", 32, cache=cache)
    target = src.files["train"][0][0]
    other = src.files["train"][1][0]
    shutil.copy(other, target)  # same name, new content
    forget_splits()
    b = load_split(open_dataset(root), "train", 32, cache=cache)
    assert torch.equal(b.images[0], a.images[1])


def test_augment_batch_shapes_range_and_determinism():
    x = torch.rand(8, 1, 32, 32)
    cfg = AUGMENT_LEVELS["standard"]
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, x)
    same = augment_batch(x, AUGMENT_LEVELS["none"], torch.Generator().manual_seed(1))
    assert torch.allclose(same, x, atol=1e-5)
    assert not cfg.hflip  # a chest is not left-right symmetric


def _augment_reference(x: torch.Tensor, cfg, g: torch.Generator) -> torch.Tensor:
    """The straightforward augmentation (before the pinned-copy change): the same random draws, in the same
    order, each parameter tensor copied to the device on its own."""
    import math

    import torch.nn.functional as F

    b = x.shape[0]
    area = torch.rand(b, generator=g) * (cfg.scale[1] - cfg.scale[0]) + cfg.scale[0]
    lo, hi = math.log(cfg.ratio[0]), math.log(cfg.ratio[1])
    r = torch.exp(torch.rand(b, generator=g) * (hi - lo) + lo)
    sx = torch.sqrt(area * r).clamp(max=1.0)
    sy = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, generator=g) * 2 - 1) * (1 - sy)
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(cfg.rotate_deg)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if cfg.hflip else torch.ones(b)
    theta = torch.stack([torch.stack([sx * torch.cos(ang) * flip, -sy * torch.sin(ang), tx], 1),
                         torch.stack([sx * torch.sin(ang) * flip, sy * torch.cos(ang), ty], 1)], 1)
    bright = (torch.rand(b, generator=g) * 2 - 1) * cfg.brightness
    contrast = 1 + (torch.rand(b, generator=g) * 2 - 1) * cfg.contrast
    theta, bright, contrast = (t.to(x.device, x.dtype) for t in (theta, bright, contrast))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean + bright.view(-1, 1, 1, 1)
    return x.clamp_(0, 1)


@pytest.mark.parametrize("level", ["none", "light", "standard", "standard+hflip"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_is_bit_identical_to_the_straightforward_version(level, dtype):
    """The one-copy (pinned on a GPU) parameter transfer changes nothing on the CPU: bit-identical output."""
    from dataclasses import replace

    cfg = AUGMENT_LEVELS[level.split("+")[0]]
    if level.endswith("+hflip"):
        cfg = replace(cfg, hflip=True)
    x = torch.rand(7, 1, 33, 40, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
    for seed in (0, 1, 2):
        ga, gb = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        a = augment_batch(x.clone(), cfg, ga)
        b = _augment_reference(x.clone(), cfg, gb)
        assert a.dtype == b.dtype == dtype and torch.equal(a, b)
        assert torch.equal(ga.get_state(), gb.get_state())  # the same random draws were consumed


def test_synthetic_source_counts():
    src = synthetic_source()
    counts = src.counts()
    assert set(counts) == {"train", "test"} and all(v > 0 for v in counts["train"].values())
    s = load_split(src, "test", 32)
    assert len(s) == sum(counts["test"].values())
    assert np.unique(s.labels.numpy()).tolist() == [0, 1, 2]


def test_duplicates_are_counted_exactly(synthetic_folder, tmp_path):
    root = _mini_dataset(synthetic_folder, tmp_path / "ds", per_class=2)
    assert find_duplicates(open_dataset(root)) == {"groups": [], "cross_split": [], "cross_source": []}
    normal = sorted((root / "train" / "Normal").iterdir())
    covid = sorted((root / "train" / "Covid").iterdir())
    shutil.copy(normal[0], root / "test" / "Normal" / "copy.jpeg")  # leakage: a training image in test/
    shutil.copy(covid[1], root / "test" / "Covid" / "copy-a.png")  # the same training image twice in test/
    shutil.copy(covid[1], root / "test" / "Covid" / "copy-b.png")
    shutil.copy(covid[0], root / "train" / "Covid" / "again.png")  # a copy within train/ only: not leakage
    dup = find_duplicates(open_dataset(root))
    assert dup["cross_split"] == ["test/Covid/copy-a.png", "test/Covid/copy-b.png", "test/Normal/copy.jpeg"]
    assert len(dup["groups"]) == 3 and sorted(len(g) for g in dup["groups"]) == [2, 2, 3]
