"""Fault injection across the engine, the job queue, run storage, the CLI and the app: real models, real
training on a tiny on-disk dataset, real checkpoints. Faults are raised from *inside* the model's forward pass
(a process-wide forward hook, armed only for the job under test), so they land in the middle of a real
training step, a real evaluation or a real precise-BN pass.

Already covered elsewhere (not repeated here): a trainer that raises before training (tests/test_jobs.py),
half-written temp folders and foreign/corrupt folders at the list_runs level and the malicious pickle
(tests/test_runs.py)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_train_settings
from cxrviz.data import synthetic
from cxrviz.jobs import DONE, FAILED, STOPPED, JobRegistry
from cxrviz.runs import cleanup_stale, list_runs, load_model
from cxrviz.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("Covid", "Normal", "Viral Pneumonia")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """12 train / 12 test PNG phantoms: a training epoch takes a fraction of a second, even for ResNet-18."""
    root = tmp_path_factory.mktemp("tiny-data")
    for split in ("train", "test"):
        imgs, labels = synthetic.make_split(split, 40, n_per_class=4)
        for i, (img, y) in enumerate(zip(imgs, labels.tolist())):
            (root / split / CLASSES[y]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / split / CLASSES[y] / f"{i:03d}.png")
    return root


def cfg(data: Path, seed: int = 0, **kw) -> TrainConfig:
    # fp32: "auto" times a probe and may pick bf16 on a busy bf16 CPU, and these tests compare a stored run's
    # probabilities with a fresh fp32 prediction (seen failing in CI at 1e-2 while a sweep ran beside it)
    return TrainConfig(**{"arch": "lenet5", "data": str(data), "img_size": 32, "epochs": 1, "batch_size": 4,
                          "seed": seed, "precision": "fp32", **kw})


# ------------------------------------------------------------------------------------------ injection
_ARMED = threading.local()
TOP_LEVEL = {"LeNet5", "ResNet", "AlexNet", "VGG", "GoogLeNet"}  # the models' own classes, not their blocks


@contextmanager
def in_forward(action, when):
    """Call ``action(job)`` at the start of a model's forward whenever ``when(phase, n)`` is true: ``phase`` is
    "train" (a training step), "bn" (the precise-BN pass) or "eval" (the test-set evaluation) and ``n`` counts
    that phase's forward calls so far. Only in a thread armed by :func:`armed` (or by setting ``_ARMED.job``)."""
    counts: dict[str, int] = {}

    def hook(module, args):
        job = getattr(_ARMED, "job", None)
        if job is None or type(module).__name__ not in TOP_LEVEL:
            return
        phase = ("train" if torch.is_grad_enabled() else "bn") if module.training else "eval"
        counts[phase] = counts.get(phase, 0) + 1
        if when(phase, counts[phase]):
            action(job)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield counts
    finally:
        handle.remove()


def armed(job_seed: int):
    """A trainer for JobRegistry that arms the injection only for the job with this seed."""

    def trainer(config, callback=None, stop=None):
        _ARMED.job = config if config.seed == job_seed else None
        try:
            return train(config, callback=callback, stop=stop)
        finally:
            _ARMED.job = None

    return trainer


def raise_(exc):
    def action(job):
        raise exc

    return action


def tmp_leftovers(root: Path) -> list[str]:
    return [p.name for p in root.iterdir() if p.name.startswith(".")] if root.is_dir() else []


