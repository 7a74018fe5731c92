"""The benchmark command and the GPU script run end to end (tiny configurations). These tests check
that the reports are produced and well-formed, never the timings."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import SYNTHETIC_COUNTS
from cxrviz.bench import format_report, run_bench, sanity_problems

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_report_is_well_formed(tmp_path):
    from cxrviz.data.synthetic import write_folder

    # radiograph-sized files (640 px; the Kaggle originals are 416-4248 px), so decoding costs what it costs on real
    # data and the cache's speed-up is measured against a realistic naive pipeline
    data = write_folder(tmp_path / "synthetic-cxr", counts={"train": 24, "test": 8}, size=640)
    out = tmp_path / "bench.json"
    r = run_bench(quick=True, data=str(data), out=str(out), log=lambda s: None)
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["machine"]["torch"]
    a = saved["input"]
    assert a["images"] == 72 and a["cxrviz_decodes"] == 72 and a["naive_epoch_s"] > 0  # each file decoded once
    assert a["cxrviz_later_epoch_s"] > 0 and a["speedup_after_first"] > 0
    assert {o["arch"] for o in saved["overhead"]} == {"resnet18", "alexnet"}
    assert all(o["trainer_img_s"] > 0 and o["bare_img_s"] > 0 for o in saved["overhead"])
    e = saved["end_to_end"]
    assert e["wall_s"] >= e["train_s"] > 0 and 0 <= e["test_acc"] <= 1
    p = saved["app"]
    assert p["predict_all_s"] > 0 and p["gradcam_all_s"] > 0 and p["registry_lag_s"] >= 0
    x = saved["external"]
    assert x["n_external"] == 12 and x["n_test"] == 24 and x["score_s"] > 0 and x["probe_s"] > 0
    text = format_report(r)
    est = saved["estimate"]
    assert [x["arch"] for x in est] == ["lenet5", "resnet18"]
    assert all(x["estimate_s"] > 0 and x["measured_s"] > 0 and x["ratio"] > 0 for x in est)
    for heading in ("a. input pipeline", "b. trainer overhead", "c. end to end", "d. app latencies",
                    "e. run-time estimate", "external validation"):
        assert heading in text
    # the side-by-side ratios are sane (what `bench --quick` checks to exit 0): a regression fails here
    assert sanity_problems(saved) == []


def test_bench_sanity_flags_a_regression(capsys):
    """`bench --quick` exits non-zero when a ratio says something regressed: checked on reports, not timed."""
    good = {"input": {"speedup_after_first": 40.0}, "end_to_end": {"test_acc": 0.5}, "app": {"registry_lag_s": 0.001},
            "overhead": [{"arch": "resnet18", "size": 64, "trainer_img_s": 90.0, "bare_img_s": 100.0}]}
    assert sanity_problems(good) == []
    slow_cache = {**good, "input": {"speedup_after_first": 3.0}}
    assert sanity_problems(slow_cache) == ["input pipeline: cache speed-up 3.0x is not above 5x"]
    slow_trainer = {**good, "overhead": [{"arch": "alexnet", "size": 64, "trainer_img_s": 20.0, "bare_img_s": 100.0}]}
    assert len(sanity_problems(slow_trainer)) == 1 and "alexnet" in sanity_problems(slow_trainer)[0]
    assert len(sanity_problems({**good, "end_to_end": {"test_acc": None}, "app": {}})) == 2


def test_gpu_script_runs_on_cpu_with_tiny_config(synthetic_folder, tmp_path):
    env = dict(os.environ, DEVICE="cpu", IMG="64", EPOCHS="1", SKIP_INSTALL="1",
               CXRVIZ_CHECKPOINTS=str(tmp_path / "ck"), CXRVIZ_CACHE=os.environ["CXRVIZ_CACHE"])
    p = subprocess.run(["bash", "benchmarks/gpu.sh", str(synthetic_folder)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("AlexNet", "VGG-19", "GoogLeNet", "ResNet-18"):
        assert any(line.startswith(name) for line in p.stdout.splitlines()), p.stdout
    assert "all four models, wall clock" in p.stdout
    assert "where the time went" in p.stdout
    assert len(list((tmp_path / "ck").iterdir())) == 4


def test_recipe_sweep_runs_and_reports(synthetic_folder, tmp_path):
    out = tmp_path / "sweep.jsonl"
    p = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--data", str(synthetic_folder), "--arch", "lenet5",
                        "--grid", "tiny", "--img-size", "32", "--epochs", "1", "--seeds", "0", "1", "--jobs", "2",
                        "--threads", "1", "--device", "cpu", "--precision", "bf16", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all("error" not in r for r in rows), rows
    assert all(r["precision"] == "bf16" for r in rows)  # --precision reaches every run (the next test: fp32)
    assert {(r["variant"], r["seed"]) for r in rows} == {(v, s) for v in ("recipe", "lr5e-4") for s in (0, 1)}
    assert all(0 <= r["acc"] <= 1 and len(r["accs"]) == 1 and r["img_size"] == 32 for r in rows)
    assert next(r for r in rows if r["variant"] == "lr5e-4")["overrides"] == {"lr": 5e-4}
    # each row records the settings it ran with, the recipe's included (it changes when the registry does)
    assert {r["variant"]: r["settings"]["lr"] for r in rows} == {"recipe": 2e-3, "lr5e-4": 5e-4}
    assert all(r["settings"]["optimizer"] == "adamw" and r["settings"]["standardize"] is False for r in rows)
    table = p.stdout[p.stdout.index("final test accuracy"):]
    assert "recipe" in table and "lr5e-4" in table and "mean" in table


def test_recipe_sweep_adds_a_source_scores_external_and_summarizes(synthetic_folder, tmp_path):
    """Issue 11's sweep: --add trains on a mixed set, every run is stored and scored on --external, and the
    summary (mean ± sd over seeds, the variant validation chooses) is rebuilt from the --out file alone."""
    import shutil

    extra = tmp_path / "adult-normals"
    extra.mkdir()
    for f in sorted((synthetic_folder / "train" / "Normal").iterdir())[:6]:
        shutil.copy(f, extra / ("x-" + f.name))
    out, store = tmp_path / "sweep.jsonl", tmp_path / "runs"
    p = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--data", str(synthetic_folder), "--arch", "lenet5",
                        "--add", f"Normal={extra}:train", "--grid", "tiny", "--img-size", "32", "--epochs", "1",
                        "--seeds", "0", "1", "--jobs", "2", "--threads", "1", "--device", "cpu", "--out", str(out),
                        "--precision", "fp32", "--save", str(store), "--external", f"ext={synthetic_folder / 'test'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all("error" not in r for r in rows), rows
    for r in rows:
        run = json.loads((store / r["run_id"] / "run.json").read_text())
        assert str(extra) in json.dumps(run["config"]["data"])  # trained on the mixed set
        assert r["precision"] == run["config"]["precision_used"] == "fp32"
        e = r["external"]["ext"]
        assert e["n"] == 3 * SYNTHETIC_COUNTS["test"] and 0 <= e["balanced_accuracy"] <= 1
        assert set(e["recall"]) == {"Covid", "Normal", "Viral Pneumonia"}
        assert len(list((store / r["run_id"] / "external").glob("*.json"))) == 1  # the score is stored with the run
    again = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--summarize", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert any(f"--add Normal={extra}:train" in ln for ln in lines)
    recipe = next(ln for ln in lines if ln.startswith("| lenet5 | recipe | 0/1 |"))
    assert " ± " in recipe and recipe.count("|") == 8  # 7 cells
    vals = {v: sum(r["val_acc"] for r in rows if r["variant"] == v) for v in ("recipe", "lr5e-4")}
    want = "lr5e-4" if vals["lr5e-4"] > vals["recipe"] + 1e-9 else "recipe"
    assert f"chosen on validation: lenet5: {want}" in again.stdout


def test_recipe_sweep_chooses_on_k_fold_cross_validation(synthetic_folder, tmp_path):
    """--folds K: fold f of K held out and trained with seed f, so a variant's K runs validate every training
    image once; the summary names the protocol. An unknown variant is one clear error."""
    out = tmp_path / "cv.jsonl"
    p = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--data", str(synthetic_folder), "--arch", "lenet5",
                        "--grid", "tiny", "--variants", "recipe", "--folds", "3", "--img-size", "32", "--epochs", "1",
                        "--jobs", "2", "--threads", "1", "--device", "cpu", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["seed"] for r in rows) == [0, 1, 2] and all(r["val_folds"] == 3 for r in rows)
    assert sum(r["val_n"] for r in rows) == 3 * SYNTHETIC_COUNTS["train"]  # every training image validated once
    assert all(r["overrides"] == {"val_folds": 3, "val_fold": r["seed"]} for r in rows)
    assert "3-fold cross-validation" in p.stdout and "| lenet5 | recipe | 0/1/2 |" in p.stdout
    assert "| model | variant | folds | validation acc | test acc |\n" in p.stdout  # no empty column
    bad = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--grid", "tiny", "--variants", "nope"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not in the 'tiny' grid" in bad.stderr
    one = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--arch", "lenet5", "--grid", "tiny",
                          "--folds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert one.returncode == 2 and "validation folds must be" in one.stderr


def test_external_folders_are_links_split_without_overlap(tmp_path):
    ext = tmp_path / "external"
    (ext / "figure1-covid" / "images").mkdir(parents=True)
    (ext / "openist-normal" / "images").mkdir(parents=True)
    for i in range(4):
        (ext / "figure1-covid" / "images" / f"COVID-{i}.jpg").write_bytes(b"c%d" % i)
    for i in range(160):
        (ext / "openist-normal" / "images" / f"{i}-n.jpg").write_bytes(b"n%d" % i)
    target = tmp_path / "folders"
    for _ in range(2):  # a second build replaces the first
        p = subprocess.run(["python3", "benchmarks/external_folders.py", str(ext), str(target)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    names = {d: {f.name for f in (target / d).iterdir()} for d in
             ("unseen/Covid", "unseen/Normal", "openist150", "other/Covid", "other/Normal")}
    assert {d: len(v) for d, v in names.items()} == {"unseen/Covid": 4, "unseen/Normal": 160, "openist150": 150,
                                                    "other/Covid": 4, "other/Normal": 10}
    assert not names["openist150"] & names["other/Normal"]
    assert names["openist150"] | names["other/Normal"] == names["unseen/Normal"]
    assert all(f.is_symlink() and f.resolve().parent.parent.parent == ext.resolve()
               for f in (target / "openist150").iterdir())
    bad = subprocess.run(["python3", "benchmarks/external_folders.py", str(tmp_path / "nope"), str(target)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr


def test_synthetic_external_folder_holds_only_the_class_folders(tmp_path, monkeypatch):
    # without ../shared beside the clone the bench writes a synthetic external folder; a stray working folder
    # in it would be read as an unknown class ("external class 'syn' is not a class of the run")
    from cxrviz import bench_external
    from cxrviz.external import open_external

    monkeypatch.setattr(bench_external, "EXTERNAL_DATA", tmp_path / "absent")
    what = bench_external._external_folder(tmp_path / "ext", 9, ["Covid", "Normal", "Viral Pneumonia"])
    assert what == "synthetic files"
    assert sorted(p.name for p in (tmp_path / "ext").iterdir()) == ["Covid", "Normal", "Viral Pneumonia"]
    assert len(open_external(tmp_path / "ext", ["Covid", "Normal", "Viral Pneumonia"]).files) >= 3


def test_patch_experiment_trains_on_lung_patches_and_scores_external(synthetic_folder, tmp_path):
    """benchmarks/patch_experiment.py (the README's lung-patch rows): every training and scoring patch is centred
    inside the lung-field template, each patch is standardised, and a run reports validation, test and the
    external folder's balanced accuracy, recall and ROC AUC."""
    import sys

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import patch_experiment as pe

    from cxrviz.data.preprocess import cropped_template
    from cxrviz.lungs import lung_mask

    cs = pe.centres(64, 16)
    mask = lung_mask(64, cropped_template(64))
    assert len(cs) > 50 and mask[cs[:, 0], cs[:, 1]].all() and (~mask).any()
    assert (cs.min(0) >= 8).all() and (cs.max(0) < 64 - 8).all()  # every patch lies in the frame
    p = pe.cut(torch.rand(3, 1, 64, 64) * 0.3 + 0.5, cs[:3], 16)
    assert p.shape == (3, 1, 16, 16) and torch.allclose(p.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert len(pe.grid(cs, 5)) == 5 and np.isin(pe.grid(cs, 5)[:, 0], cs[:, 0]).all()

    out = tmp_path / "patch.jsonl"
    r = subprocess.run(["python3", "benchmarks/patch_experiment.py", "--data", str(synthetic_folder),
                        "--img-size", "64", "--patch", "32", "--epochs", "1", "--per-image", "2", "--batch", "8",
                        "--grid", "4", "--external", f"ext={synthetic_folder / 'test'}", "--out", str(out),
                        "--probs", str(tmp_path / "probs")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text().splitlines()[0])
    assert row["patch"] == 32 and row["img_size"] == 64 and 0 <= row["val_acc"] <= 1 and 0 <= row["test_acc"] <= 1
    e = row["external"]["ext"]
    assert 0 <= e["balanced_accuracy"] <= 1 and set(e["recall"]) == {"Covid", "Normal", "Viral Pneumonia"}
    assert sum(e["predicted"]) == 3 * SYNTHETIC_COUNTS["test"] and "macro" in e["roc_auc"]


def test_deconfound_experiment_learns_normal_from_the_same_age_classes_only(synthetic_folder, tmp_path):
    """benchmarks/deconfound_experiment.py (the README's "same-age stage 1" rows): stage 1 trains on Normal and
    Viral Pneumonia only, without the 3-class run's validation images; every split is scored by stage 2 alone and
    by the gate; the summary chooses the stage-1 variant on validation alone."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import deconfound_experiment as de

    from cxrviz.data import open_dataset
    from cxrviz.data.dataset import display_path

    src = open_dataset(str(synthetic_folder))
    drop = {display_path(src, p) for p, _ in src.files["train"][:3]} | {display_path(src, p) for p, _ in
                                                                         src.files["train"][-2:]}
    sub = de.subset_source(src, ("Normal", "Viral Pneumonia"), drop)
    assert sub.classes == ["Normal", "Viral Pneumonia"]
    kept = {display_path(src, p): y for p, y in sub.files["train"]}
    assert not drop & set(kept) and len(kept) == 2 * SYNTHETIC_COUNTS["train"] - 2  # the last 2 are Viral Pneumonia
    assert all(("Normal" in k) == (y == 0) for k, y in kept.items())
    assert len(sub.files["test"]) == 2 * SYNTHETIC_COUNTS["test"]
    with pytest.raises(SystemExit, match="no class 'Pneumonia'"):
        de.subset_source(src, ("Normal", "Pneumonia"), set())

    out, runs = tmp_path / "d.jsonl", tmp_path / "runs"
    r = subprocess.run(["python3", "benchmarks/deconfound_experiment.py", "--data", str(synthetic_folder), "--arch",
                        "lenet5", "--img-size", "32", "--epochs", "1", "--seeds", "0", "--runs", str(runs),
                        "--external", f"ext={synthetic_folder / 'test'}", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["variant"] for x in rows] == ["recipe", "crop-clahe-std-aug"]
    assert len({x["stage2_run"] for x in rows}) == 1  # one 3-class run per seed
    stage2 = json.loads((runs / rows[0]["stage2_run"] / "run.json").read_text())
    val = stage2["dataset"]["val_paths"]
    same_age_val = sum("Covid" not in v for v in val)
    for x in rows:
        stage1 = json.loads((runs / x["stage1_run"] / "run.json").read_text())
        assert stage1["dataset"]["classes"] == x["stage1_classes"] == ["Normal", "Viral Pneumonia"]
        # every Normal / Viral Pneumonia training image except the 3-class run's validation ones
        assert x["stage1_train_n"] == stage1["dataset"]["train_n"] == 2 * SYNTHETIC_COUNTS["train"] - same_age_val
        assert x["splits"]["val"]["n"] == len(val) and x["splits"]["ext"]["n"] == 3 * SYNTHETIC_COUNTS["test"]
        for split in x["splits"].values():
            assert set(split) == {"n", "stage2", "gate", "gate_t", "stage1_normal_auc"}
            assert 0 <= split["gate"]["balanced_accuracy"] <= 1
            assert sum(split["gate"]["predicted"].values()) == split["n"]
    assert stage1["config"]["lung_crop"] and stage1["config"]["clahe"]  # the second variant's preprocessing
    again = subprocess.run(["python3", "benchmarks/deconfound_experiment.py", "--summarize", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    v = {(x["variant"], c): (x["splits"]["val"][c]["accuracy"], x["splits"]["val"]["stage1_normal_auc"] or 0)
         for x in rows for c in ("gate", "gate_t")}
    want = max(v, key=lambda k: (v[k], -list(v).index(k)))
    assert f"chosen on validation (combined accuracy, then stage-1 AUC): {want[0]}, {de.COMBINATIONS[want[1]]}" \
        in again.stdout
    for x in rows:
        assert f"\n| {x['variant']} | gate | 0 | 0.5 | " in again.stdout
        assert f"\n| {x['variant']} | gate, threshold chosen on validation | 0 | {x['threshold']:g} | " in again.stdout
    assert "`ext` balanced (combined)" in again.stdout
    # its runs never land in the app's run store by default (a stage-1 run has two of the three classes)
    bad = subprocess.run(["python3", "benchmarks/deconfound_experiment.py", "--data", str(synthetic_folder)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--runs FOLDER is needed" in bad.stderr


def test_age_adversarial_stage1_reverses_the_adversary_and_factorises_the_softmax(synthetic_folder, tmp_path):
    """The stop-28 stage 1: P(Normal) is the head's alone, P(Covid) = P(abnormal) * the adversary's P(Covid); the
    adversary's loss trains the adversary as usual but reaches the trunk reversed (gradient reversal); and the
    script trains it on every class with the 3-class run's validation images held out."""
    import sys

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import deconfound_experiment as de

    from cxrviz.models import get_spec

    classes = ["Covid", "Normal", "Viral Pneumonia"]
    x = torch.randn(6, 1, 32, 32)
    y = torch.tensor([0, 2, 0, 2, 0, 2])  # abnormal images only: the head's part of the loss is the same for both
    grads = {}
    for lam in (1.0, -1.0):  # -1: no reversal
        torch.manual_seed(0)
        m = de.AgeAdversarial(get_spec("lenet5").build(num_classes=3), classes, lam=lam).eval()
        with torch.no_grad():
            m.head.weight.zero_()  # the head says the same for every image: only the adversary's loss is left
        out = m(x)
        f = m.trunk(x)
        p, d = out.softmax(1), m.adversary(f).softmax(1)
        assert torch.allclose(p[:, 1], m.head(f).softmax(1)[:, 0], atol=1e-6)
        assert torch.allclose(p[:, 0], (1 - p[:, 1]) * d[:, 0], atol=1e-6)
        torch.nn.functional.cross_entropy(out, y).backward()
        grads[lam] = (next(m.trunk.parameters()).grad.clone(), m.adversary[0].weight.grad.clone())
    assert torch.allclose(grads[1.0][1], grads[-1.0][1])  # the adversary learns Covid vs Viral Pneumonia
    assert grads[1.0][0].abs().sum() > 0
    assert torch.allclose(grads[1.0][0], -grads[-1.0][0], atol=1e-7)  # the trunk learns to hide it

    out, runs = tmp_path / "d.jsonl", tmp_path / "runs"
    r = subprocess.run(["python3", "benchmarks/deconfound_experiment.py", "--data", str(synthetic_folder), "--arch",
                        "lenet5", "--img-size", "32", "--epochs", "1", "--seeds", "0", "--runs", str(runs),
                        "--variants", "adv", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    row, = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["stage1_run"] is None and row["stage1_classes"] == ["Normal", "abnormal"]
    stage2 = json.loads((runs / row["stage2_run"] / "run.json").read_text())
    assert [p.name for p in runs.iterdir()] == [row["stage2_run"]]  # the adversarial stage 1 is not stored
    assert row["stage1_train_n"] == stage2["dataset"]["train_n"] == 3 * SYNTHETIC_COUNTS["train"] - len(
        stage2["dataset"]["val_paths"])
    assert set(row["splits"]) == {"val", "test"} and 0 <= row["splits"]["val"]["gate_t"]["accuracy"] <= 1
    assert set(row["adversary_auc"]) == {"val", "test"} and 0 <= row["adversary_auc"]["test"] <= 1
    # the adversary's AUC reads its P(Covid | abnormal) among the Covid and Viral Pneumonia images only
    import numpy as np

    q = np.array([[0.1, 0.1, 0.8], [0.2, 0.1, 0.7], [0.7, 0.1, 0.2], [0.6, 0.2, 0.2], [0.3, 0.4, 0.3]])
    assert de.adversary_auc(q, np.array([0, 0, 2, 2, 1]), classes) == 0.0  # inverted, yet fully separable
    assert de.adversary_auc(q, np.array([2, 2, 0, 0, 1]), classes) == 1.0
    assert de.adversary_auc(q[:2], np.array([0, 0]), classes) is None


def test_deconfound_threshold_is_chosen_on_validation_alone():
    """The stage-1 threshold: t maps to 0.5 (0.5 is the plain gate), and the t chosen is the one whose gate is
    most accurate on the validation images given (ties: nearest 0.5)."""
    import sys

    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import deconfound_experiment as de

    classes = ["Covid", "Normal", "Viral Pneumonia"]
    p1 = de.as_normal_column(np.array([[0.05, 0.95], [0.15, 0.85], [0.25, 0.75], [0.8, 0.2]]), classes)
    assert np.allclose(de.shifted(p1, 0.5, classes), p1)
    s = de.shifted(p1, 0.25, classes)[:, 1]
    assert np.allclose(s, [0.1, 0.3, 0.5, 0.5 + 0.5 * 0.55 / 0.75])
    assert (np.diff(s) > 0).all()  # the ranking is kept
    p2 = np.tile([0.9, 0.05, 0.05], (4, 1))  # stage 2 says Covid for every image
    y = np.array([0, 0, 1, 1])  # validation: Normal exactly where P(Normal) >= 0.25
    t = de.choose_threshold(p2, p1, y, classes)
    pred = de.gate(p2, de.shifted(p1, t, classes), classes).argmax(1)
    assert (pred == y).all() and t == 0.25  # of the t that get all four right (0.2, 0.25), the nearest 0.5


def test_ensemble_experiment_averages_the_two_models_on_every_split(synthetic_folder, tiny_runs, tmp_path):
    """benchmarks/ensemble_experiment.py (the README's whole-image + lung-patch row): per seed, the mean of a
    stored run's and the patch model's probabilities, on the same validation, test and external images, with
    both models' own figures beside it; a run of another seed is refused in one line."""
    import numpy as np

    from cxrviz.external import summarize

    root, runs = tiny_runs
    run = next(r for r in runs if r.arch == "alexnet")
    probs = tmp_path / "probs"
    ext = synthetic_folder / "test"
    r = subprocess.run(["python3", "benchmarks/patch_experiment.py", "--data", str(synthetic_folder),
                        "--img-size", "64", "--patch", "32", "--epochs", "1", "--per-image", "2", "--batch", "8",
                        "--grid", "4", "--external", f"ext={ext}", "--probs", str(probs)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "ens.jsonl"
    cmd = ["python3", "benchmarks/ensemble_experiment.py", "--data", str(synthetic_folder), "--runs", str(root),
           "--probs", str(probs), "--external", f"ext={ext}", "--out", str(out)]
    r = subprocess.run(cmd + ["--run", f"0={run.id}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(out.read_text())
    assert set(row["splits"]) == {"val", "test", "ext"}
    assert row["splits"]["val"]["n"] == len(run.meta["dataset"]["val_paths"]) > 0
    assert row["splits"]["test"]["n"] == row["splits"]["ext"]["n"] == 3 * SYNTHETIC_COUNTS["test"]
    # the mean is the average of the two models' probabilities on the same images, in the same order
    npz = np.load(probs / "seed0.npz")
    pos = {str(p): i for i, p in enumerate(npz["test_paths"])}
    pr = run.predictions
    b = npz["test_probs"][[pos[p] for p in pr["paths"]]]
    want = summarize(pr["labels"], (np.asarray(pr["probs"]) + b) / 2, run.classes)
    got = row["splits"]["test"]
    assert got["mean"]["accuracy"] == want["accuracy"] and got["mean"]["predicted"] == want["predicted"]
    assert got["mean"]["roc_auc"] == pytest.approx(want["roc_auc"]) != got["whole"]["roc_auc"]  # ranks by the mean
    assert got["whole"]["accuracy"] == run.evaluation["accuracy"]
    # gate: the patch model's P(Normal) kept, the rest split in the whole-image model's Covid : Viral Pneumonia
    a = np.asarray(pr["probs"])
    k = run.classes.index("Normal")
    g = np.delete(a, k, 1) / np.delete(a, k, 1).sum(1, keepdims=True) * (1 - b[:, [k]])
    g = np.insert(g, k, b[:, k], 1)
    assert np.allclose(g.sum(1), 1) and np.allclose(g[:, k], b[:, k])
    want = summarize(pr["labels"], g, run.classes)
    assert got["gate"]["predicted"] == want["predicted"] and got["gate"]["roc_auc"] == pytest.approx(want["roc_auc"])
    assert got["patch"]["accuracy"] == summarize(pr["labels"], b, run.classes)["accuracy"]
    r = subprocess.run(cmd + ["--run", f"1={run.id}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: run ") \
        and "Traceback" not in r.stderr
