"""External validation: folder and class mapping, metrics, records stored with the run, CLI."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cxrviz.calibration import calibration
from cxrviz.errors import CxrvizError
from cxrviz.external import (
    ExternalError,
    open_external,
    parse_map,
    score_run,
    summarize,
    table_rows,
)
from cxrviz.runs import list_records, read_record

CLASSES = ["Covid", "Normal", "Viral Pneumonia"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real LeNet-5 run (synthetic set, 32 px, 1 epoch), stored on disk."""
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ext-runs")
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=root)
    return list_runs(root)[0][0]


def external_folder(dst: Path, synthetic_folder: Path, layout: str = "flat") -> Path:
    """Covid/ and normal/ (lower case) from the synthetic test split; 'nested' puts half into source folders."""
    for cls, name in (("Covid", "COVID-19"), ("Normal", "normal")):
        for i, f in enumerate(sorted((synthetic_folder / "test" / cls).iterdir())):
            sub = dst / ("test" if layout == "split" else "") / name
            if layout == "nested":
                sub = sub / ("siteA" if i % 2 else "siteB")
            sub.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, sub / f.name)
    return dst


def test_open_external_matches_and_maps_classes(tmp_path, synthetic_folder):
    ext_dir = external_folder(tmp_path / "ext", synthetic_folder)
    with pytest.raises(ExternalError, match="'COVID-19' is not a class of the run"):
        open_external(ext_dir, CLASSES)  # no map: COVID-19 is unknown, named in one line
    ext = open_external(ext_dir, CLASSES, "COVID-19=covid")  # map target matched case-insensitively too
    assert ext.mapping == {"COVID-19": "Covid", "normal": "Normal"}
    assert ext.present == ["Covid", "Normal"]
    assert sorted({y for _, y in ext.files}) == [0, 1] and len(ext.files) == 16
    with pytest.raises(ExternalError, match="'Pneumo'.*not in the external folder"):
        open_external(ext_dir, CLASSES, "Pneumo=Covid")
    with pytest.raises(ExternalError, match="not FOLDER=CLASS"):
        parse_map("COVID-19")
    with pytest.raises(ExternalError, match="not found"):
        open_external(tmp_path / "nope", CLASSES)


def test_test_split_sources_and_fingerprint(tmp_path, synthetic_folder):
    split = open_external(external_folder(tmp_path / "split", synthetic_folder, "split"), CLASSES, "COVID-19=Covid")
    assert split.root.name == "test" and len(split.files) == 16
    nested_dir = external_folder(tmp_path / "nested", synthetic_folder, "nested")
    nested = open_external(nested_dir, CLASSES, "COVID-19=Covid")
    assert set(nested.sources.values()) == {"siteA", "siteB"}
    # sources.csv wins over folder names
    first = sorted(nested.sources)[0]
    (nested_dir / "sources.csv").write_text(f"path,source\n{first},hospital-X\n")
    again = open_external(nested_dir, CLASSES, "COVID-19=Covid")
    assert again.sources[first] == "hospital-X"
    # same files = same fingerprint; one changed byte = another
    flat = open_external(external_folder(tmp_path / "flat", synthetic_folder), CLASSES, "COVID-19=Covid")
    flat2 = open_external(tmp_path / "flat", CLASSES, "COVID-19=Covid")
    assert flat.fingerprint == flat2.fingerprint and len(flat.fingerprint) == 16
    f = sorted((tmp_path / "flat" / "normal").iterdir())[0]
    f.write_bytes(f.read_bytes() + b"\0")
    assert open_external(tmp_path / "flat", CLASSES, "COVID-19=Covid").fingerprint != flat.fingerprint


def test_summarize_everything_called_covid():
    y = np.array([0] * 35 + [1] * 60)
    probs = np.tile([0.9, 0.05, 0.05], (95, 1))
    s = summarize(y, probs, CLASSES, sources=["a"] * 35 + ["b"] * 60)
    assert s["predicted"] == {"Covid": 95, "Normal": 0, "Viral Pneumonia": 0}
    assert s["accuracy"] == pytest.approx(35 / 95)
    assert s["majority"] == {"class": "Normal", "accuracy": pytest.approx(60 / 95)}
    assert s["recall"] == {"Covid": 1.0, "Normal": 0.0}
    assert s["balanced_accuracy"] == pytest.approx(0.5)
    assert s["bal_ci_low"] < 0.5 < s["bal_ci_high"]  # not zero-width although both recalls are 0 or 1
    assert s["confusion"] == [[35, 0, 0], [60, 0, 0]] and s["confusion_cols"] == CLASSES
    assert s["per_source"]["a"]["accuracy"] == 1.0 and s["per_source"]["b"]["accuracy"] == 0.0
    assert s["roc_auc"] == {"Covid": 0.5, "Normal": 0.5}


