"""The generalisation experiment (``reproduce --data --add --external``) and per-image sources in stored
predictions (issue 11), on tiny synthetic folders: LeNet-5, 32 px, one epoch."""
import json
import shutil

import numpy as np
import pytest

from cxrviz.cli import main
from cxrviz.data.synthetic import write_folder
from cxrviz.external import score_run
from cxrviz.generalise import MIXED, OPTIMISTIC, SINGLE
from cxrviz.runs import list_runs

TINY = ["--archs", "lenet5", "--img-size", "32", "--epochs", "1", "--quiet", "--precision", "fp32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, synthetic_folder):
    """An extra source of Normal images, and two external folders (Covid + Normal): one from unseen sources,
    one whose Normal images are copies of the extra source's files (a source seen in training)."""
    base = tmp_path_factory.mktemp("generalise")
    extra = write_folder(base / "extra-src", counts={"train": 6}, size=48, seed=7) / "train" / "Normal"
    unseen = write_folder(base / "unseen", counts={"test": 5}, size=48, seed=11) / "test"
    shutil.rmtree(unseen / "Viral Pneumonia")
    seen = base / "seen"
    shutil.copytree(unseen, seen)
    for f in sorted(extra.iterdir())[:3]:
        shutil.copy(f, seen / "Normal" / f"copy-{f.name}")
    return {"kaggle": str(synthetic_folder), "extra": str(extra), "unseen": str(unseen), "seen": str(seen)}


def _run(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_experiment_trains_both_arms_scores_them_and_reuses_stored_runs(folders, ckpt_root, capsys):
    args = ["reproduce", "--data", folders["kaggle"], "--add", f"Normal={folders['extra']}", "--external",
            folders["seen"], *TINY]
    rc, out, err = _run(args, capsys)
    assert rc == 0, err
    assert "training ..." in err and "[2/2]" in err  # progress lines while training
    runs = list_runs(ckpt_root)[0]
    assert len(runs) == 2
    assert SINGLE in out and MIXED in out and "internal acc" in out and "balanced acc" in out
    assert "recall Covid" in out and "recall Normal" in out
    # the external Normal folder holds copies of the extra source's files: said under the table, named
    assert OPTIMISTIC in out and ("external Normal: 3 image(s) from training source extra-src (3 byte-identical "
                                  "to its files; trained on by the mixed runs)") in out
    # again, as JSON: both runs are reused (nothing trained), and the numbers are measured as described; a run
    # stored before the preprocessing options existed (no such keys in its config) had them off: still reusable
    for run in runs:
        meta = json.loads((run.path / "run.json").read_text())
        meta["config"] = {k: v for k, v in meta["config"].items() if k not in ("clahe", "standardize", "lung_crop")}
        (run.path / "run.json").write_text(json.dumps(meta))
    runs = list_runs(ckpt_root)[0]
    rc, out, err = _run([*args, "--format", "json"], capsys)
    assert rc == 0, err
    assert "reusing stored run" in err and "training ..." not in err and len(list_runs(ckpt_root)[0]) == 2
    res = json.loads(out)
    rows = {r["training data"]: r for r in res["rows"]}
    assert set(rows) == {SINGLE, MIXED} and all(r["reused"] == "yes" for r in rows.values())
    assert res["overlap"] == [{"class": "Normal", "source": "extra-src", "identical": 3, "in_folder": 0,
                               "arms": MIXED}]
    by_id = {r.id: r for r in runs}
    for r in rows.values():
        run = by_id[r["run"]]
        p = run.predictions
        # internal accuracy: the Kaggle folder's test images only, from the sources stored with each prediction
        keep = np.asarray(p["sources"]) == "synthetic-cxr"
        pred = np.asarray(p["probs"]).argmax(1)
        assert keep.sum() == 24
        assert r["internal acc"] == pytest.approx(100 * np.mean(pred[keep] == np.asarray(p["labels"])[keep]))
        ext = score_run(run, folders["seen"], store=False)["external"]  # the engine `evaluate --data` uses
        assert r["external acc"] == pytest.approx(100 * ext["accuracy"])
        assert r["balanced acc"] == pytest.approx(100 * ext["balanced_accuracy"])
    mixed = by_id[rows[MIXED]["run"]]
    assert len(mixed.predictions["sources"]) > 24  # the mixed run's test split also holds the extra source's share
    # a mixed run stored without per-image sources cannot give the Kaggle-only accuracy: trained again instead
    f = mixed.path / "predictions.json"
    f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "sources"}))
    rc, out, err = _run([*args, "--format", "csv"], capsys)
    assert rc == 0 and out.splitlines()[0].startswith("model,training data,")
    assert err.count("training ...") == 1 and "mixed data" in err.split("training ...")[0].splitlines()[-1]
    assert len(list_runs(ckpt_root)[0]) == 3


def test_no_warning_when_the_external_sources_are_unseen(folders, ckpt_root, capsys):
    rc, out, err = _run(["reproduce", "--data", folders["kaggle"], "--add", f"Normal={folders['extra']}",
                         "--external", folders["unseen"], *TINY], capsys)
    assert rc == 0, err
    assert OPTIMISTIC not in out and "internal = test split of synthetic-cxr only (24 images" in out


