"""Multi-source datasets (folders merged class by class, each a named source), duplicate and near-duplicate
detection across sources, parallel decode and the memory-mapped cache: all on real files in tmp_path."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrviz.data import (
    DatasetError,
    ImageCache,
    dataset_spec,
    find_duplicates,
    load_split,
    near_duplicates,
    open_dataset,
    parse_add,
)
from cxrviz.data.dataset import forget_splits
from cxrviz.data.synthetic import make_split

CLASSES = ["Covid", "Normal", "Viral Pneumonia"]


def _flat(folder: Path, n: int, label: int = 1, seed: int = 5, size: int = 48) -> Path:
    """A flat folder of n images of one class (another 'source': other seed, other size)."""
    folder.mkdir(parents=True)
    imgs, labels = make_split("train", size, n_per_class=n, seed=seed)
    for i, img in enumerate(imgs[labels == label][:n]):
        Image.fromarray(img).save(folder / f"adult-{i:03d}.png")
    return folder


@pytest.fixture
def extra(tmp_path) -> Path:
    return _flat(tmp_path / "openist-normal" / "images", 10)


def test_add_class_folder_split_seeded_and_sources_flow_into_imageset(synthetic_folder, extra, tmp_path):
    src = open_dataset(str(synthetic_folder), add=[f"Normal={extra}"], split_fraction=0.2, seed=3)
    assert src.classes == CLASSES and not src.synthetic
    rows = {(r["source"], r["split"], r["class"]): r["n"] for r in src.source_counts()}
    assert rows[("openist-normal", "train", "Normal")] == 8 and rows[("openist-normal", "test", "Normal")] == 2
    assert rows[("synthetic-cxr", "train", "Normal")] == 24
    assert src.counts()["train"]["Normal"] == 32  # the old per split x class view still adds up
    # the same seed gives the same split; another seed another one
    again = open_dataset(str(synthetic_folder), add=[f"Normal={extra}"], split_fraction=0.2, seed=3)
    other = open_dataset(str(synthetic_folder), add=[f"Normal={extra}"], split_fraction=0.2, seed=4)
    def test_files(s):
        return sorted(str(p) for p, _ in s.files["test"] if "adult" in p.name)
    assert test_files(again) == test_files(src) and test_files(other) != test_files(src)
    s = load_split(src, "test", 32, cache=ImageCache(tmp_path / "c"))
    assert len(s.sources) == len(s) and s.sources.count("openist-normal") == 2
    assert s.sources.count("synthetic-cxr") == 24
    adult = [p for p, o in zip(s.paths, s.sources) if o == "openist-normal"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in adult)  # another source: absolute path
    # the run's stored description: every source with its path and a fingerprint, counts per source
    d = src.describe()
    assert {x["name"] for x in d["sources"]} == {"synthetic-cxr", "openist-normal"}
    assert all(len(x["fingerprint"]) == 16 and Path(x["path"]).is_dir() for x in d["sources"])
    assert any("'Covid' comes from one source only" in w for w in d["warnings"])
    # the spec reopens the same dataset (what TrainConfig.data stores)
    assert open_dataset(d["spec"]).counts() == src.counts()
    json.dumps(d)


def test_single_folder_spec_is_a_plain_path_and_imageset_defaults(synthetic_folder):
    assert dataset_spec(str(synthetic_folder)) == str(synthetic_folder)
    assert dataset_spec([str(synthetic_folder)], []) == str(synthetic_folder)
    assert dataset_spec(None) is None
    src = open_dataset(str(synthetic_folder))
    assert src.spec is None and "sources" not in src.describe()
    s = load_split(src, "test", 32)
    assert set(s.sources) == {"synthetic-cxr"}


def test_two_complete_folders_merge(synthetic_folder, tmp_path):
    b = tmp_path / "hospital-b"
    shutil.copytree(synthetic_folder, b)
    src = open_dataset([str(synthetic_folder), str(b)])
    assert src.counts()["train"]["Covid"] == 48 and src.name == "hospital-b + synthetic-cxr"
    dup = find_duplicates(src)  # every file of b is a copy of one in the first folder
    assert len(dup["cross_source"]) == len(dup["groups"]) == 3 * (24 + 8)
    assert {o for g in dup["cross_source"] for o, _, _ in g} == {"synthetic-cxr", "hospital-b"}


def test_parse_add():
    assert parse_add("Normal=/a/b") == ("Normal", "/a/b", None)
    assert parse_add("Viral Pneumonia=/a/b:test") == ("Viral Pneumonia", "/a/b", "test")
    with pytest.raises(DatasetError, match="expected CLASS=PATH"):
        parse_add("/a/b")


@pytest.mark.parametrize("case,expect", [
    ("same-twice", "the same folder is given twice"),
    ("inside", "is inside"),
    ("unknown-class", "class 'Tuberculosis' is not one of the dataset's classes"),
    ("other-classes", "its classes differ"),
    ("no-images", "no image files in this folder"),
    ("nested", "it has sub-folders"),
])
def test_bad_sources_are_one_line_errors(case, expect, synthetic_folder, extra, tmp_path):
    data, add = [str(synthetic_folder)], []
    if case == "same-twice":
        add = [f"Normal={extra}", f"Covid={extra}"]
    elif case == "inside":
        add = [f"Normal={synthetic_folder / 'train' / 'Normal'}"]
    elif case == "unknown-class":
        add = [f"Tuberculosis={extra}"]
    elif case == "other-classes":
        b = tmp_path / "b"
        shutil.copytree(synthetic_folder, b)
        for split in ("train", "test"):
            shutil.copytree(b / split / "Normal", b / split / "Tuberculosis")
        data.append(str(b))
    elif case == "no-images":
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "readme.txt").write_text("x")
        add = [f"Normal={tmp_path / 'notes'}"]
    elif case == "nested":
        add = [f"Normal={extra.parent}"]
    with pytest.raises(DatasetError) as ei:
        open_dataset(data, add=add)
    assert expect in str(ei.value) and "\n" not in str(ei.value)


def test_source_with_no_readable_image_fails_the_split_and_stores_nothing(synthetic_folder, tmp_path):
    bad = tmp_path / "broken" / "images"
    bad.mkdir(parents=True)
    for i in range(4):
        (bad / f"x{i}.png").write_bytes(b"not a png at all")
    src = open_dataset([str(synthetic_folder)], add=[f"Normal={bad}:train"])
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(DatasetError, match="source broken: no readable image in train/"):
        load_split(src, "train", 32, cache=cache)
    assert not list((tmp_path / "cache").glob("splits/*"))  # nothing half-built is kept


def test_near_duplicates_find_reencoded_and_resized_copies(synthetic_folder, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_folder, root)
    original = min((root / "train" / "Covid").glob("*.png"))
    with Image.open(original) as im:  # the same radiograph, resized and re-encoded as JPEG, in the test split
        im.convert("L").resize((im.width * 2 - 7, im.height * 2 - 7)).save(root / "test" / "Covid" / "copy.jpg",
                                                                           quality=80)
    src = open_dataset(root)
    assert not any("copy.jpg" in f for f in find_duplicates(src)["cross_split"])  # not byte-identical
    near = near_duplicates(src, cache=ImageCache(tmp_path / "cache"))
    hit = [g for g in near["groups"] if any("copy.jpg" in f for _, f in g)]
    assert hit and any(f.endswith(original.name) for _, f in hit[0])
    assert "test/Covid/copy.jpg" in near["cross_split"]
    # distinct phantoms, alike as radiographs are, are not chained together: the copy is the only group
    assert len(near["groups"]) == 1 and len(near["groups"][0]) == 2



def _brute_groups(hashes, images, max_bits, max_mad):
    """Every pair compared: the reference near_groups must equal."""
    n = len(hashes)
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    for i in range(n):
        for j in range(i + 1, n):
            if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= max_bits and \
                    np.abs(images[i].astype(int) - images[j].astype(int)).mean() <= max_mad:
                parent[find(i)] = find(j)
    comp = {}
    for i in range(n):
        comp.setdefault(find(i), []).append(i)
    return sorted(sorted(g) for g in comp.values() if len(g) > 1)


def test_near_groups_with_many_exact_copies_equal_comparing_every_pair():
    """Exact copies are grouped before any pair is compared (a set of many copies of look-alike pictures made
    the pixel check quadratic in the copies); the groups are the same as comparing every pair."""
    from cxrviz.data.duplicates import NEAR_BITS, NEAR_MAD, dhash, near_groups

    base = make_split("x", 32, n_per_class=4, seed=3)[0]  # 12 phantoms, alike as radiographs are
    base = base.reshape(len(base), 32, 32)
    rng = np.random.default_rng(0)
    noisy = np.clip(base[:4].astype(int) + rng.integers(-3, 4, base[:4].shape), 0, 255).astype(np.uint8)
    images = np.concatenate([base, base, base[:5], noisy])[rng.permutation(12 + 12 + 5 + 4)]
    hashes = dhash(images)
    got = sorted(near_groups(hashes, NEAR_BITS, images, NEAR_MAD))
    assert got == _brute_groups(hashes, images, NEAR_BITS, NEAR_MAD)
    assert sum(len(g) for g in got) >= 24  # every picture has at least its exact copy
    assert sorted(near_groups(hashes)) == _brute_groups(hashes, np.zeros_like(images), NEAR_BITS, 0.0)


def test_parallel_decode_equals_in_process(synthetic_folder, tmp_path):
    src = open_dataset(str(synthetic_folder))
    one = load_split(src, "train", 40, cache=ImageCache(tmp_path / "a"), workers=1)
    from cxrviz.data import cache as cache_mod

    old, cache_mod.MIN_PARALLEL = cache_mod.MIN_PARALLEL, 1
    try:
        c2 = ImageCache(tmp_path / "b")
        two = load_split(src, "train", 40, cache=c2, workers=2)
    finally:
        cache_mod.MIN_PARALLEL = old
    assert c2.decodes == len(one) == 72 and torch.equal(one.images, two.images)
    assert len(list((tmp_path / "b" / "40").glob("*.npy"))) == 72  # the workers wrote the per-image entries


def test_parallel_decode_falls_back_in_process_when_workers_cannot_start(synthetic_folder, tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from cxrviz.data import cache as cache_mod

    def broken(*a, **k):
        raise BrokenProcessPool("no main module to import")

    monkeypatch.setattr(cache_mod, "MIN_PARALLEL", 1)
    monkeypatch.setattr(cache_mod, "_decode_parallel", broken)
    src = open_dataset(str(synthetic_folder))
    c = ImageCache(tmp_path / "c")
    s = load_split(src, "test", 40, cache=c, workers=2)
    assert len(s) == 24 and c.decodes == 24 and not s.errors


def test_memory_mapped_split_gives_the_same_tensors(synthetic_folder, tmp_path):
    src = open_dataset(str(synthetic_folder))
    ram = load_split(src, "train", 40, cache=ImageCache(tmp_path / "a"), ram_budget_bytes=1 << 40)
    forget_splits()
    mapped = load_split(src, "train", 40, cache=ImageCache(tmp_path / "b"), ram_budget_bytes=1000)
    assert not ram.mapped and mapped.mapped
    assert isinstance(mapped.images.numpy().base, np.memmap) or isinstance(mapped.images.numpy(), np.memmap) \
        or mapped.images.numpy().base is not None
    assert torch.equal(ram.images, mapped.images) and torch.equal(ram.labels, mapped.labels)
    idx = torch.tensor([5, 0, 71, 3])
    assert torch.equal(ram.images[idx], mapped.images[idx])  # what the trainer does per batch
    assert mapped.images.to("cpu").data_ptr() == mapped.images.data_ptr()  # .to(cpu) keeps it mapped
    m1, s1 = ram.mean_std()
    m2, s2 = mapped.mean_std(chunk=7)
    assert abs(m1 - m2) < 1e-9 and abs(s1 - s2) < 1e-9
    x = ram.images.double() / 255  # the chunked statistics are the plain ones
    assert abs(m1 - float(x.mean())) < 1e-9 and abs(s1 - float(x.std())) < 1e-9
    forget_splits()
    again = load_split(src, "train", 40, cache=ImageCache(tmp_path / "b"), ram_budget_bytes=1000)
    assert again.mapped and torch.equal(again.images, ram.images)  # a reopen maps the stored split


def test_cli_trains_on_a_multi_source_dataset_and_stores_its_sources(synthetic_folder, extra, ckpt_root, capsys):
    from cxrviz.cli import main
    from cxrviz.runs import list_runs

    assert main(["train", "--arch", "lenet5", "--data", str(synthetic_folder), "--add", f"Normal={extra}",
                 "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--quiet"]) == 0
    (run,), _ = list_runs()
    ds = run.meta["dataset"]
    assert {s["name"] for s in ds["sources"]} == {"synthetic-cxr", "openist-normal"}
    assert {(r["source"], r["split"]) for r in ds["source_counts"]} >= {("openist-normal", "test")}
    assert open_dataset(run.config["data"]).counts() == open_dataset(ds["spec"]).counts()
    assert main(["evaluate", run.id]) == 0  # reopens the merged dataset from the run alone
    out = capsys.readouterr()
    assert f"{ds['test_n']} test images" in out.out
    assert "warning: class 'Covid' comes from one source only" in out.err


def test_cli_bad_source_is_one_line(synthetic_folder, ckpt_root, capsys):
    from cxrviz.cli import main

    assert main(["train", "--arch", "lenet5", "--data", str(synthetic_folder), "--data", str(synthetic_folder),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the same folder is given twice" in err and len(err.splitlines()) == 1
    assert not ckpt_root.exists() or not any(ckpt_root.iterdir())  # nothing stored


def test_overview_scans_are_stored_and_redone_when_a_file_changes(synthetic_folder, tmp_path, monkeypatch):
    import os

    from PIL import Image as PILImage

    from cxrviz.data import image_size_stats

    root = tmp_path / "ds"
    shutil.copytree(synthetic_folder, root)
    cache = ImageCache(tmp_path / "cache")
    src = open_dataset(root)
    rows = image_size_stats(src, cache=cache)
    dups = find_duplicates(src, cache=cache)
    assert len(rows) == 96
    real_open = PILImage.open

    def no_reading(*a, **k):
        raise AssertionError("a stored scan must not open images")

    monkeypatch.setattr(PILImage, "open", no_reading)
    assert image_size_stats(open_dataset(root), cache=cache) == rows  # a reopen reads no image
    monkeypatch.setattr(PILImage, "open", real_open)
    victim = next((root / "train" / "Covid").glob("*.png"))
    PILImage.new("L", (50, 30)).save(victim)
    os.utime(victim, ns=(1, 1))
    rows2 = image_size_stats(open_dataset(root), cache=cache)
    assert {(r["width"], r["height"]) for r in rows2 if r["file"] == victim.name} == {(50, 30)}
    assert find_duplicates(open_dataset(root), cache=cache)["groups"] == dups["groups"]


def test_spec_editing_for_the_overview(synthetic_folder, extra):
    from cxrviz.data.sources import drop_source, extend_spec, spec_parts

    spec = extend_spec(str(synthetic_folder), add=("Normal", str(extra), "train"))
    folders, adds, _, _ = spec_parts(spec)
    assert folders == [str(synthetic_folder)] and adds == [("Normal", str(extra), "train")]
    assert open_dataset(spec).counts()["train"]["Normal"] == 34
    assert drop_source(spec, 1) == str(synthetic_folder)  # back to the plain single-folder form


def test_overview_page_builds_a_multi_source_dataset_that_train_uses(synthetic_folder, extra, ckpt_root,
                                                                      monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(ckpt_root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/overview.py").run()
    at.text_input(key="ov_path").set_value(str(synthetic_folder)).run()
    at.text_input(key="ov_add_path").set_value(str(extra)).run()
    at.selectbox(key="ov_add_class").set_value("Normal").run()
    at.button(key="ov_add").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("2 sources" in s.value for s in at.success)
    assert any("'Covid' comes from one source only" in w.value for w in at.warning)
    spec = at.session_state["data_path"]
    assert open_dataset(spec).counts()["train"]["Normal"] == 32  # what Train's TrainConfig(data=...) gets
    assert any(c.proto.spec and "openist-normal" in c.proto.spec for c in at.get("plotly_chart"))
    at.button(key="ov_near").click().run()
    assert any("group(s) of near-identical images" in c.value for c in at.caption) and not at.exception
    at.button(key="ov_add").click().run()  # the same folder again: one line, the dataset is unchanged
    assert len(at.error) == 1 and "the same folder is given twice" in at.error[0].value
    assert at.session_state["data_path"] == spec
    at.button(key="ov_drop_1").click().run()  # remove the added folder: back to the single folder
    assert at.session_state["data_path"] == str(synthetic_folder) and not at.exception


def test_trainer_streams_from_a_memory_mapped_split_with_the_same_result(synthetic_folder, tmp_path, monkeypatch):
    from cxrviz.data import cache as cache_mod
    from cxrviz.train import TrainConfig, train

    cfg = TrainConfig(arch="lenet5", data=str(synthetic_folder), img_size=32, epochs=1, batch_size=16, seed=0,
                      device="cpu")
    results = []
    for budget in ("64G", "1"):  # in RAM, then a memory-mapped file (the budget is one byte)
        monkeypatch.setenv("CXRVIZ_RAM_BUDGET", budget)
        monkeypatch.setattr(cache_mod, "_DEFAULT", ImageCache(tmp_path / f"cache-{budget}"))
        forget_splits()
        results.append(train(cfg))
        assert load_split(open_dataset(str(synthetic_folder)), "train", 32).mapped == (budget == "1")
    ram, mapped = results
    assert ram.norm == mapped.norm and ram.evaluation["accuracy"] == mapped.evaluation["accuracy"]
    assert all(torch.equal(ram.state_dict[k], mapped.state_dict[k]) for k in ram.state_dict)
