"""Background training jobs: a process-wide registry and worker threads per device.

The Streamlit app keeps a single :class:`JobRegistry` in ``st.cache_resource`` so every session, tab and
page sees the same jobs; the CLI or a notebook can use one directly. Workers never touch Streamlit:
they only write into :class:`Job` objects under a lock, and pages read immutable snapshots.

Every device of the machine (each CUDA GPU) has its own queue and ``jobs_per_device`` worker threads; a job with
``device="auto"`` goes to the device with the least queued work (:mod:`cxrviz.placement`), a pinned one
(``cuda:1``) to its device. With a ``cluster`` (:class:`cxrviz.cluster.RayTrainer`), ``device="ray"`` jobs run
on a Ray cluster behind the same queue, cards and stop buttons.

It is one module (about 490 lines) because most of it is one class, :class:`JobRegistry`, whose queues, worker
threads, stop flags and snapshots are guarded by one lock; splitting it would spread that locking discipline
over several modules.
"""
from __future__ import annotations

import gc
import itertools
import logging
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import one_line
from .models import get_spec
from .placement import (
    detect_devices,
    job_work,
    least_loaded,
    normalise_device,
    parse_jobs_per_device,
)
from .train import ConfigError, Progress, StopTraining, TrainConfig, select_device

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
MAX_BATCH_POINTS = 2000  # per job, for the live loss curve (thinned, never truncated, beyond this)
MAX_HISTORY_POINTS = 1000  # per job: epoch rows kept for the live charts (thinned beyond this)
MAX_FINISHED_JOBS = 200
MAX_REQUEST_IDS = 1000
CLUSTER = "ray"  # the device name of jobs that run on the Ray cluster


def _thin(values: list, limit: int) -> None:
    """Bound a growing series in place: beyond ``limit`` keep every other point (and always the last), so a
    long run keeps its whole shape at half the resolution instead of losing its beginning."""
    if len(values) > limit:
        last = values[-1]
        values[:] = values[::2]
        if values[-1] is not last:
            values.append(last)


@dataclass(frozen=True)
class JobSnapshot:
    id: str
    label: str
    arch: str
    seed: int
    config: dict
    status: str
    created: float
    started: float | None
    finished: float | None
    fraction: float
    epoch: int
    epochs: int
    elapsed: float
    eta: float | None
    message: str
    history: tuple[dict, ...]
    batch_losses: tuple[float, ...]
    error: str | None
    run_id: str | None
    keep_on_stop: bool
    version: int
    batch_x: tuple[float, ...] = ()  # position of each batch loss in (fractional) epochs
    stop_requested: bool = False
    device: str = ""  # where the job was placed: cuda:1, cpu, ray, ...

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass
class Job:
    id: str
    config: TrainConfig  # resolved
    label: str
    device_key: str
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    fraction: float = 0.0
    epoch: int = 0
    elapsed: float = 0.0
    eta: float | None = None
    message: str = "queued"
    history: list = field(default_factory=list)
    batch_losses: list = field(default_factory=list)
    batch_x: list = field(default_factory=list)
    error: str | None = None
    run_id: str | None = None
    keep_on_stop: bool = True
    version: int = 0
    request_id: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_progress(self, p: Progress) -> None:
        """The trainer's callback (runs in the worker thread)."""
        with self._lock:
            self.elapsed = p.elapsed
            if p.kind == "data":
                self.message = p.message
            elif p.kind == "start":
                self.message = p.message
            elif p.kind == "batch":
                self.fraction, self.eta, self.epoch = p.fraction, p.eta, p.epoch
                if p.loss is not None:
                    self.batch_losses.append(p.loss)
                    self.batch_x.append(p.fraction * p.epochs)
                    if len(self.batch_losses) > MAX_BATCH_POINTS:
                        _thin(self.batch_losses, MAX_BATCH_POINTS)
                        _thin(self.batch_x, MAX_BATCH_POINTS)
                if not self._stop.is_set():
                    self.message = f"epoch {p.epoch}/{p.epochs}"
            elif p.kind == "epoch":
                self.fraction, self.eta, self.epoch = p.fraction, p.eta, p.epoch
                self.history.append({**p.metrics, "wall": time.time()})
                _thin(self.history, MAX_HISTORY_POINTS)
                if not self._stop.is_set():
                    split = "val" if "val_acc" in p.metrics else "test"  # runs without a validation split
                    self.message = f"epoch {p.epoch}/{p.epochs}: {split} acc {100 * p.metrics[split + '_acc']:.1f} %"
            self.version += 1

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(
                id=self.id, label=self.label, arch=self.config.arch, seed=self.config.seed,
                config=self.config.to_dict(), status=self.status, created=self.created, started=self.started,
                finished=self.finished, fraction=self.fraction, epoch=self.epoch, epochs=self.config.epochs,
                elapsed=self.elapsed, eta=self.eta, message=self.message, history=tuple(self.history),
                batch_losses=tuple(self.batch_losses), error=self.error, run_id=self.run_id,
                keep_on_stop=self.keep_on_stop, version=self.version, batch_x=tuple(self.batch_x),
                stop_requested=self._stop.is_set(), device=self.device_key)

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)
            self.version += 1