def test_an_external_folder_inside_a_training_source_is_flagged(folders, ckpt_root, capsys):
    """The Kaggle folder's own test split as the 'external' folder: every file lies in a training source."""
    rc, out, err = _run(["reproduce", "--data", folders["kaggle"], "--external", folders["kaggle"], *TINY,
                         "--format", "json"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert [r["training data"] for r in res["rows"]] == [SINGLE]  # no --add: the single-source arm only
    assert {o["class"] for o in res["overlap"]} == {"Covid", "Normal", "Viral Pneumonia"}
    assert all(o["in_folder"] == 8 and o["arms"] == "both" for o in res["overlap"])


@pytest.mark.parametrize("extra, expect", [
    (["--external", "/nonexistent/folder"], "external folder not found"),
    (["--add", "Pneumothorax={extra}", "--external", "{seen}"], "Pneumothorax"),
    (["--external", "{seen}", "--archs", "nosuchnet"], "unknown architecture"),
    (["--format", "json"], "go with --external FOLDER"),
    (["--external", "{seen}", "--map", "Covid=Pneumothorax"], "Pneumothorax"),
])
def test_bad_input_is_one_line(folders, ckpt_root, capsys, extra, expect):
    args = ["reproduce", "--data", folders["kaggle"], *[a.format(**folders) for a in extra]]
    if "--archs" not in args:
        args += ["--archs", "lenet5"]
    rc, out, err = _run(args, capsys)
    assert rc == 2 and expect in err and len(err.strip().splitlines()) == 1, err
    assert list_runs(ckpt_root)[0] == []


def test_external_needs_data(ckpt_root, capsys, folders):
    rc, _, err = _run(["reproduce", "--external", folders["seen"], "--archs", "lenet5"], capsys)
    assert rc == 2 and "--external needs --data" in err


def test_stored_predictions_carry_each_images_source_and_evaluate_reports_per_source(folders, ckpt_root, capsys):
    rc, _, err = _run(["train", "--arch", "lenet5", "--data", folders["kaggle"], "--add", f"Normal={folders['extra']}",
                       "--img-size", "32", "--epochs", "1", "--quiet", "--precision", "fp32"], capsys)
    assert rc == 0, err
    run, = list_runs(ckpt_root)[0]
    p = run.predictions
    assert len(p["sources"]) == len(p["paths"]) and set(p["sources"]) == {"synthetic-cxr", "extra-src"}
    assert all(s == "extra-src" for s, path in zip(p["sources"], p["paths"]) if "extra-src" in str(path))
    pred, y, srcs = np.asarray(p["probs"]).argmax(1), np.asarray(p["labels"]), np.asarray(p["sources"])
    per = run.evaluation["per_source"]
    for s in ("synthetic-cxr", "extra-src"):
        assert per[s]["n"] == int((srcs == s).sum())
        assert per[s]["accuracy"] == pytest.approx(float(np.mean(pred[srcs == s] == y[srcs == s])))
    rc, out, err = _run(["evaluate", run.id], capsys)
    assert rc == 0, err
    assert f"source extra-src: {100 * per['extra-src']['accuracy']:.1f} % of {per['extra-src']['n']}" in out


def test_links_into_a_training_sources_real_folder_are_flagged(folders, tmp_path, ckpt_root, capsys):
    """One folder of images split by links: the training source links to some files, the external folder to
    the others. No file is shared, but they lie in one real folder (one hospital's export): flagged."""
    real = write_folder(tmp_path / "one-hospital", counts={"train": 8}, size=48, seed=5) / "train" / "Normal"
    files = sorted(real.iterdir())
    train_links, ext = tmp_path / "linked-train", tmp_path / "ext"
    train_links.mkdir()
    for f in files[:5]:
        (train_links / f.name).symlink_to(f)
    shutil.copytree(folders["unseen"], ext)
    for f in files[5:]:
        (ext / "Normal" / f.name).symlink_to(f)
    rc, out, err = _run(["reproduce", "--data", folders["kaggle"], "--add", f"Normal={train_links}:train",
                         "--external", str(ext), *TINY, "--format", "json"], capsys)
    assert rc == 0, err
    assert json.loads(out)["overlap"] == [{"class": "Normal", "source": "linked-train", "identical": 0,
                                           "in_folder": 3, "arms": MIXED}]


def test_tables_print_percents_with_one_decimal_and_fractions_with_three(capsys):
    """A recall of 1 in 275 is "0.4" in a percent column (it printed "0.364"); ECE and ROC-AUC stay fractions."""
    from cxrviz.cli_external import _print

    _print([{"model": "ResNet-18", "recall Normal": 100 / 275, "recall Covid": 100.0, "ECE": 0.0123,
             "AUC Covid": 0.5}], "table")
    out = capsys.readouterr().out.splitlines()[1].split()
    assert out == ["ResNet-18", "0.4", "100.0", "0.012", "0.500"], out
