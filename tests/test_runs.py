"""Run storage: atomic writes, listing, deleting, verification of weights, refusal of pickles."""
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from cxrviz.data import load_split, open_dataset
from cxrviz.runs import RunError, delete_run, get_run, list_runs, load_model, load_state_dict, read_run
from cxrviz.train import predict_probs


def _copy_run(run, root, name=None):
    dst = root / (name or run.id)
    shutil.copytree(run.path, dst)
    return dst


def test_listing_loading_and_contents(tiny_runs):
    root, runs = tiny_runs
    assert len(runs) == 4
    r = runs[0]
    for f in ("run.json", "history.json", "predictions.json", "weights.safetensors"):
        assert (r.path / f).exists()
    m = r.meta
    assert {"config", "dataset", "evaluation", "timings", "environment", "norm", "status"} <= set(m)
    assert m["environment"]["device"] == "cpu" and m["environment"]["torch"] == torch.__version__
    assert len(r.history["history"]) == 2 and r.predictions["labels"] and r.predictions["probs"]
    assert get_run(r.id, root=root).id == r.id
    model, pre = load_model(r)
    # the loaded model carries exactly the saved weights ...
    saved = load_file(str(r.path / "weights.safetensors"))
    state = model.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in saved)
    # ... and reproduces the test-split predictions stored at training time
    src = open_dataset(r.meta["dataset"]["root"])
    test = load_split(src, "test", r.config["img_size"])
    assert [str(p) for p in test.paths] == [str(p) for p in r.predictions["paths"]]
    # the fixture pins fp32 (the same bits on every CPU); the trainer's own evaluation path, its batches included
    assert m["environment"]["precision"] == "fp32"
    probs = predict_probs(model, test.images, pre, torch.device("cpu"))
    assert torch.allclose(probs, torch.tensor(r.predictions["probs"]), atol=1e-4)
    # seeds of one configuration share a group key
    r18 = [x for x in runs if x.arch == "resnet18"]
    assert len(r18) == 2 and r18[0].group_key == r18[1].group_key


def test_half_written_run_is_never_listed(tiny_runs, tmp_path):
    _, runs = tiny_runs
    root = tmp_path / "ck"
    root.mkdir()
    _copy_run(runs[0], root)
    # what a crash in the middle of save_run leaves behind: a hidden temp folder
    partial = _copy_run(runs[1], root, name=f".tmp-{runs[1].id}-abcd")
    (partial / "run.json").unlink()
    listed, problems = list_runs(root)
    assert [r.id for r in listed] == [runs[0].id] and problems == []


def test_foreign_and_corrupt_folders_listed_as_unreadable(tiny_runs, tmp_path):
    _, runs = tiny_runs
    root = tmp_path / "ck"
    root.mkdir()
    _copy_run(runs[0], root)
    (root / "holiday-photos").mkdir()
    (root / "holiday-photos" / "a.jpg").write_bytes(b"x")
    bad_json = _copy_run(runs[1], root, "bad-json")
    (bad_json / "run.json").write_text("{not json")
    alien = _copy_run(runs[2], root, "alien-arch")
    meta = json.loads((alien / "run.json").read_text())
    meta["config"]["arch"] = "transformer9000"
    (alien / "run.json").write_text(json.dumps(meta))
    listed, problems = list_runs(root)
    assert [r.id for r in listed] == [runs[0].id]
    reasons = dict(problems)
    assert "missing run.json" in reasons["holiday-photos"]
    assert "run.json is unreadable" in reasons["bad-json"]
    assert "unknown architecture" in reasons["alien-arch"]


def test_weights_of_another_architecture_are_refused(tiny_runs, tmp_path):
    _, runs = tiny_runs
    r18 = next(r for r in runs if r.arch == "resnet18")
    lenet = next(r for r in runs if r.arch == "lenet5")
    dst = _copy_run(r18, tmp_path)
    shutil.copy(lenet.path / "weights.safetensors", dst / "weights.safetensors")
    with pytest.raises(RunError, match="weights do not fit ResNet-18"):
        load_model(read_run(dst))


@pytest.mark.parametrize("damage", ["zeros", "truncated", "truncated-header"])
def test_corrupt_weights_are_a_clear_error(tiny_runs, tmp_path, damage):
    _, runs = tiny_runs
    dst = _copy_run(runs[0], tmp_path)
    w = dst / "weights.safetensors"
    data = w.read_bytes()
    cut = {"zeros": b"\x00" * 100, "truncated": data[: len(data) // 2],  # a real file cut short (a full disk)
           "truncated-header": data[:40]}[damage]
    w.write_bytes(cut)
    with pytest.raises(RunError, match="corrupt"):
        load_model(read_run(dst))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tiny_runs, tmp_path):
    _, runs = tiny_runs
    dst = _copy_run(runs[0], tmp_path)
    marker = tmp_path / "PWNED"
    (dst / "weights.safetensors").unlink()
    with open(dst / "weights.pt", "wb") as f:
        pickle.dump({"conv1.weight": _Evil(marker)}, f)
    with pytest.raises(RunError, match="refused|unsafe|corrupt"):
        load_state_dict(read_run(dst))
    assert not marker.exists()
    # the same file through plain pickle would have run the command: the test is real
    with open(dst / "weights.pt", "rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_plain_state_dict_pt_is_accepted(tiny_runs, tmp_path):
    _, runs = tiny_runs
    r = next(x for x in runs if x.arch == "lenet5")
    dst = _copy_run(r, tmp_path)
    sd = load_state_dict(r)
    (dst / "weights.safetensors").unlink()
    torch.save(sd, dst / "weights.pt")
    model, _ = load_model(read_run(dst))
    assert model is not None


def test_delete_run(tiny_runs, tmp_path):
    _, runs = tiny_runs
    root = tmp_path / "ck"
    root.mkdir()
    _copy_run(runs[0], root)
    _copy_run(runs[1], root)
    listed, _ = list_runs(root)
    delete_run(listed[0])
    assert [r.id for r in list_runs(root)[0]] == [listed[1].id]
    assert not any(p.name.startswith(".del-") for p in root.iterdir())
    with pytest.raises(RunError, match="not found"):
        get_run("does-not-exist", root=root)


def test_safetensors_metadata_names_architecture(tiny_runs, tmp_path):
    from safetensors import safe_open

    _, runs = tiny_runs
    with safe_open(str(runs[0].path / "weights.safetensors"), "pt") as f:
        assert f.metadata()["arch"] == runs[0].arch
    save_file({"x": torch.zeros(1)}, str(tmp_path / "t.safetensors"))  # the library round-trips