# ------------------------------------------------------------------------------------------ exceptions, OOM
@pytest.mark.parametrize("exc,expect", [
    (RuntimeError("injected fault in a training step"), "RuntimeError: injected fault in a training step"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 8.00 GiB total capacity)"),
     "out of memory: try a smaller batch size or image size, or a smaller model"),
    (MemoryError(), "out of memory (host RAM)"),
])
def test_fault_inside_a_training_step_fails_the_job_and_the_queue_goes_on(exc, expect, tiny_data, tmp_path):
    root = tmp_path / "runs"
    reg = JobRegistry(root=root, trainer=armed(job_seed=1))
    with in_forward(raise_(exc), lambda phase, n: phase == "train" and n == 2) as counts:  # step 2's forward
        bad, good = reg.submit([cfg(tiny_data, seed=1, epochs=2), cfg(tiny_data, seed=0)])
        assert reg.wait(120)
    s_bad, s_good = reg.get(bad), reg.get(good)
    assert counts["train"] >= 2  # the fault really fired inside a forward pass of a training step
    assert s_bad.status == FAILED and s_bad.error.startswith(expect), s_bad.error
    assert "\n" not in s_bad.error and s_bad.run_id is None and s_bad.history == ()
    assert s_good.status == DONE and s_good.run_id  # the worker survived and ran the next job
    runs, problems = list_runs(root)
    assert [r.id for r in runs] == [s_good.run_id] and not problems and not tmp_leftovers(root)


@pytest.mark.parametrize("exc,line", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
     "error: out of memory: try a smaller batch size or image size, or a smaller model"),
    (MemoryError(), "error: out of memory (host RAM): try a smaller batch size or image size"),  # host RAM
])
def test_oom_in_the_cli_is_one_line(exc, line, tiny_data, ckpt_root, capsys):
    from cxrviz.cli import main

    _ARMED.job = "cli"
    try:
        with in_forward(raise_(exc), lambda phase, n: phase == "train" and n == 2):
            rc = main(["train", "--arch", "lenet5", "--data", str(tiny_data), "--img-size", "32", "--epochs", "1",
                       "--batch-size", "4", "--quiet"])
    finally:
        _ARMED.job = None
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [line]
    assert not ckpt_root.exists() or not any(ckpt_root.iterdir())


# ------------------------------------------------------------------------------------------ stops
def test_stop_during_the_first_batch(tiny_data, tmp_path):
    root = tmp_path / "runs"
    reg = JobRegistry(root=root, trainer=armed(job_seed=0))
    ids: list[str] = []
    with in_forward(lambda job: reg.stop(ids[0], keep=True), lambda phase, n: phase == "train" and n == 1):
        ids += reg.submit([cfg(tiny_data, epochs=3)])
        assert reg.wait(60)
    s = reg.get(ids[0])
    assert s.status == STOPPED and s.error is None and s.history == ()
    assert s.run_id is None and "nothing to keep" in s.message  # no epoch finished: nothing half-made is stored
    assert list_runs(root) == ([], []) and not tmp_leftovers(root)


def _predict_test_set(run) -> np.ndarray:
    from cxrviz.data import load_split, open_dataset
    from cxrviz.train import predict_probs

    model, pre = load_model(run)
    test = load_split(open_dataset(run.meta["dataset"]["root"]), "test", run.config["img_size"])
    assert test.paths == run.predictions["paths"]
    return predict_probs(model, test.images, pre, torch.device("cpu")).numpy()


@pytest.mark.parametrize("arch,phase", [("lenet5", "train"), ("lenet5", "eval"), ("resnet18", "bn"),
                                        ("resnet18", "eval")])
def test_stop_in_a_later_epoch_keeps_a_consistent_run(arch, phase, tiny_data, tmp_path):
    """Stop in epoch 2: mid-batch ("train"), during precise BN ("bn", which resets the BatchNorm statistics) or
    during the test-set evaluation ("eval"). The kept run holds epoch 1's history and evaluation, and its
    weights are epoch 1's: predicting the test set with the stored model gives the stored probabilities."""
    root = tmp_path / "runs"
    reg = JobRegistry(root=root, trainer=armed(job_seed=0))
    ids: list[str] = []
    per_epoch = {"train": 3, "bn": 3, "eval": 1}[phase]  # 12 images in batches of 4; eval in one batch

    # in epoch 2: its second step (so one optimiser step of epoch 2 is already taken), or its first BN/eval pass
    at = per_epoch + (2 if phase == "train" else 1)
    with in_forward(lambda job: reg.stop(ids[0], keep=True), lambda p, n: p == phase and n == at):
        # val_fraction=0: every epoch scores the test split (the old protocol), so "eval" is a per-epoch pass here
        ids += reg.submit([cfg(tiny_data, arch=arch, epochs=3, val_fraction=0)])
        assert reg.wait(120)
    s = reg.get(ids[0])
    assert s.status == STOPPED and s.error is None and s.run_id, s
    assert len(s.history) == 1 and s.message == "stopped, kept"
    run, = list_runs(root)[0]
    assert run.status == "stopped" and run.evaluation["epoch"] == 1 and len(run.history["history"]) == 1
    stored = np.asarray(run.predictions["probs"])
    np.testing.assert_allclose(_predict_test_set(run), stored, atol=2e-4)
    assert run.evaluation["accuracy"] == pytest.approx(
        np.mean(stored.argmax(1) == np.asarray(run.predictions["labels"])))


