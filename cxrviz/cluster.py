"""Training on a Ray cluster: each run is a Ray task; its progress, stop flag and result travel through Ray.

:class:`RayTrainer` has the signature of :func:`cxrviz.train.train` (``config, callback=, stop=``), so a
:class:`cxrviz.jobs.JobRegistry` runs cluster jobs like local ones (``JobRegistry(cluster=RayTrainer(...))``,
jobs with ``device="ray"``): the same cards, progress events, stop buttons, and the run is stored by the
driver's registry in the driver's ``checkpoints/`` with :func:`cxrviz.runs.save_run`, exactly as a local run.

- A task asks for ``num_gpus=1`` on a cluster with GPUs, else ``cpus_per_run`` CPUs (and uses that many threads).
- Progress: the task buffers :class:`Progress` events and hands them, every 0.3 s, to one small ``_Relay``
  actor (no CPU reserved); the driver polls the relay and replays them into the job. The same exchange
  returns the job's stop flag, so a stop reaches the task within a second; a task still waiting for a
  slot is cancelled with ``ray.cancel``.
- The result comes back as a plain dict of numbers, lists and CPU tensors (the weights); nothing is executed
  or unpickled from disk on the driver, which writes safetensors as for any run.
- A worker or node that dies mid-run: no retry (``max_retries=0``); the job fails with one line saying so and
  nothing is stored. A retry would start the run from scratch on a cluster that just lost a node, and an
  out-of-memory kill would only repeat; the user relaunches it when the cluster is healthy.
- Data: ``config.data`` is opened **on the node**, so a real data set must sit at the same path on every node
  (a shared file system); ``None`` (the synthetic set) is generated on the node and needs nothing shipped.

``ray`` is imported lazily: cxrviz works without it.
"""
from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from .errors import CxrvizError
from .train import Progress, StopTraining, TrainConfig, TrainResult

RELAY_NAME = "cxrviz-progress-relay"
EXCHANGE_S = 0.3  # how often a task sends its progress and reads its stop flag
POLL_S = 0.25  # how often the driver replays progress
START_TIMEOUT_S = 300  # for the relay's worker to start
CALL_TIMEOUT_S = 120  # for one exchange with the relay (generous: a loaded node answers late)


class ClusterError(CxrvizError):
    """Ray is missing, the cluster cannot be reached, or a cluster job was lost."""


def _ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed: pip install 'ray[default]' to run on a cluster") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> dict:
    """Connect to the Ray cluster at ``address`` (``auto``: the one started with ``ray start`` here), or start a
    local one when ``address`` is None or ``local``. Reuses a connection this process already has. Returns
    the cluster's total resources."""
    ray = _ray()
    if not ray.is_initialized():
        code = {"py_modules": [str(Path(__file__).resolve().parent)]}  # ship cxrviz to the workers
        try:
            if address in (None, "", "local"):
                ray.init(num_cpus=num_cpus or 2, include_dashboard=False, runtime_env=code, log_to_driver=False,
                         logging_level="WARNING")
            else:
                ray.init(address=address, runtime_env=code, log_to_driver=False, logging_level="WARNING")
        except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError from Ray
            raise ClusterError(f"cannot reach the Ray cluster at {address}: {str(e).strip().splitlines()[0]}"
                               if str(e).strip() else f"cannot reach the Ray cluster at {address}") from None
    return dict(ray.cluster_resources())


class _Relay:
    """Ray actor: per task, the progress events not yet read by the driver, the stop flag and the worker pid."""

    def __init__(self) -> None:
        self.events: dict[str, list] = {}
        self.stops: set[str] = set()
        self.pids: dict[str, int] = {}

    def exchange(self, key: str, events: list, pid: int | None = None) -> bool:
        self.events.setdefault(key, []).extend(events)
        if pid is not None:
            self.pids[key] = pid
        return key in self.stops

    def drain(self, key: str) -> tuple[list, int | None]:
        return self.events.pop(key, []), self.pids.get(key)

    def stop(self, key: str) -> None:
        self.stops.add(key)

    def forget(self, key: str) -> None:
        self.events.pop(key, None)
        self.stops.discard(key)
        self.pids.pop(key, None)


def _train_task(config: dict, key: str, relay, threads: int) -> dict:
    """Runs on a Ray worker: train, exchanging progress and the stop flag with the relay; returns the result as
    plain data (or ``{"stopped_early": True}`` / ``{"error": line}``)."""
    import torch

    from .errors import one_line as readable_error
    from .train import train

    torch.set_num_threads(max(1, threads))
    stop = threading.Event()
    buf: list = []
    lock = threading.Lock()
    done = threading.Event()

    def exchange_loop() -> None:
        pid = os.getpid()
        while not done.is_set():
            with lock:
                out = buf[:]
                buf.clear()
            try:
                if _get(relay.exchange.remote(key, out, pid)):
                    stop.set()
            except Exception:  # noqa: BLE001 - the driver went away: finish quietly
                pass
            pid = None
            done.wait(EXCHANGE_S)

    def callback(p: Progress) -> None:
        with lock:
            if p.kind == "batch" and buf and buf[-1]["kind"] == "batch":
                buf[-1] = asdict(p)  # only the newest batch event between two exchanges matters
            else:
                buf.append(asdict(p))

    t = threading.Thread(target=exchange_loop, daemon=True)
    t.start()
    try:
        result = train(TrainConfig.from_dict({**config, "device": "auto"}), callback=callback, stop=stop)
        out = {f.name: getattr(result, f.name) for f in fields(TrainResult)}
    except StopTraining:
        out = {"stopped_early": True}
    except Exception as e:  # noqa: BLE001 - one line travels back, not a pickled exception
        out = {"error": readable_error(e)}
    finally:
        done.set()
        t.join(5)
    try:
        _get(relay.exchange.remote(key, buf[:]))  # the last events (epoch, end)
    except Exception:  # noqa: BLE001
        pass
    return out


