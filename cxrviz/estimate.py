"""How long a training job will take, before it runs: a speed probe (real training steps of the architecture
at the job's size up to 128 px, timed in a background thread so a page never blocks), scaled by FLOPs to the
chosen size, batch and dataset, and calibrated against measured runs (``python -m cxrviz bench`` section e prints the
estimate's error)."""
from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass

import torch

from .data.dataset import DatasetSource
from .format import format_duration
from .models import get_spec, model_stats
from .precision import autocast, cpu_has_bf16, to_memory_format
from .precision import choose as choose_precision
from .train import TrainConfig, loss_fn, make_optimizer, select_device

LONG_RUN_S = 600.0  # warn above this (all jobs of a launch together)
PROBE_MAX_SIZE = 128  # jobs up to 128 px are probed at their own size: scaling a 64 px probe by FLOPs
PROBE_BATCH = 8  # misjudged AlexNet's FC layers 2x; batch 4 made big fully-connected layers look slow


@dataclass(frozen=True)
class Speed:
    """Measured cost of one architecture on one device at a small probe size."""

    arch: str
    device: str
    size: int
    batch: int
    fwd_bwd_s: float  # one forward + backward of the probe batch
    opt_s: float  # one optimiser step (independent of batch and image size)
    measured_at: float
    precision: str = "fp32"  # what the steps ran in: the precision the job will use (bf16 autocast or fp32)


_SPEEDS: dict[tuple, Speed] = {}
_PENDING: dict[tuple, threading.Thread] = {}
_SPEED_LOCK = threading.Lock()  # guards the two dicts
_PROBE_LOCK = threading.Lock()  # one measurement at a time (two at once would time each other)
_GENERATION = [0]  # bumped by cancel_probes(): measurements requested before give up and cache nothing