def test_ctrl_c_in_the_cli_during_training(tiny_data, ckpt_root):
    """Ctrl-C (SIGINT) while `python -m cxrviz train` is training: one line, exit 130, nothing half-stored."""
    env = {**os.environ, "CXRVIZ_CHECKPOINTS": str(ckpt_root)}
    proc = subprocess.Popen([sys.executable, "-m", "cxrviz", "train", "--arch", "lenet5", "--data", str(tiny_data),
                             "--img-size", "32", "--epochs", "100000", "--batch-size", "4"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            # a shell that starts the suite in the background (`cmd &`) sets SIGINT to ignored, and
                            # the child would inherit that: a user's terminal delivers Ctrl-C, so restore it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err = b""
    end = time.time() + 120
    while time.time() < end and b"LeNet-5 s0" not in err:  # the training progress bar is up
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            break
        err += chunk
    assert b"LeNet-5 s0" in err, err.decode(errors="replace")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=60)
    err = (err + rest).decode(errors="replace")
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == "interrupted"
    assert not ckpt_root.exists() or not any(ckpt_root.iterdir())


# ------------------------------------------------------------------------------------------ SIGKILL
KILLED_WRITER = r"""
import sys, threading
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import cxrviz.runs as runs
from cxrviz.runs import load_state_dict, read_run, save_run
from cxrviz.train import TrainResult

real_dump = runs._dump


def dump_then_hang(obj, path):
    # a known point in the middle of save_run: the weights and history are written, predictions.json is half
    # written, run.json not yet; say so and wait to be killed
    if Path(path).name == "predictions.json":
        real_dump(obj, path)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        print("paused inside save_run", flush=True)
        threading.Event().wait()
    real_dump(obj, path)


runs._dump = dump_then_hang
run = read_run(Path(sys.argv[2]))
m = run.meta
result = TrainResult(config=m["config"], status="done", history=run.history["history"], batch_losses=[],
                     evaluation=m["evaluation"], predictions=run.predictions, timings=m["timings"],
                     environment=m["environment"], dataset=m["dataset"], norm=m["norm"],
                     state_dict=dict(load_state_dict(run)))
save_run(result, root=sys.argv[3])
print("written", flush=True)
"""


def test_sigkill_while_a_run_is_written(lenet_run, tmp_path):
    """A process killed with SIGKILL in the middle of save_run: after a restart no partial run is listed, every
    earlier run still loads, and the leftover temp folder is removed once it is stale. The writer stops at a
    known point of the save (a hook in the child script) and is killed there: no race with the clock."""
    _, run = lenet_run
    root = tmp_path / "checkpoints"
    root.mkdir()
    earlier = []
    for i in range(2):
        shutil.copytree(run.path, root / f"{run.id}-{i}")
        earlier.append(f"{run.id}-{i}")
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(ROOT), str(run.path), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the child reached the pause point (or died)
        assert line.strip() == "paused inside save_run", (line, proc.stderr.read() if proc.poll() is not None else "")
        assert len(tmp_leftovers(root)) == 1  # the half-written run is there, in its temp folder
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    assert proc.returncode == -signal.SIGKILL

    # "restart": a fresh listing, as the app or the CLI does on start
    leftover, = tmp_leftovers(root)
    runs, problems = list_runs(root)
    assert sorted(r.id for r in runs) == sorted(earlier) and problems == []
    for r in runs:
        model, pre = load_model(r)
        assert model(pre(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))).shape == (1, 3)
    assert tmp_leftovers(root) == [leftover]  # fresh: another process might still be writing it, so kept
    # an hour later it is stale: the next listing removes it (and with it the wasted disk space)
    old = time.time() - 2 * 3600
    for p in [root / leftover, *(root / leftover).iterdir()]:
        os.utime(p, (old, old))
    assert sorted(r.id for r in list_runs(root)[0]) == sorted(earlier)
    assert tmp_leftovers(root) == []


