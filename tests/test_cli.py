"""`python -m cxrviz ...` end to end on the real data, tiny sizes; errors are one line, no traceback."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cxrviz.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "cxrviz", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=600)


def test_models_json_lists_registry(capsys):
    assert main(["models", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["name"]: r for r in rows}
    assert by["resnet18"]["depth"] == 18 and by["googlenet"]["depth"] == 22 and by["alexnet"]["min_size"] == 63
    assert 1.6 < by["resnet18"]["gflops@224"] < 1.9 and by["resnet18"]["params"] == 11_171_779


def test_train_table_evaluate_predict(synthetic_folder, ckpt_root, capsys):
    assert main(["train", "--arch", "lenet5", "resnet18", "--data", str(synthetic_folder), "--img-size", "40",
                 "--epochs", "1", "--seeds", "0", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("test acc") == 4
    runs = sorted(p.name for p in ckpt_root.iterdir())
    assert len(runs) == 4
    assert main(["table", "--format", "csv"]) == 0
    df = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert len(df) == 4 and {"model", "test acc", "95 % CI"} <= set(df.columns)
    assert main(["table", "--format", "md", "--groups"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 2 + 2 and lines[0].startswith("|")  # header, rule, one row per architecture (2 seeds each)
    assert sorted(ln.split("|")[1].strip() for ln in lines[2:]) == ["LeNet-5", "ResNet-18"]
    run = next(r for r in runs if r.startswith("resnet18"))
    assert main(["evaluate", run]) == 0
    out = capsys.readouterr().out
    assert "24 test images" in out and "confusion" in out
    img = next((synthetic_folder / "test" / "Covid").iterdir())
    assert main(["predict", str(img), "--format", "json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert {p["arch"] for p in preds} == {"lenet5", "resnet18"}
    assert all(abs(sum(p["probs"]) - 1) < 1e-4 for p in preds)
    assert main(["predict", str(img), "--runs", run]) == 0
    assert "model says" in capsys.readouterr().out


def test_reproduce_prints_deck_table(synthetic_folder, ckpt_root, capsys):
    assert main(["reproduce", "--data", str(synthetic_folder), "--img-size", "64", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name, deck in (("AlexNet", "80.3 %"), ("VGG-19", "83.3 %"), ("GoogLeNet", "89.4 %"), ("ResNet-18", "90.9 %")):
        line = next(ln for ln in out.splitlines() if ln.startswith(name))
        assert deck in line and "min" in line
    assert len(list(ckpt_root.iterdir())) == 4


@pytest.mark.parametrize("args,msg", [
    (["train", "--arch", "resnet19"], "unknown architecture 'resnet19'"),
    (["train", "--arch", "alexnet", "--img-size", "32"], "below AlexNet's minimum"),
    (["train", "--arch", "lenet5", "--data", "/no/such/folder"], "dataset folder not found"),
    (["evaluate", "no-such-run"], "not found"),
    (["predict", "/etc/hostname"], "not an image"),
])
def test_user_errors_are_one_line(args, msg, ckpt_root):
    p = cli(*args, env={"CXRVIZ_CHECKPOINTS": str(ckpt_root)})
    assert p.returncode == 2
    assert msg in p.stderr and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_predict_without_runs(ckpt_root, synthetic_folder):
    img = next((synthetic_folder / "test" / "Normal").iterdir())
    p = cli("predict", str(img), env={"CXRVIZ_CHECKPOINTS": str(ckpt_root)})
    assert p.returncode == 2 and "no stored runs yet" in p.stderr


def test_synthetic_default_when_no_data(ckpt_root, capsys):
    assert main(["train", "--arch", "lenet5", "--img-size", "32", "--epochs", "1", "--quiet"]) == 0
    run = next(ckpt_root.iterdir())
    meta = json.loads((run / "run.json").read_text())
    assert meta["dataset"]["synthetic"] is True and "synthetic" in meta["dataset"]["name"]