class JobRegistry:
    """Thread-safe queue of training jobs with one worker thread per device."""

    def __init__(self, root: str | Path | None = None, trainer=None, devices: list[str] | None = None,
                 jobs_per_device: int | str = 1, cluster=None) -> None:
        self.root = Path(root) if root else None  # None: the default checkpoints/ (resolved at save time)
        self._trainer = trainer  # injectable for fault tests; defaults to cxrviz.train.train
        # the pool "auto" draws from; injectable, so placement is tested without a GPU
        self._injected = devices is not None
        self.devices = [normalise_device(d) for d in devices] if devices else detect_devices()
        self.jobs_per_device = parse_jobs_per_device(jobs_per_device)  # for devices whose workers start later
        self.cluster = cluster  # trainer-like callable running a job on Ray (cxrviz.cluster.RayTrainer) or None
        self._slots: dict[str, int] = {}  # device -> worker threads started
        self._gates: dict[str, threading.Lock] = {}  # device -> one job at a time builds its model and data
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._workers: dict[str, list[threading.Thread]] = {}
        self._requests: dict[str, None] = {}  # insertion-ordered, bounded
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.on_run_saved = None  # optional hook (run_id) -> None, e.g. to clear a cached run list

    @classmethod
    def from_environment(cls, root: str | Path | None = None, trainer=None) -> "JobRegistry":
        """The app's registry: ``CXRVIZ_RAY_ADDRESS`` (host:port, ``auto``, or ``local`` for a local Ray cluster)
        adds cluster jobs, connected on first use; ``CXRVIZ_JOBS_PER_DEVICE`` (N or auto, default 1)."""
        per_device = os.environ.get("CXRVIZ_JOBS_PER_DEVICE", "1")
        try:
            parse_jobs_per_device(per_device)
        except ConfigError as e:
            log.warning("CXRVIZ_JOBS_PER_DEVICE ignored: %s", e)
            per_device = 1
        address = os.environ.get("CXRVIZ_RAY_ADDRESS", "").strip()
        cluster = None
        if address:
            from .cluster import RayTrainer

            cluster = RayTrainer(None if address == "local" else address)
        return cls(root=root, trainer=trainer, jobs_per_device=per_device, cluster=cluster)

    # ------------------------------------------------------------------ submit
    def submit(self, configs: list[TrainConfig], request_id: str | None = None) -> list[str]:
        """Queue one job per config (validated first: a bad config raises ConfigError and queues nothing).
        A repeated ``request_id`` (a double click, a rerun) queues nothing and returns the earlier ids."""
        resolved = [c.resolved() for c in configs]
        keys = [self._device_key(c) for c in resolved]  # None: auto, placed below
        with self._lock:
            if request_id is not None:
                if request_id in self._requests:
                    return [j.id for j in self._jobs.values() if j.request_id == request_id]
                self._requests[request_id] = None
                while len(self._requests) > MAX_REQUEST_IDS:
                    self._requests.pop(next(iter(self._requests)))
            ids = []
            load = self._load()
            for c, key in zip(resolved, keys):
                if key is None:
                    key = least_loaded(self.devices, load)
                c = replace(c, device=key)  # the trainer (and the card) see the device the job was placed on
                load[key] = load.get(key, 0.0) + (job_work(c) if key != CLUSTER else 0.0)
                jid = f"job{next(self._ids)}-{c.arch}-s{c.seed}"
                job = Job(jid, c, f"{get_spec(c.arch).display} {c.img_size}px e{c.epochs} s{c.seed}", key,
                          request_id=request_id)
                self._jobs[jid] = job
                self._queue(key, c).put(jid)
                ids.append(jid)
            self._trim()
        return ids

    def _device_key(self, c: TrainConfig) -> str | None:
        """The device a config is pinned to, validated; None for ``auto`` (placed at submit)."""
        pref = normalise_device(c.device)
        if pref == "auto":
            return None
        if pref == CLUSTER:
            if self.cluster is None:
                raise ConfigError("no Ray cluster configured: start the app with CXRVIZ_RAY_ADDRESS set, or use "
                                  "`python -m cxrviz sweep --ray`")
            return CLUSTER
        if pref in self.devices or pref == "cpu":
            return pref
        if self._injected:
            raise ConfigError(f"device {c.device!r} is not one of {', '.join(self.devices + ['cpu'])}")
        key = str(select_device(pref))  # a one-line ConfigError for an unknown or missing device
        if key.startswith("cuda") and key not in self.devices:
            raise ConfigError(f"device {c.device!r} does not exist: this machine has {', '.join(self.devices)}")
        return key

    def _load(self) -> dict[str, float]:
        """Work still to do per device: queued jobs in full, running ones for their remaining fraction."""
        load = {d: 0.0 for d in self.devices}
        for j in self._jobs.values():
            if j.status in ACTIVE and j.device_key != CLUSTER:
                left = 1.0 - (j.fraction if j.status == RUNNING else 0.0)
                load[j.device_key] = load.get(j.device_key, 0.0) + job_work(j.config) * left
        return load

    def _queue(self, key: str, first: TrainConfig) -> queue.Queue:
        """The device's queue; its worker threads start with its first job (``first`` sizes ``auto``)."""
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = queue.Queue()
        if key not in self._slots:
            self._slots[key] = self._slot_count(key, first)
            if self._slots[key] > 1 and key != CLUSTER:
                self._gates[key] = threading.Lock()
        workers = self._workers.setdefault(key, [])
        workers[:] = [w for w in workers if w.is_alive()]
        while len(workers) < self._slots[key]:  # worker i runs while i < the device's slots
            w = threading.Thread(target=self._work, args=(key, q, len(workers)),
                                 name=f"cxrviz-worker-{key}-{len(workers)}", daemon=True)
            workers.append(w)
            w.start()
        return q

    def _slot_count(self, key: str, first: TrainConfig) -> int:
        if key == CLUSTER:
            return getattr(self.cluster, "max_running", 64)  # the cluster schedules; these threads only wait
        if self.jobs_per_device != "auto":
            return int(self.jobs_per_device)
        if self._injected and key != "cpu":  # a fake device name: nothing to measure
            return 1
        from .placement import auto_jobs_per_device

        try:
            return auto_jobs_per_device(key, first)
        except Exception as e:  # noqa: BLE001 - a failed probe must not lose the job: one at a time
            log.warning("could not size jobs per device on %s: %s", key, e)
            return 1

    def set_jobs_per_device(self, value: int | str) -> None:
        """Change how many jobs each device runs at once. A number applies at once (more: workers start; fewer:
        running jobs finish, the surplus workers then leave); ``auto`` applies to devices not used yet."""
        n = parse_jobs_per_device(value)
        with self._lock:
            self.jobs_per_device = n
            for key in list(self._slots):
                if key != CLUSTER and n != "auto":
                    self._slots[key] = n
                    if n > 1:
                        self._gates.setdefault(key, threading.Lock())
                    self._queue(key, None)

    def device_queues(self) -> list[dict]:
        """Per device: jobs running and queued, queued work (G multiply-adds per image) and jobs at a time."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.status in ACTIVE]
            keys = list(dict.fromkeys(self.devices + [j.device_key for j in jobs]))
            load = self._load()
            slots = dict(self._slots)
        rows = []
        for key in keys:
            mine = [j for j in jobs if j.device_key == key]
            rows.append({"device": key, "running": sum(j.status == RUNNING for j in mine),
                         "queued": sum(j.status == QUEUED for j in mine), "work": load.get(key, 0.0),
                         "jobs at a time": slots.get(key, self.jobs_per_device if key != CLUSTER else "cluster")})
        return rows

    # ------------------------------------------------------------------ worker
    def _work(self, key: str, q: queue.Queue, index: int = 0) -> None:
        while True:
            jid = q.get()
            with self._lock:
                if index >= self._slots.get(key, 1):  # the device now runs fewer jobs at a time: hand back, leave
                    with q.mutex:
                        q.queue.appendleft(jid)
                        q.unfinished_tasks += 1
                        q.not_empty.notify()
                    me = threading.current_thread()
                    self._workers[key] = [w for w in self._workers.get(key, []) if w is not me]
                    return
                job = self._jobs.get(jid)
            if job is None or not self._claim(job):
                continue  # cancelled or cleared while it waited
            try:
                self._run(job)
            except BaseException as e:  # noqa: BLE001 - the worker must survive anything a job does
                log.exception("job %s crashed", jid)
                job._set(status=FAILED, error=one_line(e), finished=time.time(), message="failed")
            finally:
                job = None
                gc.collect()  # release the finished job's model, optimiser and batches now, not later
                if key.startswith("cuda"):
                    import torch

                    torch.cuda.empty_cache()

    @staticmethod
    def _claim(job: Job) -> bool:
        """QUEUED -> RUNNING atomically, so a cancel that races the worker either wins or loses cleanly."""
        with job._lock:
            if job.status != QUEUED:
                return False
            job.status, job.started, job.message = RUNNING, time.time(), "loading data"
            job.version += 1
            return True

    def _run(self, job: Job) -> None:
        from .runs import save_run
        from .train import train

        trainer = (self.cluster if job.device_key == CLUSTER else self._trainer) or train
        gate = self._gates.get(job.device_key)
        started = threading.Event()

        def progress(p: Progress) -> None:
            # with several jobs per device, one at a time loads its data and builds its model (torch's global
            # generator seeds the weights: two jobs seeding it at once would swap initial weights)
            if gate is not None and p.kind == "start" and not started.is_set():
                started.set()
                gate.release()
            job.on_progress(p)

        if gate is not None:
            gate.acquire()
        try:
            result = trainer(job.config, callback=progress, stop=job._stop)
        except StopTraining:  # stopped before the first batch (e.g. while the data loaded): nothing to keep
            job._set(status=STOPPED, finished=time.time(), eta=0.0, message="stopped before training began")
            return
        except Exception as e:  # noqa: BLE001
            log.warning("job %s failed: %s\n%s", job.id, e, traceback.format_exc())
            job._set(status=FAILED, error=one_line(e), finished=time.time(), message="failed")
            return
        finally:
            if gate is not None and not started.is_set():
                started.set()
                gate.release()
        status = DONE if result.status == "done" else STOPPED
        run_id = None
        if status == DONE or job.keep_on_stop:
            if result.history:
                try:
                    run_id = save_run(result, root=self.root).id
                except Exception as e:  # noqa: BLE001 - disk full, permissions...
                    job._set(status=FAILED, error=f"could not save the run: {one_line(e)}",
                             finished=time.time(), message="failed")
                    return
        msg = "done" if status == DONE else ("stopped, kept" if run_id else "stopped, discarded" if result.history
                                             else "stopped before the first epoch ended: nothing to keep")
        if result.evaluation and status == DONE:
            msg = f"done: test acc {100 * result.evaluation['accuracy']:.1f} %"
        job._set(status=status, run_id=run_id, finished=time.time(), fraction=1.0 if status == DONE else job.fraction,
                 eta=0.0, message=msg)
        del result  # the model and optimiser state go with it
        if run_id and self.on_run_saved:
            try:
                self.on_run_saved(run_id)
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ control
    def stop(self, job_id: str, keep: bool = True) -> None:
        """Stop a running job (within a second) or cancel a queued one. ``keep``: store the partial run."""
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"no job {job_id}")
        with job._lock:
            if job.status not in ACTIVE:
                return  # already finished: nothing to stop, and its outcome is not rewritten
            job.keep_on_stop = keep
            if job.status == QUEUED:
                job.status, job.finished, job.message = CANCELLED, time.time(), "cancelled"
            else:
                job.message = "stopping (keeping the partial run)" if keep else "stopping (discarding the run)"
            job.version += 1
            job._stop.set()

    def stop_all(self, keep: bool = True) -> None:
        for j in list(self._jobs.values()):
            if j.status in ACTIVE:
                self.stop(j.id, keep)

    def clear_finished(self) -> None:
        """Forget every finished job (their stored runs stay in checkpoints/)."""
        with self._lock:
            for jid in [j.id for j in self._jobs.values() if j.status not in ACTIVE]:
                del self._jobs[jid]

    def remove(self, job_id: str) -> None:
        """Forget one finished job (its stored run stays). Active jobs must be stopped first."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job.status in ACTIVE:
                raise ValueError(f"job {job_id} is still {job.status}; stop it first")
            del self._jobs[job_id]

    def _trim(self) -> None:
        done = [j for j in self._jobs.values() if j.status not in ACTIVE]
        for j in sorted(done, key=lambda j: j.created)[:max(0, len(done) - MAX_FINISHED_JOBS)]:
            del self._jobs[j.id]

    # ------------------------------------------------------------------ read
    def snapshots(self, active_only: bool = False) -> list[JobSnapshot]:
        """Every job (oldest first), or only the queued and running ones."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.snapshot() for j in jobs if not active_only or j.status in ACTIVE]

    def layout(self) -> tuple[tuple[str, bool], ...]:
        """(id, active) of every job: a cheap way for a page to notice that a job appeared, started or
        ended without copying every history."""
        with self._lock:
            jobs = list(self._jobs.values())
        return tuple((j.id, j.status in ACTIVE) for j in jobs)

    def get(self, job_id: str) -> JobSnapshot:
        with self._lock:
            job = self._jobs[job_id]
        return job.snapshot()

    def busy(self) -> bool:
        with self._lock:
            jobs = list(self._jobs.values())
        return any(j.status in ACTIVE for j in jobs)

    def wait(self, timeout: float = 60.0, poll: float = 0.05) -> bool:
        """Block until no job is queued or running (for tests and the CLI). Returns False on timeout."""
        end = time.time() + timeout
        while time.time() < end:
            if not self.busy():
                return True
            time.sleep(poll)
        return not self.busy()


__all__ = ["CLUSTER", "JobRegistry", "JobSnapshot", "Job", "ConfigError", "QUEUED", "RUNNING", "DONE",
           "STOPPED", "FAILED", "CANCELLED", "ACTIVE"]
