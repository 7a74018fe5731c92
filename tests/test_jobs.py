"""The job registry and its worker thread: real (tiny) training on the synthetic set, real checkpoints on
disk; fault tests inject a trainer that raises inside a real registry."""
import gc
import threading
import weakref

import pytest
import torch

from conftest import wait_for
from cxrviz.data.decode import ImageDecodeError
from cxrviz.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    MAX_BATCH_POINTS,
    MAX_FINISHED_JOBS,
    MAX_HISTORY_POINTS,
    RUNNING,
    STOPPED,
    Job,
    JobRegistry,
)
from cxrviz.runs import list_runs
from cxrviz.train import ConfigError, Progress, TrainConfig, train

TINY = dict(arch="lenet5", img_size=32, epochs=1, batch_size=32)


def tiny(seed=0, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw}, seed=seed)


@pytest.fixture
def reg(tmp_path):
    r = JobRegistry(root=tmp_path / "runs")
    yield r
    r.stop_all(keep=False)
    r.wait(30)


def test_jobs_run_in_queue_order_and_are_stored(reg, tmp_path):
    ids = reg.submit([tiny(0), tiny(1), tiny(2)])
    assert len(ids) == 3 and len(set(ids)) == 3
    assert reg.busy()
    assert reg.wait(120), "jobs did not finish"
    snaps = {s.id: s for s in reg.snapshots()}
    assert [snaps[i].status for i in ids] == [DONE] * 3
    started = [snaps[i].started for i in ids]
    finished = [snaps[i].finished for i in ids]
    assert started == sorted(started) and finished == sorted(finished)
    for a, b in zip(ids, ids[1:]):  # one worker per device: the next starts after the previous ended
        assert snaps[b].started >= snaps[a].finished
    for i in ids:
        s = snaps[i]
        assert s.fraction == 1.0 and s.epoch == 1 and len(s.history) == 1
        assert {"train_loss", "val_acc", "wall"} <= set(s.history[0])
        assert s.history[0]["wall"] <= s.finished
        assert len(s.batch_losses) == len(s.batch_x) > 0
    runs, problems = list_runs(tmp_path / "runs")
    assert not problems
    assert sorted(r.id for r in runs) == sorted(snaps[i].run_id for i in ids)
    assert {r.config["seed"] for r in runs} == {0, 1, 2}
    assert all(r.status == "done" for r in runs)


def test_bad_config_queues_nothing(reg):
    with pytest.raises(ConfigError, match="minimum"):
        reg.submit([tiny(0), tiny(1, arch="alexnet")])  # AlexNet needs >= 63 px
    assert reg.snapshots() == []


def test_request_id_prevents_double_submission(reg):
    a = reg.submit([tiny(0)], request_id="click-1")
    b = reg.submit([tiny(0)], request_id="click-1")
    assert a == b and len(reg.snapshots()) == 1
    reg.stop_all(keep=False)
    assert reg.wait(60)


def _wait_first_epoch(reg, jid, timeout=90):
    assert wait_for(lambda: len(reg.get(jid).history) >= 1, timeout), reg.get(jid)


@pytest.mark.parametrize("keep", [True, False])
def test_stop_ends_a_running_job_quickly(reg, tmp_path, keep):
    jid, = reg.submit([tiny(0, epochs=500)])
    _wait_first_epoch(reg, jid)
    reg.stop(jid, keep=keep)
    assert reg.get(jid).stop_requested
    assert wait_for(lambda: reg.get(jid).status != RUNNING)  # how fast: `bench` (the trainer checks every layer)
    s = reg.get(jid)
    assert s.status == STOPPED and s.error is None
    assert 1 <= len(s.history) < 500
    runs, _ = list_runs(tmp_path / "runs")
    if keep:
        assert s.run_id and [r.id for r in runs] == [s.run_id]
        assert runs[0].status == "stopped" and len(runs[0].history["history"]) == len(s.history)
    else:
        assert s.run_id is None and runs == []


def test_cancel_a_queued_job(reg, tmp_path):
    first, second = reg.submit([tiny(0, epochs=500), tiny(1)])
    _wait_first_epoch(reg, first)
    assert reg.get(second).status == "queued"
    assert reg.layout() == ((first, True), (second, True))
    with pytest.raises(ValueError, match="stop it first"):
        reg.remove(first)
    reg.stop(second)
    assert reg.get(second).status == CANCELLED
    assert reg.layout() == ((first, True), (second, False))
    assert [s.id for s in reg.snapshots(active_only=True)] == [first]
    reg.stop(first, keep=False)
    assert reg.wait(30)
    assert reg.get(second).status == CANCELLED and reg.get(second).started is None
    assert list_runs(tmp_path / "runs")[0] == []
    reg.stop(second)  # stopping a finished job changes nothing
    assert reg.get(second).status == CANCELLED
    reg.remove(second)
    assert reg.layout() == ((first, False),)
    reg.clear_finished()
    assert reg.snapshots() == []