class ProbeCancelled(Exception):
    """A measurement abandoned because training started (it would have timed the contention)."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _probe_key(arch: str, optimizer: str, device: str, in_channels: int, img_size: int,
               precision: str = "auto") -> tuple:
    spec = get_spec(arch)
    size = max(spec.min_size, min(int(img_size), PROBE_MAX_SIZE))
    return (spec.name, optimizer, str(select_device(device)), in_channels, size, torch.get_num_threads(), precision)


def probe_speed(arch: str, optimizer: str, device: str = "auto", in_channels: int = 1,
                img_size: int = PROBE_MAX_SIZE, generation: int | None = None, precision: str = "auto") -> Speed:
    """Time real training steps of ``arch`` on this device at a small size (cached per process), in the
    precision a job with this ``precision`` setting trains in (bf16 autocast + channels-last or fp32, chosen
    as the trainer chooses it: on a CPU with bf16 instructions bf16 halves VGG-19's step time, and an fp32
    probe once made a 11-minute VGG-19 job look like 20).

    The first steps of a model in a process are several times slower (kernel selection, allocator and
    optimiser state warm-up), so a few untimed steps come first; the fastest timed step is kept (on a
    shared machine the slower ones measure other programs). Raises ProbeCancelled after cancel_probes()."""
    key = _probe_key(arch, optimizer, device, in_channels, img_size, precision)
    with _SPEED_LOCK:
        if key in _SPEEDS:
            return _SPEEDS[key]
        if generation is None:
            generation = _GENERATION[0]
    with _PROBE_LOCK:
        with _SPEED_LOCK:
            if key in _SPEEDS:
                return _SPEEDS[key]
        name, _, dev_name, _, size, _, _ = key
        if _GENERATION[0] != generation:
            raise ProbeCancelled(f"timing {name} was cancelled")
        dev = torch.device(dev_name)
        cfg = TrainConfig(arch=name, optimizer=optimizer).resolved()
        prec = choose_precision(precision, dev, name, size, in_channels)
        torch.manual_seed(0)
        model = get_spec(name).build(num_classes=3, in_channels=in_channels).to(dev).train()
        if prec.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg)
        x = to_memory_format(torch.randn(PROBE_BATCH, in_channels, size, size, device=dev), prec.channels_last)
        y = torch.arange(PROBE_BATCH, device=dev) % 3
        fb: list[float] = []
        st: list[float] = []
        t_begin = time.perf_counter()
        for i in range(7):
            if _GENERATION[0] != generation:
                raise ProbeCancelled(f"timing {name} was cancelled")
            t0 = time.perf_counter()
            with autocast(dev, prec.bf16):
                loss, _ = loss_fn(model(x), y, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _sync(dev)
            t1 = time.perf_counter()
            opt.step()
            _sync(dev)
            fb.append(t1 - t0)
            st.append(time.perf_counter() - t1)
            if i >= 4 and time.perf_counter() - t_begin > 20:  # a huge model on a slow device: enough
                break
        warm = 3 if len(fb) > 4 else 1
        speed = Speed(name, dev_name, size, PROBE_BATCH, min(fb[warm:]), min(st[warm:]), time.time(), prec.name)
        del model, opt, x
        with _SPEED_LOCK:
            _SPEEDS[key] = speed
        return speed


def request_probe(arch: str, optimizer: str, device: str = "auto", in_channels: int = 1,
                  img_size: int = PROBE_MAX_SIZE, precision: str = "auto") -> Speed | None:
    """The cached probe, or None after starting it in a background thread (so a page never blocks)."""
    key = _probe_key(arch, optimizer, device, in_channels, img_size, precision)
    with _SPEED_LOCK:
        if key in _SPEEDS:
            return _SPEEDS[key]
        t = _PENDING.get(key)
        if t is None or not t.is_alive():
            generation = _GENERATION[0]  # a cancel from now on applies to this request

            def run() -> None:
                try:
                    probe_speed(arch, optimizer, device, in_channels, img_size, generation, precision)
                except Exception:  # noqa: BLE001 - a failed probe only leaves the rough estimate
                    pass
                finally:
                    with _SPEED_LOCK:
                        _PENDING.pop(key, None)

            # not a daemon: the interpreter lets a probe (seconds) finish at exit instead of killing it
            # inside a torch kernel, which aborts the process
            t = _PENDING[key] = threading.Thread(target=run, name=f"cxrviz-probe-{key[0]}", daemon=False)
            t.start()
    return None


def cancel_probes() -> None:
    """Abandon measurements in flight (call before training starts: they would time the contention and
    slow the training); a later estimate starts them again."""
    with _SPEED_LOCK:
        _GENERATION[0] += 1


def probes_pending() -> bool:
    with _SPEED_LOCK:
        return any(t.is_alive() for t in _PENDING.values())


def wait_for_probes(timeout: float = 60.0) -> bool:
    end = time.time() + timeout
    while probes_pending() and time.time() < end:
        time.sleep(0.05)
    return not probes_pending()


def cached_speed(arch: str, device: str = "auto", precision: str = "auto") -> Speed | None:
    """A probe already measured for this architecture on this device with this precision setting (any
    optimiser or size), if any: a bf16 probe says little about an fp32 job."""
    dev = str(select_device(device))
    name = get_spec(arch).name
    with _SPEED_LOCK:
        found = [s for k, s in _SPEEDS.items() if s.arch == name and s.device == dev and k[-1] == precision]
    return found[-1] if found else None


# Measured job time / uncalibrated estimate, from runs timed on this project's 2-core CPU with nothing else
# running (2026-12-01; Kaggle set, 128 px, 15 % validation; benchmarks/results/cpu-2026-12-01/estimate.md):
# ResNet-18 5 epochs 39.4 s vs 45.7 s raw (0.86), AlexNet 5 epochs 33.8 / 50.1 (0.67), GoogLeNet 2 epochs
# 21.0 / 22.2 (0.95), VGG-19 1 epoch 90.6 / 93.4 (0.97); geometric mean 0.85. A probe batch of 8 still uses
# the cores a little less well per image than the real batches of 32. ``python -m cxrviz bench`` (section e)
# prints the calibrated estimate's error on the machine it runs on.
CALIBRATION = 0.85
MIN_PROBE_GFLOPS = 0.05  # probes of smaller models say little about the speed of others


def _likely_precision(setting: str, device: str) -> str:
    """The precision a job will probably train in, without a probe: bf16 where asked for, or "auto" on a GPU
    or a CPU with bf16 instructions (the trainer's probe may still pick fp32 there, as it does for AlexNet)."""
    if setting == "bf16":
        return "bf16"
    if setting == "auto" and (device.startswith("cuda") or (device == "cpu" and cpu_has_bf16())):
        return "bf16"
    return "fp32"


def _fallback_rates(device: str, precision: str = "fp32") -> tuple[float, float]:
    """(seconds per forward-backward GFLOP per image, seconds per parameter per optimiser step) from the
    probes measured on this device in ``precision`` (bf16 steps take about 0.55x fp32's on this CPU, so the two
    are not mixed), or a guess where there are none."""
    with _SPEED_LOCK:
        speeds = [s for s in _SPEEDS.values() if s.device == device and s.precision == precision]
    # a tiny model's step is mostly fixed overhead: its time per GFLOP would make big models look far slower
    # (LeNet-5's probe once turned ResNet-18's estimate into an hour for a run of a few minutes)
    speeds = [s for s in speeds if model_stats(s.arch, s.size)["gflops"] >= MIN_PROBE_GFLOPS]
    if speeds:
        per_gflop = statistics.median(s.fwd_bwd_s / (s.batch * model_stats(s.arch, s.size)["gflops"])
                                      for s in speeds)
        per_param = statistics.median(s.opt_s / model_stats(s.arch, s.size)["params"] for s in speeds)
        return per_gflop, per_param
    if device.startswith("cuda"):
        return 2e-3, 2e-10
    # 2 CPU cores (AMD EPYC, AVX512-BF16), probes at 128 px, 2026-12-06: seconds per forward GFLOP per image
    # for forward + backward, fp32: VGG-19 0.038, ResNet-18 0.042, GoogLeNet 0.066, AlexNet 0.086; bf16:
    # VGG-19 0.021, ResNet-18 0.025, GoogLeNet 0.034; optimiser steps 1.4e-9 to 3.7e-9 s per parameter.
    # (Before 2026-12-06 the guess was 0.12 from 64 px probes: VGG-19's 11-minute job read "1 h 2 min".)
    return (0.03 if precision == "bf16" else 0.055), 2.5e-9


@dataclass(frozen=True)
class Estimate:
    arch: str
    display: str
    seed: int
    img_size: int
    epochs: int
    batch_size: int
    device: str
    seconds: float  # the whole job
    epoch_seconds: float
    gflops: float
    params: int
    measured: bool  # from a probe of this architecture on this device (else a rough FLOP-based guess)

    @property
    def long(self) -> bool:
        return self.seconds > LONG_RUN_S


def estimate_job(config: TrainConfig, n_train: int, n_test: int, *, probe: str = "sync") -> Estimate:
    """Seconds one job will take on this device: measured training steps of this architecture at a small
    size, scaled by the FLOPs of the chosen size and batch, times the steps, plus the per-epoch BatchNorm
    re-estimate and test evaluation. ``probe``: "sync" measures now if needed; "background" starts the
    measurement in a thread and meanwhile answers from an earlier probe or a FLOP-based guess
    (``measured=False``); "off" never measures (e.g. while training runs: it would slow both)."""
    c = config.resolved()
    spec = get_spec(c.arch)
    dev = str(select_device(c.device))
    stats = model_stats(c.arch, c.img_size, in_channels=c.in_channels)
    if probe == "sync":
        speed = probe_speed(c.arch, c.optimizer, c.device, c.in_channels, c.img_size, precision=c.precision)
    elif probe == "background":
        speed = request_probe(c.arch, c.optimizer, c.device, c.in_channels, c.img_size, c.precision)
    elif probe == "off":
        speed = None
    else:
        raise ValueError(f"probe must be 'sync', 'background' or 'off', not {probe!r}")
    speed = speed or cached_speed(c.arch, c.device, c.precision)
    if speed is not None:
        pg = model_stats(speed.arch, speed.size, in_channels=c.in_channels)["gflops"]
        fb_img = speed.fwd_bwd_s / speed.batch * (stats["gflops"] / pg)
        opt = speed.opt_s
    else:
        per_gflop, per_param = _fallback_rates(dev, _likely_precision(c.precision, dev))
        fb_img = per_gflop * stats["gflops"]
        opt = per_param * stats["params"]
    n_val = round(n_train * c.val_fraction)  # held out: scored every epoch; the test split once, at the end
    n_fit = max(1, n_train - n_val)
    bs = max(2, min(c.batch_size, n_fit))
    steps = max(1, n_fit // bs)
    fwd_img = fb_img / 3  # a forward pass is about a third of forward + backward
    bn = min(n_fit, 512) * fwd_img if c.precise_bn and stats["has_bn"] else 0.0
    per_epoch_eval = n_val if n_val else n_test
    epoch_s = CALIBRATION * (steps * (bs * fb_img + opt) + bn + per_epoch_eval * fwd_img)
    once_s = CALIBRATION * (n_test * fwd_img if n_val else 0.0)
    return Estimate(arch=spec.name, display=spec.display, seed=c.seed, img_size=c.img_size, epochs=c.epochs,
                    batch_size=c.batch_size, device=dev, seconds=epoch_s * c.epochs + once_s + 1.0,
                    epoch_seconds=epoch_s,
                    gflops=stats["gflops"], params=stats["params"], measured=speed is not None)


def split_sizes(source: DatasetSource) -> tuple[int, int]:
    counts = source.counts()
    return sum(counts.get("train", {}).values()), sum(counts.get("test", {}).values())


def long_run_warning(estimates: list[Estimate]) -> str | None:
    """One line when a launch will take long (jobs on one device run one after another), else None."""
    total = sum(e.seconds for e in estimates)
    if total <= LONG_RUN_S:
        return None
    worst = max(estimates, key=lambda e: e.seconds)
    on = "a CPU" if worst.device == "cpu" else worst.device
    return (f"Long run: about {format_duration(total)} in all on this device; {worst.display} at {worst.img_size} px "
            f"on {on} alone takes about {format_duration(worst.seconds)}. Consider a smaller image size, fewer "
            f"epochs or a GPU.")


# --------------------------------------------------------------------------------------------- calibration
def measure_estimate_error(configs: list[TrainConfig], source: DatasetSource, log=print) -> list[dict]:
    """Train each configuration for real (on ``source``, whose cache is warmed first) and compare the whole
    job's measured seconds with :func:`estimate_job` made just before: one row per configuration with
    ``estimate_s``, ``measured_s`` and ``ratio`` (measured / estimate; 1.0 is a perfect estimate)."""
    from .data.dataset import load_split
    from .train import train

    n_train, n_test = split_sizes(source)
    rows = []
    for cfg in configs:
        c = cfg.resolved()
        for split in ("train", "test"):  # a job usually finds its images decoded already
            load_split(source, split, c.img_size)
        est = estimate_job(c, n_train, n_test, probe="sync")
        log(f"   {est.display} {c.img_size} px, {c.epochs} epoch(s): estimate {format_duration(est.seconds)} ...")
        t = time.perf_counter()
        train(c, source=source)
        measured = time.perf_counter() - t
        rows.append({"arch": est.arch, "display": est.display, "size": c.img_size, "epochs": c.epochs,
                     "batch": c.batch_size, "n_train": n_train, "n_test": n_test, "device": est.device,
                     "estimate_s": est.seconds, "measured_s": measured, "ratio": measured / est.seconds,
                     "probe_measured": est.measured})
    return rows