def test_cleanup_stale_removes_interrupted_deletions_and_old_writes_only(lenet_run, tmp_path):
    _, run = lenet_run
    root = tmp_path / "ck"
    root.mkdir()
    shutil.copytree(run.path, root / run.id)
    (root / f".del-{run.id}-beef").mkdir()  # a delete_run killed between its rename and its rmtree
    (root / f".del-{run.id}-beef" / "weights.safetensors").write_bytes(b"x" * 10)
    (root / ".tmp-fresh-1234").mkdir()  # a save in progress in another process
    (root / ".tmp-old-5678").mkdir()
    old = time.time() - 7200
    os.utime(root / ".tmp-old-5678", (old, old))
    (root / ".not-ours").mkdir()  # hidden folders that are not ours are left alone
    removed = cleanup_stale(root)
    assert sorted(removed) == sorted([f".del-{run.id}-beef", ".tmp-old-5678"])
    assert sorted(tmp_leftovers(root)) == [".not-ours", ".tmp-fresh-1234"]
    assert [r.id for r in list_runs(root)[0]] == [run.id]
    assert cleanup_stale(root, max_age_s=0) == [".tmp-fresh-1234"]


# ------------------------------------------------------------------------------------------ concurrency
def test_many_sessions_submit_at_the_same_moment(tiny_data, tmp_path):
    """Eight sessions press Launch at the same instant: every job is queued once, they run one after another
    on the one CPU worker, and every run is stored."""
    root = tmp_path / "runs"
    reg = JobRegistry(root=root)
    n = 8
    barrier = threading.Barrier(n)
    got: dict[int, list[str]] = {}

    def session(i: int) -> None:
        barrier.wait()
        got[i] = reg.submit([cfg(tiny_data, seed=i)], request_id=f"session-{i}-click")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a session thread did not end"
    ids = [j for i in range(n) for j in got[i]]
    assert len(ids) == n and len(set(ids)) == n
    assert sorted(s.id for s in reg.snapshots()) == sorted(ids)
    assert reg.wait(240)
    snaps = sorted(reg.snapshots(), key=lambda s: s.started)
    assert [s.status for s in snaps] == [DONE] * n
    assert {s.seed for s in snaps} == set(range(n))
    for a, b in zip(snaps, snaps[1:]):
        assert b.started >= a.finished  # queued, not run on top of each other
    runs, problems = list_runs(root)
    assert sorted(r.id for r in runs) == sorted(s.run_id for s in snaps) and not problems


def test_two_app_sessions_launch_at_the_same_moment(tiny_data, ckpt_root):
    """Two browser sessions (two AppTests in one server process share the st.cache_resource registry) click
    Launch at the same moment: both jobs are queued, both run, neither is lost or doubled."""
    from streamlit.testing.v1 import AppTest

    from pages.common import job_registry

    reg = job_registry()
    reg.stop_all(keep=False)
    assert reg.wait(60)
    reg.clear_finished()
    sessions = []
    for seed in ("3", "4"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.session_state["data_path"] = str(tiny_data)
        at.run()
        at.switch_page("pages/train.py").run()
        sessions.append(tiny_train_settings(at, seed))
    barrier = threading.Barrier(2)
    errors = []

    def click(at):
        try:
            barrier.wait()
            at.button(key="t_launch").click().run()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=click, args=(at,)) for at in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a session thread did not end"
    assert not errors
    assert all(not at.exception for at in sessions)
    try:
        snaps = reg.snapshots()
        assert sorted((s.arch, s.seed) for s in snaps) == [("lenet5", 3), ("lenet5", 4)]
        assert reg.wait(120)
        snaps = reg.snapshots()
        assert [s.status for s in snaps] == [DONE, DONE]
        assert sorted(p.name for p in ckpt_root.iterdir()) == sorted(s.run_id for s in snaps)
        other = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)  # a reload, or a third tab
        other.run()
        other.switch_page("pages/train.py").run()
        assert not other.exception
        body = "\n".join(str(e.value) for kind in ("markdown", "caption", "success") for e in other.get(kind))
        assert all(s.run_id in body for s in snaps)  # both finished jobs, with their stored runs
    finally:
        reg.stop_all(keep=False)
        reg.wait(60)
        reg.clear_finished()


