"""The benchmark command and the GPU script run end to end (tiny configurations). These tests check
that the reports are produced and well-formed, never the timings."""
import json
import os
import subprocess
from pathlib import Path

from cxrviz.bench import format_report, run_bench

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_report_is_well_formed(real_data, tmp_path):
    out = tmp_path / "bench.json"
    r = run_bench(quick=True, data=str(real_data), out=str(out), log=lambda s: None)
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and saved["machine"]["torch"]
    a = saved["input"]
    assert a["images"] == 251 and 200 < a["cxrviz_decodes"] <= 251 and a["naive_epoch_s"] > 0  # duplicates decode once
    assert a["cxrviz_later_epoch_s"] > 0 and a["speedup_after_first"] > 0
    assert {o["arch"] for o in saved["overhead"]} == {"resnet18", "alexnet"}
    assert all(o["trainer_img_s"] > 0 and o["bare_img_s"] > 0 for o in saved["overhead"])
    e = saved["end_to_end"]
    assert e["wall_s"] >= e["train_s"] > 0 and 0 <= e["test_acc"] <= 1
    p = saved["app"]
    assert p["predict_all_s"] > 0 and p["gradcam_all_s"] > 0 and p["registry_lag_s"] >= 0
    x = saved["external"]
    assert x["n_external"] == 12 and x["n_test"] == 66 and x["score_s"] > 0 and x["probe_s"] > 0
    text = format_report(r)
    est = saved["estimate"]
    assert [x["arch"] for x in est] == ["lenet5", "resnet18"]
    assert all(x["estimate_s"] > 0 and x["measured_s"] > 0 and x["ratio"] > 0 for x in est)
    for heading in ("a. input pipeline", "b. trainer overhead", "c. end to end", "d. app latencies",
                    "e. run-time estimate", "external validation"):
        assert heading in text


def test_gpu_script_runs_on_cpu_with_tiny_config(real_data, tmp_path):
    env = dict(os.environ, DEVICE="cpu", IMG="64", EPOCHS="1", SKIP_INSTALL="1",
               CXRVIZ_CHECKPOINTS=str(tmp_path / "ck"), CXRVIZ_CACHE=os.environ["CXRVIZ_CACHE"])
    p = subprocess.run(["bash", "benchmarks/gpu.sh", str(real_data)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("AlexNet", "VGG-19", "GoogLeNet", "ResNet-18"):
        assert any(line.startswith(name) for line in p.stdout.splitlines()), p.stdout
    assert "all four models, wall clock" in p.stdout
    assert "where the time went" in p.stdout
    assert len(list((tmp_path / "ck").iterdir())) == 4


def test_recipe_sweep_runs_and_reports(real_data, tmp_path):
    out = tmp_path / "sweep.jsonl"
    p = subprocess.run(["python3", "benchmarks/recipe_sweep.py", "--data", str(real_data), "--arch", "lenet5",
                        "--grid", "tiny", "--img-size", "32", "--epochs", "1", "--seeds", "0", "1", "--jobs", "2",
                        "--threads", "1", "--device", "cpu", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all("error" not in r for r in rows), rows
    assert {(r["variant"], r["seed"]) for r in rows} == {(v, s) for v in ("recipe", "lr5e-4") for s in (0, 1)}
    assert all(0 <= r["acc"] <= 1 and len(r["accs"]) == 1 and r["img_size"] == 32 for r in rows)
    assert next(r for r in rows if r["variant"] == "lr5e-4")["overrides"] == {"lr": 5e-4}
    table = p.stdout[p.stdout.index("final test accuracy"):]
    assert "recipe" in table and "lr5e-4" in table and "mean" in table
