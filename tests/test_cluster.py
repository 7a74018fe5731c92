"""Sweeps on a real local Ray cluster (2 CPUs, started once for this module): every run stored in the driver's
checkpoints/ and listed; stop of cluster jobs; a worker killed mid-run gives a failed job with one clear line.

Timeouts are generous (a 2-core machine shared with other work starts Ray workers slowly); nothing is timed."""
import os
import signal
import subprocess
import sys

import pytest

from conftest import wait_for
from cxrviz import cluster
from cxrviz.cli import main as cli_main
from cxrviz.jobs import CLUSTER, DONE, FAILED, STOPPED, JobRegistry
from cxrviz.runs import list_runs
from cxrviz.train import TrainConfig

WAIT_S = 600


def tiny(seed=0, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(arch="lenet5", img_size=32, epochs=1, batch_size=32, device=CLUSTER), **kw},
                       seed=seed)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    cluster.connect(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture
def reg(ray_cluster, tmp_path):
    r = JobRegistry(root=tmp_path / "runs", cluster=cluster.RayTrainer(None))
    yield r
    r.stop_all(keep=False)
    r.wait(WAIT_S)


def test_sweep_on_the_cluster_stores_every_run(ray_cluster, tmp_path, monkeypatch, capsys):
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    rc = cli_main(["sweep", "--arch", "lenet5", "--img-size", "32", "--epochs", "2", "--seeds", "0", "1",
                   "--recipe", "recipe", "--recipe", "lr=0.003", "--ray", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    runs, problems = list_runs(root)
    assert not problems and len(runs) == 4  # 2 seeds x 2 recipes, each stored by the driver as a local run
    recipe_lr = TrainConfig(arch="lenet5").resolved().lr
    assert sorted((r.config["seed"], r.config["lr"]) for r in runs) == sorted(
        [(0, recipe_lr), (0, 0.003), (1, recipe_lr), (1, 0.003)])
    for r in runs:
        assert r.status == "done" and r.meta["epochs_done"] == 2 and (r.path / "weights.safetensors").is_file()
        assert r.evaluation["n"] > 0 and f"{r.id}: LeNet-5 done" in out
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # nothing half-written
    assert ray_cluster.is_initialized()  # the sweep reused this process's cluster and left it open


def test_cluster_jobs_stream_progress_and_stop(reg, tmp_path):
    keep, drop = reg.submit([tiny(0, epochs=500), tiny(1, epochs=500)])
    # progress travels back live: epochs show up in the jobs while the tasks still run
    assert wait_for(lambda: all(len(reg.get(j).history) >= 1 for j in (keep, drop)), WAIT_S, poll=0.1), \
        [reg.get(j).message for j in (keep, drop)]
    assert reg.get(keep).status == "running" and reg.get(keep).batch_losses
    reg.stop(keep, keep=True)
    reg.stop(drop, keep=False)
    assert reg.wait(WAIT_S)
    k, d = reg.get(keep), reg.get(drop)
    assert k.status == d.status == STOPPED and k.device == CLUSTER
    runs, problems = list_runs(tmp_path / "runs")
    assert not problems and [r.id for r in runs] == [k.run_id]  # the stopped-and-kept run only
    assert runs[0].status == "stopped" and 1 <= runs[0].meta["epochs_done"] < 500
    assert d.run_id is None


def test_a_killed_worker_fails_the_job_with_one_line(reg, tmp_path):
    (jid,) = reg.submit([tiny(0, epochs=500)])
    assert wait_for(lambda: len(reg.get(jid).history) >= 1 and reg.cluster.worker_pids(), WAIT_S, poll=0.1)
    (pid,) = reg.cluster.worker_pids().values()
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    assert reg.wait(WAIT_S)
    s = reg.get(jid)
    assert s.status == FAILED
    assert s.error == ("the Ray worker running this job died (its process was killed or its node was lost); "
                       "nothing was stored: launch it again")
    runs, problems = list_runs(tmp_path / "runs")
    assert runs == [] and problems == []
    # the cluster goes on: the next job runs and is stored
    (again,) = reg.submit([tiny(1)])
    assert reg.wait(WAIT_S) and reg.get(again).status == DONE


def test_cxrviz_imports_and_trains_without_ray(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # import ray now raises ImportError
            "import cxrviz.cli, cxrviz.jobs, cxrviz.cluster\n"
            "from cxrviz.cluster import ClusterError, RayTrainer\n"
            "try:\n    RayTrainer(None)._ensure()\nexcept ClusterError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Ray is not installed: pip install 'ray[default]' to run on a cluster"