# ------------------------------------------------------------------------------------------ foreign runs
@pytest.fixture
def mixed_folder(lenet_run, ckpt_root) -> tuple[Path, str, str]:
    """A checkpoints/ folder with one good run, a foreign folder, a run with corrupt JSON and a run whose
    run.json is fine but whose weights are garbage."""
    _, run = lenet_run
    ckpt_root.mkdir(parents=True)
    shutil.copytree(run.path, ckpt_root / run.id)
    (ckpt_root / "holiday-photos").mkdir()
    (ckpt_root / "holiday-photos" / "beach.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    bad_json = ckpt_root / "lenet5-broken-json"
    shutil.copytree(run.path, bad_json)
    (bad_json / "run.json").write_text('{"config": ')
    bad_w = f"{run.id}-badweights"
    shutil.copytree(run.path, ckpt_root / bad_w)
    meta = json.loads((ckpt_root / bad_w / "run.json").read_text())
    meta["id"] = bad_w
    (ckpt_root / bad_w / "run.json").write_text(json.dumps(meta))
    (ckpt_root / bad_w / "weights.safetensors").write_bytes(b"\x07" * 64)
    return ckpt_root, run.id, bad_w


def test_foreign_and_corrupt_runs_everything_else_works(mixed_folder, tmp_path, capsys):
    from cxrviz.cli import main

    root, good, bad_w = mixed_folder
    runs, problems = list_runs(root)
    assert sorted(r.id for r in runs) == sorted([good, bad_w])
    reasons = dict(problems)
    assert set(reasons) == {"holiday-photos", "lenet5-broken-json"}
    assert "missing run.json" in reasons["holiday-photos"] and "unreadable" in reasons["lenet5-broken-json"]

    # CLI: the table lists the runs and names each unreadable folder with its reason on stderr
    assert main(["table", "--format", "csv"]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 3  # header + 2 runs
    assert "unreadable run holiday-photos: " in out.err and "unreadable run lenet5-broken-json: " in out.err
    # CLI predict with both runs: the broken one is named, the good one still predicts
    img = tmp_path / "x.png"
    Image.fromarray(synthetic.make_split("test", 64, n_per_class=1)[0][0]).save(img)
    assert main(["predict", str(img), "--runs", good, bad_w, "--format", "json"]) == 0
    out = capsys.readouterr()
    assert [p["run_id"] for p in json.loads(out.out)] == [good]
    warning, = out.err.strip().splitlines()
    assert warning.startswith(f"warning: run {bad_w} skipped: ") and "weights file is corrupt" in warning
    assert main(["predict", str(img), "--runs", bad_w]) == 2  # nothing usable: one error line
    assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_foreign_and_corrupt_runs_in_the_app(mixed_folder):
    from streamlit.testing.v1 import AppTest

    _, good, bad_w = mixed_folder
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/leaderboard.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("2 unreadable run folder(s) skipped" in e.label for e in at.expander)
    listed = "\n".join(str(m.value) for m in at.markdown)
    assert "`holiday-photos`: incomplete or foreign folder" in listed and "`lenet5-broken-json`:" in listed
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    at.multiselect(key="compare_runs").set_value([good, bad_w]).run()
    img = synthetic.make_split("test", 64, n_per_class=1)[0][0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    at.file_uploader(key="compare_upload").set_value(("x.png", buf.getvalue(), "image/png")).run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.metric) == 1  # the good run predicts
    assert len(at.error) == 1 and "weights file is corrupt" in at.error[0].value  # the broken one, named
    assert any("2 unreadable run folder(s) skipped" in c.value for c in at.caption)