def test_an_error_inside_a_job_is_shown_and_the_worker_goes_on(tmp_path):
    def flaky(config, callback=None, stop=None):
        if config.seed == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if config.seed == 2:
            callback(Progress("data", message="decoding images 1/2"))
            raise ImageDecodeError("broken.png: not an image (truncated JPEG)")
        if config.seed == 3:
            raise RuntimeError("boom\nwith a second line")
        return train(config, callback=callback, stop=stop)

    reg = JobRegistry(root=tmp_path / "runs", trainer=flaky)
    ids = reg.submit([tiny(s) for s in (1, 2, 3, 0)])
    assert reg.wait(120)
    snaps = [reg.get(i) for i in ids]
    assert [s.status for s in snaps] == [FAILED, FAILED, FAILED, DONE]
    assert "out of memory" in snaps[0].error and "batch size" in snaps[0].error
    assert snaps[1].error == "broken.png: not an image (truncated JPEG)"
    assert snaps[2].error == "RuntimeError: boom"
    assert all(s.run_id is None for s in snaps[:3]) and snaps[3].run_id
    assert len(list_runs(tmp_path / "runs")[0]) == 1


def test_finished_jobs_release_the_model(tmp_path):
    refs = []

    def tracking(config, callback=None, stop=None):
        result = train(config, callback=callback, stop=stop)
        refs.append(weakref.ref(next(iter(result.state_dict.values()))))
        return result

    reg = JobRegistry(root=tmp_path / "runs", trainer=tracking)
    reg.submit([tiny(0)])
    assert reg.wait(60)
    gc.collect()
    assert refs and refs[0]() is None, "the finished job still holds its weights"


def test_histories_are_bounded():
    job = Job("j", tiny(0).resolved(), "x", "cpu")
    n = MAX_BATCH_POINTS * 3
    for i in range(1, n + 1):
        job.on_progress(Progress("batch", epoch=1, epochs=1, step=i, total_steps=n, loss=float(i)))
    s = job.snapshot()
    assert len(s.batch_losses) <= MAX_BATCH_POINTS + 1 and len(s.batch_losses) == len(s.batch_x)
    assert s.batch_losses[0] == 1.0 and s.batch_losses[-1] == float(n)  # thinned, not truncated
    assert s.batch_x == tuple(sorted(s.batch_x)) and abs(s.batch_x[-1] - 1.0) < 1e-9


def test_snapshots_are_consistent_under_concurrent_reads(reg):
    """Pages in several sessions read while the worker writes: every snapshot is internally consistent."""
    jid, = reg.submit([tiny(0, epochs=3)])
    bad = []

    def reader():
        while reg.busy():
            s = reg.get(jid)
            if len(s.batch_losses) != len(s.batch_x) or s.epoch < len(s.history):
                bad.append(s)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    assert reg.wait(120)
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a reader thread did not end"
    assert not bad and reg.get(jid).status == DONE


def test_epoch_history_is_bounded():
    """MAX_HISTORY_POINTS: an hours-long run keeps its whole curve, thinned, in bounded memory."""
    job = Job("j", tiny(0).resolved(), "x", "cpu")
    n = MAX_HISTORY_POINTS * 3 + 7
    for e in range(1, n + 1):
        job.on_progress(Progress("epoch", epoch=e, epochs=n, step=e, total_steps=n, loss=1.0 / e,
                                 metrics={"epoch": e, "test_acc": 0.5}))
    h = job.snapshot().history
    assert MAX_HISTORY_POINTS // 2 <= len(h) <= MAX_HISTORY_POINTS + 1
    epochs = [row["epoch"] for row in h]
    assert epochs[0] == 1 and epochs[-1] == n and epochs == sorted(epochs)  # thinned, not truncated


def test_finished_jobs_are_bounded(tmp_path):
    """MAX_FINISHED_JOBS: a server that runs for weeks forgets the oldest finished jobs, never an active one."""
    def refuse(config, callback=None, stop=None):
        raise ConfigError(f"refused seed {config.seed}")

    reg = JobRegistry(root=tmp_path / "runs", trainer=refuse)
    ids = reg.submit([tiny(s) for s in range(MAX_FINISHED_JOBS + 10)])
    assert reg.wait(300)
    assert len(reg.snapshots()) == MAX_FINISHED_JOBS + 10  # trimmed when the next jobs are submitted
    gate = threading.Event()

    def held(config, callback=None, stop=None):
        gate.wait(300)
        raise ConfigError("done waiting")

    reg._trainer = held
    (active,) = reg.submit([tiny(999)])
    snaps = reg.snapshots()
    assert [s.id for s in snaps] == ids[10:] + [active]  # the 10 oldest finished jobs are gone
    assert len(snaps) == MAX_FINISHED_JOBS + 1 and reg.get(active).status in ("queued", "running")
    gate.set()
    assert reg.wait(300)


def test_app_registry_is_one_per_process():
    """Every Streamlit session gets the same registry (st.cache_resource), so a second tab sees the jobs; and it
    is a cached resource, not a module global: clearing Streamlit's resource cache gives a new one."""
    import streamlit as st

    from pages.common import job_registry

    a = job_registry()
    assert isinstance(a, JobRegistry) and job_registry() is a
    st.cache_resource.clear()
    b = job_registry()
    assert b is not a and job_registry() is b


def test_one_line_error_messages():
    from cxrviz.errors import one_line

    assert one_line(MemoryError()).startswith("out of memory (host RAM)")
    assert one_line(ConfigError("epochs must be >= 1")) == "epochs must be >= 1"
    assert one_line(KeyError("x")) == "KeyError: 'x'"