def test_calibration_ece():
    # 10 images at confidence 0.9, 5 right: ECE 0.4
    probs = np.tile([0.9, 0.1], (10, 1))
    cal = calibration(probs, [0] * 5 + [1] * 5)
    assert cal["ece"] == pytest.approx(0.4)
    assert len(cal["bins"]) == 1 and cal["bins"][0]["n"] == 10
    assert calibration(np.tile([0.9, 0.1], (10, 1)), [0] * 9 + [1])["ece"] == pytest.approx(0.0)


def test_score_run_is_stored_with_the_run(tmp_path, synthetic_folder, tiny_run):
    ext_dir = external_folder(tmp_path / "ext", synthetic_folder, "nested")
    rec = score_run(tiny_run, ext_dir, {"COVID-19": "Covid"})
    e = rec["external"]
    assert e["n"] == 16 and sum(e["predicted"].values()) == 16
    assert set(e["per_source"]) == {"siteA", "siteB"}
    assert rec["internal"]["accuracy"] == tiny_run.accuracy
    assert rec["drop"] == pytest.approx(tiny_run.accuracy - e["accuracy"])
    stored = read_record(tiny_run, rec["data"]["fingerprint"])
    assert stored["external"]["accuracy"] == e["accuracy"]
    assert [r["data"]["fingerprint"] for r in list_records(tiny_run, "external")] == [rec["data"]["fingerprint"]]
    assert not [f for f in (tiny_run.path / "external").iterdir() if f.name.startswith(".tmp")]
    row = table_rows([rec])[0]
    assert row["external acc"] == pytest.approx(100 * e["accuracy"]) and "external CI" in row


def test_cli_evaluate_external(tmp_path, synthetic_folder, tiny_run, capsys):
    from cxrviz.cli import main

    ext_dir = external_folder(tmp_path / "ext", synthetic_folder)
    run_dir = str(tiny_run.path)
    assert main(["evaluate", run_dir, "--data", str(ext_dir), "--map", "COVID-19=Covid", "--format", "json",
                 "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["external"]["n"] == 16 and "probs" not in out[0]
    assert main(["evaluate", run_dir, "--data", str(ext_dir), "--map", "COVID-19=Covid", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "external acc" in text and "confusion (rows: external classes" in text
    assert main(["evaluate", run_dir, "--data", str(ext_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: external class 'COVID-19'") and len(err.strip().splitlines()) == 1
    assert main(["evaluate", run_dir, run_dir]) == 2
    assert "needs --data" in capsys.readouterr().err


def test_cxrviz_error_is_a_user_error():
    assert issubclass(ExternalError, CxrvizError)
    assert not math.isnan(summarize([0, 1], np.eye(2), ["a", "b"])["accuracy"])


def test_figures_from_records(tmp_path, synthetic_folder, tiny_run):
    from cxrviz.calibration import run_test_calibration
    from cxrviz.external_records import latest_records, side_by_side
    from cxrviz.plots import external as plots

    rec = score_run(tiny_run, external_folder(tmp_path / "ext", synthetic_folder), "COVID-19=Covid")
    recs = latest_records([tiny_run], rec["data"]["fingerprint"])
    assert [r["run"] for r in recs] == [tiny_run.id]
    row = side_by_side(recs)[0]
    assert row["drop (points)"] == pytest.approx(100 * rec["drop"])
    fig = plots.internal_vs_external(recs)
    assert [t.name for t in fig.data][:2] == ["internal (test split)", "external"]
    assert sum(sum(t.x) for t in plots.predicted_distribution(recs).data) == 16
    cals = [("ext", tiny_run.arch, rec["external"]["calibration"]),
            ("test", tiny_run.arch, run_test_calibration(tiny_run))]
    assert len(plots.reliability(cals).data) == 3
    for png in (plots.internal_vs_external_png(recs), plots.reliability_png(cals)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
