"""Every device of a machine and several jobs per device, on this CPU-only machine: the registry gets fake
device names (``cuda:0``, ``cuda:1``) and a trainer that runs the real ``train`` on the CPU, so the placement
and concurrency logic is exercised with real training, real runs on disk and no GPU."""
import threading
from dataclasses import replace

import pytest

from cxrviz.cli import main as cli_main
from cxrviz.jobs import DONE, JobRegistry
from cxrviz.placement import job_work, least_loaded, parse_jobs_per_device
from cxrviz.runs import list_runs
from cxrviz.train import ConfigError, TrainConfig, train

TINY = dict(arch="lenet5", img_size=32, epochs=1, batch_size=32)


def tiny(seed=0, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw}, seed=seed)


class CpuTrainer:
    """The real trainer on the CPU, whatever (fake) device the registry placed the job on; records that device."""

    def __init__(self, on_progress=None):
        self.placed: dict[int, str] = {}  # seed -> device the registry chose
        self.on_progress = on_progress

    def __call__(self, config, callback=None, stop=None):
        self.placed[config.seed] = config.device

        def cb(p):
            callback(p)
            if self.on_progress:
                self.on_progress(config, p)

        return train(replace(config, device="cpu"), callback=cb, stop=stop)


def test_auto_spreads_jobs_over_every_device_and_honours_a_pin(tmp_path):
    trainer = CpuTrainer()
    reg = JobRegistry(root=tmp_path / "runs", trainer=trainer, devices=["cuda:0", "cuda:1"])
    ids = reg.submit([tiny(0), tiny(1), tiny(2), tiny(3)] + [tiny(4, device="cuda:1")])
    snaps = {s.id: s for s in reg.snapshots()}
    assert [snaps[i].device for i in ids] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:1"]
    assert [snaps[i].config["device"] for i in ids] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:1"]
    queues = {r["device"]: r for r in reg.device_queues()}
    assert queues["cuda:0"]["running"] + queues["cuda:0"]["queued"] == 2
    assert queues["cuda:1"]["running"] + queues["cuda:1"]["queued"] == 3
    assert reg.wait(240)
    assert trainer.placed == {0: "cuda:0", 1: "cuda:1", 2: "cuda:0", 3: "cuda:1", 4: "cuda:1"}
    snaps = {s.id: s for s in reg.snapshots()}
    assert [snaps[i].status for i in ids] == [DONE] * 5
    runs, problems = list_runs(tmp_path / "runs")
    assert not problems and sorted(r.id for r in runs) == sorted(snaps[i].run_id for i in ids)


def test_auto_weighs_queued_work_not_job_counts(tmp_path):
    # nothing runs here: a stopped-at-once registry only places (a heavy job counts for many light ones)
    heavy = tiny(0, arch="resnet18", epochs=2, img_size=64).resolved()
    light = tiny(1).resolved()
    assert job_work(heavy) > 5 * job_work(light)
    assert least_loaded(["cuda:0", "cuda:1"], {"cuda:0": job_work(heavy), "cuda:1": 0.0}) == "cuda:1"
    reg = JobRegistry(root=tmp_path / "runs", trainer=CpuTrainer(), devices=["cuda:0", "cuda:1"])
    ids = reg.submit([replace(heavy, device="auto")] + [tiny(s) for s in range(1, 5)])
    reg.stop_all(keep=False)
    placed = [reg.get(i).device for i in ids]
    assert placed == ["cuda:0"] + ["cuda:1"] * 4  # four light jobs weigh less than the heavy one
    assert reg.wait(120)


def test_pinning_a_missing_device_is_one_clear_line(tmp_path):
    reg = JobRegistry(root=tmp_path / "runs", trainer=CpuTrainer(), devices=["cuda:0", "cuda:1"])
    with pytest.raises(ConfigError, match="'cuda:5' is not one of cuda:0, cuda:1, cpu"):
        reg.submit([tiny(0), tiny(1, device="cuda:5")])
    assert reg.snapshots() == []  # a bad config queues nothing
    with pytest.raises(ConfigError, match="no Ray cluster"):
        reg.submit([tiny(0, device="ray")])
    with pytest.raises(ConfigError, match="positive integer or 'auto'"):
        parse_jobs_per_device("many")
    assert parse_jobs_per_device("auto") == "auto" and parse_jobs_per_device("3") == 3


def _overlap_registry(tmp_path, jobs_per_device, then=None):
    """Two 2-epoch jobs on one device; the first waits at its first epoch's end until the second has finished
    an epoch too (30 s at most). With two jobs per device they overlap; with one the second cannot start."""
    second_epoch = threading.Event()
    waited: dict[str, bool] = {}

    def on_progress(config, p):
        if p.kind == "epoch" and p.epoch == 1:
            if config.seed == 1:
                second_epoch.set()
            elif config.seed == 0:
                waited["second ran meanwhile"] = second_epoch.wait(30)

    reg = JobRegistry(root=tmp_path / "runs", trainer=CpuTrainer(on_progress), devices=["cuda:0"],
                      jobs_per_device=jobs_per_device)
    if then is not None:  # the device's workers start with a first job; then the setting changes
        reg.submit([tiny(9)])
        assert reg.wait(240)
        reg.set_jobs_per_device(then)
    ids = reg.submit([tiny(0, epochs=2), tiny(1, epochs=2)])
    assert reg.wait(240)
    return reg, ids, waited


def test_two_jobs_per_device_run_at_the_same_time(tmp_path):
    reg, ids, waited = _overlap_registry(tmp_path, 2)
    a, b = (reg.get(i) for i in ids)
    assert waited == {"second ran meanwhile": True}
    assert a.status == b.status == DONE and a.device == b.device == "cuda:0"
    assert b.started < a.finished  # overlapped: the second began before the first ended
    assert reg.device_queues()[0]["jobs at a time"] == 2
    assert len(list_runs(tmp_path / "runs")[0]) == 2


def test_one_job_per_device_runs_them_one_after_another(tmp_path):
    reg, ids, waited = _overlap_registry(tmp_path, 1)
    a, b = (reg.get(i) for i in ids)
    assert waited == {"second ran meanwhile": False}
    assert b.started >= a.finished


def test_jobs_per_device_can_be_lowered_and_raised_while_the_app_runs(tmp_path):
    reg, ids, waited = _overlap_registry(tmp_path, 2, then=1)
    assert waited == {"second ran meanwhile": False}
    assert reg.get(ids[1]).started >= reg.get(ids[0]).finished
    reg, ids, waited = _overlap_registry(tmp_path / "up", 1, then=2)
    assert waited == {"second ran meanwhile": True}


def test_cli_runs_several_jobs_per_device(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(tmp_path / "ck"))
    rc = cli_main(["train", "--arch", "lenet5", "--img-size", "32", "--epochs", "1", "--seeds", "0", "1",
                   "--device", "cpu", "--jobs-per-device", "2", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count(" on cpu") >= 2 and out.count("done") >= 2
    assert len(list_runs(tmp_path / "ck")[0]) == 2
    assert cli_main(["train", "--arch", "lenet5", "--jobs-per-device", "0"]) == 2
