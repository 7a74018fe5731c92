"""Background training jobs: a process-wide registry and one worker thread per device.

The Streamlit app keeps a single :class:`JobRegistry` in ``st.cache_resource`` so every session, tab and
page sees the same jobs; the CLI or a notebook can use one directly. Workers never touch Streamlit:
they only write into :class:`Job` objects under a lock, and pages read immutable snapshots.
"""
from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .models import get_spec
from .train import ConfigError, Progress, StopTraining, TrainConfig, select_device

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
MAX_BATCH_POINTS = 2000  # per job, for the live loss curve (thinned, never truncated, beyond this)
MAX_HISTORY_POINTS = 1000  # per job: epoch rows kept for the live charts (thinned beyond this)
MAX_FINISHED_JOBS = 200
MAX_REQUEST_IDS = 1000


def _thin(values: list, limit: int) -> None:
    """Bound a growing series in place: beyond ``limit`` keep every other point (and always the last), so a
    long run keeps its whole shape at half the resolution instead of losing its beginning."""
    if len(values) > limit:
        last = values[-1]
        values[:] = values[::2]
        if values[-1] is not last:
            values.append(last)


def readable_error(e: BaseException) -> str:
    """One line a user can act on, for an exception raised inside a job."""
    import torch

    if isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "out of memory: try a smaller batch size or image size, or a smaller model"
    if isinstance(e, MemoryError):
        return "out of memory (host RAM): try a smaller batch size or image size"
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, ValueError) and msg:  # ConfigError, DatasetError, ImageDecodeError, RunError
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


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
                stop_requested=self._stop.is_set())

    def _set(self, **kw) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)
            self.version += 1


class JobRegistry:
    """Thread-safe queue of training jobs with one worker thread per device."""

    def __init__(self, root: str | Path | None = None, trainer=None) -> None:
        self.root = Path(root) if root else None  # None: the default checkpoints/ (resolved at save time)
        self._trainer = trainer  # injectable for fault tests; defaults to cxrviz.train.train
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._requests: dict[str, None] = {}  # insertion-ordered, bounded
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.on_run_saved = None  # optional hook (run_id) -> None, e.g. to clear a cached run list

    # ------------------------------------------------------------------ submit
    def submit(self, configs: list[TrainConfig], request_id: str | None = None) -> list[str]:
        """Queue one job per config (validated first: a bad config raises ConfigError and queues nothing).
        A repeated ``request_id`` (a double click, a rerun) queues nothing and returns the earlier ids."""
        resolved = [c.resolved() for c in configs]
        keys = [self._device_key(c) for c in resolved]
        with self._lock:
            if request_id is not None:
                if request_id in self._requests:
                    return [j.id for j in self._jobs.values() if j.request_id == request_id]
                self._requests[request_id] = None
                while len(self._requests) > MAX_REQUEST_IDS:
                    self._requests.pop(next(iter(self._requests)))
            ids = []
            for c, key in zip(resolved, keys):
                jid = f"job{next(self._ids)}-{c.arch}-s{c.seed}"
                job = Job(jid, c, f"{get_spec(c.arch).display} {c.img_size}px e{c.epochs} s{c.seed}", key,
                          request_id=request_id)
                self._jobs[jid] = job
                self._queue(key).put(jid)
                ids.append(jid)
            self._trim()
        return ids

    def _device_key(self, c: TrainConfig) -> str:
        return str(select_device(c.device))

    def _queue(self, key: str) -> queue.Queue:
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = queue.Queue()
        w = self._workers.get(key)
        if w is None or not w.is_alive():
            w = threading.Thread(target=self._work, args=(key, q), name=f"cxrviz-worker-{key}", daemon=True)
            self._workers[key] = w
            w.start()
        return q

    # ------------------------------------------------------------------ worker
    def _work(self, key: str, q: queue.Queue) -> None:
        while True:
            jid = q.get()
            with self._lock:
                job = self._jobs.get(jid)
            if job is None or not self._claim(job):
                continue  # cancelled or cleared while it waited
            try:
                self._run(job)
            except BaseException as e:  # noqa: BLE001 - the worker must survive anything a job does
                log.exception("job %s crashed", jid)
                job._set(status=FAILED, error=readable_error(e), finished=time.time(), message="failed")
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

        trainer = self._trainer or train
        try:
            result = trainer(job.config, callback=job.on_progress, stop=job._stop)
        except StopTraining:  # stopped before the first batch (e.g. while the data loaded): nothing to keep
            job._set(status=STOPPED, finished=time.time(), eta=0.0, message="stopped before training began")
            return
        except Exception as e:  # noqa: BLE001
            log.warning("job %s failed: %s\n%s", job.id, e, traceback.format_exc())
            job._set(status=FAILED, error=readable_error(e), finished=time.time(), message="failed")
            return
        status = DONE if result.status == "done" else STOPPED
        run_id = None
        if status == DONE or job.keep_on_stop:
            if result.history:
                try:
                    run_id = save_run(result, root=self.root).id
                except Exception as e:  # noqa: BLE001 - disk full, permissions...
                    job._set(status=FAILED, error=f"could not save the run: {readable_error(e)}",
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


__all__ = ["JobRegistry", "JobSnapshot", "Job", "readable_error", "ConfigError", "QUEUED", "RUNNING", "DONE",
           "STOPPED", "FAILED", "CANCELLED", "ACTIVE"]