def _get(ref, timeout: float | None = CALL_TIMEOUT_S):
    import ray

    return ray.get(ref, timeout=timeout)


class RayTrainer:
    """A trainer (same call as :func:`cxrviz.train.train`) that runs each call as a Ray task and blocks until
    its result is back, replaying the task's progress into ``callback`` and forwarding ``stop``."""

    max_running = 64  # driver threads that wait on cluster jobs; Ray decides how many run at once

    def __init__(self, address: str | None = None, cpus_per_run: int = 1, local_cpus: int = 2) -> None:
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.local_cpus = local_cpus
        self._relay = None
        self._lock = threading.Lock()
        self._pids: dict[str, int] = {}

    @property
    def where(self) -> str:
        return self.address if self.address not in (None, "", "local") else "a local Ray cluster"

    def _ensure(self):
        with self._lock:
            if self._relay is None:
                ray = _ray()
                resources = connect(self.address, self.local_cpus)
                self._gpu = resources.get("GPU", 0) > 0
                relay_cls = ray.remote(num_cpus=0, max_concurrency=16)(_Relay)
                relay = relay_cls.options(name=f"{RELAY_NAME}-{uuid.uuid4().hex[:8]}").remote()
                try:  # its worker starts now (seconds; a minute on a loaded machine), not inside a job's poll
                    _get(relay.drain.remote(""), timeout=START_TIMEOUT_S)
                except Exception as e:  # noqa: BLE001
                    raise ClusterError(f"the Ray cluster at {self.where} did not start a worker within "
                                       f"{START_TIMEOUT_S} s ({type(e).__name__})") from None
                self._relay = relay
                self._task = ray.remote(max_retries=0)(_train_task)
            return self._relay

    def worker_pids(self) -> dict[str, int]:
        """Task key -> pid of the worker process running it (once it has reported)."""
        with self._lock:
            return dict(self._pids)

    def __call__(self, config: TrainConfig, callback=None, stop: threading.Event | None = None) -> TrainResult:
        ray = _ray()
        relay = self._ensure()
        emit = callback or (lambda p: None)
        stop = stop or threading.Event()
        key = uuid.uuid4().hex
        opts = {"num_gpus": 1, "num_cpus": 1} if self._gpu else {"num_cpus": self.cpus_per_run}
        ref = self._task.options(**opts).remote(config.to_dict(), key, relay,
                                                1 if self._gpu else self.cpus_per_run)
        emit(Progress("data", message=f"submitted to {self.where}, waiting for a slot"))
        stop_sent = False
        pid = None
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=POLL_S)
                events, pid_now = _get(relay.drain.remote(key))
                if pid_now is not None and pid is None:
                    pid = pid_now
                    with self._lock:
                        self._pids[key] = pid
                    emit(Progress("data", message=f"running on the cluster (worker pid {pid})"))
                for e in events:
                    emit(Progress(**e))
                if stop.is_set() and not stop_sent:
                    stop_sent = True
                    relay.stop.remote(key)
                    if pid is None:
                        ray.cancel(ref)  # still waiting for a slot: never start it
                if ready:
                    break
            try:
                out = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                raise StopTraining() from None
            except ray.exceptions.RayError as e:
                raise ClusterError(_lost(e)) from None
            events, _ = _get(relay.drain.remote(key))
            for e in events:
                emit(Progress(**e))
        finally:
            relay.forget.remote(key)
            with self._lock:
                self._pids.pop(key, None)
        if out.get("stopped_early"):
            raise StopTraining()
        if "error" in out:
            raise ClusterError(out["error"])
        return TrainResult(**out)


def _lost(e: BaseException) -> str:
    """One line for a Ray failure of the task itself (not of the training, which returns its own line)."""
    name = type(e).__name__
    if "WorkerCrashed" in name or "NodeDied" in name or "ActorDied" in name or "OwnerDied" in name:
        return ("the Ray worker running this job died (its process was killed or its node was lost); "
                "nothing was stored: launch it again")
    first = str(e).strip().splitlines()[0] if str(e).strip() else name
    return f"the cluster lost this job ({name}): {first}"


def sweep_registry(address: str | None, cpus_per_run: int = 1, root=None):
    """A JobRegistry whose ``device="ray"`` jobs run on the cluster at ``address`` (None: a local one)."""
    from .jobs import JobRegistry

    trainer = RayTrainer(address, cpus_per_run=cpus_per_run)
    trainer._ensure()  # connect now: an unreachable cluster is one line before anything is queued
    return JobRegistry(root=root, cluster=trainer)


def connected() -> bool:
    """Whether this process is connected to a Ray cluster (False without Ray installed)."""
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def shutdown() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


__all__ = ["ClusterError", "RayTrainer", "connect", "connected", "sweep_registry", "shutdown"]
