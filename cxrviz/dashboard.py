"""Logic behind the dashboard's Overview and Train pages, independent of Streamlit: the quick demo, seed
lists, architecture statistics, run-time estimates, dataset samples and image-size summaries."""
from __future__ import annotations

import math
import re
import statistics
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .data import synthetic
from .data.cache import default_cache
from .data.dataset import DatasetSource
from .data.decode import ImageDecodeError
from .models import FAMILIES, REGISTRY, get_spec
from .train import TrainConfig, _loss, make_optimizer, select_device

# --------------------------------------------------------------------------------------------- quick demo
# One click on a fresh machine: a small model on the built-in synthetic set that reaches a visible result
# (> 90 % test accuracy) in well under a minute on 2 CPU cores; benchmarks/quick_demo.py measures it.
QUICK_DEMO = {"arch": "lenet5", "img_size": 64, "epochs": 20, "lr": 4e-3, "augment": "light"}


def quick_demo_config(data: str | None = None, seed: int = 0) -> TrainConfig:
    """The quick demo's configuration on ``data`` (None = the built-in synthetic set)."""
    return TrainConfig(data=data or None, seed=seed, **QUICK_DEMO)


# --------------------------------------------------------------------------------------------- seeds
MAX_SEEDS = 32


def parse_seeds(text: str | int | None) -> list[int]:
    """"0", "0, 1, 2", "0 1 2" or ranges like "0-4" -> sorted unique seeds. Raises ValueError (one line)."""
    if text is None or str(text).strip() == "":
        raise ValueError("enter at least one seed, e.g. 0 or 0, 1, 2 or 0-4")
    seeds: set[int] = set()
    for part in re.split(r"[,\s;]+", str(text).strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part) or re.fullmatch(r"(\d+)", part)
        if not m:
            raise ValueError(f"seeds: {part!r} is not a whole number or a range like 0-4")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.lastindex == 2 else lo
        if hi < lo:
            raise ValueError(f"seeds: range {part!r} runs backwards")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise ValueError(f"seeds: at most {MAX_SEEDS} seeds per launch")
        if hi >= 2**31:
            raise ValueError(f"seeds: {hi} is too large")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise ValueError("enter at least one seed, e.g. 0 or 0, 1, 2 or 0-4")
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"seeds: at most {MAX_SEEDS} seeds per launch")
    return sorted(seeds)


# --------------------------------------------------------------------------------------------- architectures
@lru_cache(maxsize=512)
def arch_stats(name: str, img_size: int, in_channels: int = 1, num_classes: int = 3) -> dict:
    """Parameters and forward GFLOPs (G multiply-adds, as in ``cxrviz.models.measure_gflops``) of one
    architecture at one image size. Built on the meta device: no weights are allocated or initialised,
    so the whole zoo takes a second instead of a minute."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(name)
    size = max(int(img_size), spec.min_size)
    with torch.device("meta"):
        model = spec.build(num_classes=num_classes, in_channels=in_channels).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, size, size))
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return {"params": sum(p.numel() for p in model.parameters()), "gflops": counter.get_total_flops() / 2e9,
            "has_bn": has_bn}


def arch_catalogue(img_size: int) -> list[dict]:
    """Every registered architecture, grouped by family (registry order), with its stats at ``img_size``."""
    rows = []
    for fam in FAMILIES:
        for spec in REGISTRY.values():
            if spec.family != fam:
                continue
            st = arch_stats(spec.name, max(img_size, spec.min_size))
            r = spec.recipe
            rows.append({"name": spec.name, "display": spec.display, "family": fam, "depth": spec.depth,
                         "params": st["params"], "gflops": st["gflops"], "min_size": spec.min_size,
                         "optimizer": r.optimizer, "lr": r.lr, "batch_size": r.batch_size,
                         "img_size": r.img_size, "epochs": r.epochs, "seed_model": spec.seed_model})
    return rows


def format_params(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.0f} k"


def format_gflops(g: float) -> str:
    """Three significant digits: 19.6, 0.566, 0.00261."""
    return f"{g:.3g}" if g < 100 else f"{g:.0f}"


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


# --------------------------------------------------------------------------------------------- estimates
LONG_RUN_S = 600.0  # warn above this (all jobs of a launch together)
PROBE_MAX_SIZE = 64
PROBE_BATCH = 4


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


def _probe_key(arch: str, optimizer: str, device: str, in_channels: int, img_size: int) -> tuple:
    spec = get_spec(arch)
    size = max(spec.min_size, min(int(img_size), PROBE_MAX_SIZE))
    return (spec.name, optimizer, str(select_device(device)), in_channels, size, torch.get_num_threads())


def probe_speed(arch: str, optimizer: str, device: str = "auto", in_channels: int = 1,
                img_size: int = PROBE_MAX_SIZE, generation: int | None = None) -> Speed:
    """Time real training steps of ``arch`` on this device at a small size (cached per process).

    The first steps of a model in a process are several times slower (kernel selection, allocator and
    optimiser state warm-up), so a few untimed steps come first; the fastest timed step is kept (on a
    shared machine the slower ones measure other programs). Raises ProbeCancelled after cancel_probes()."""
    key = _probe_key(arch, optimizer, device, in_channels, img_size)
    with _SPEED_LOCK:
        if key in _SPEEDS:
            return _SPEEDS[key]
        if generation is None:
            generation = _GENERATION[0]
    with _PROBE_LOCK:
        with _SPEED_LOCK:
            if key in _SPEEDS:
                return _SPEEDS[key]
        name, _, dev_name, _, size, _ = key
        if _GENERATION[0] != generation:
            raise ProbeCancelled(f"timing {name} was cancelled")
        dev = torch.device(dev_name)
        cfg = TrainConfig(arch=name, optimizer=optimizer).resolved()
        torch.manual_seed(0)
        model = get_spec(name).build(num_classes=3, in_channels=in_channels).to(dev).train()
        opt = make_optimizer(model, cfg)
        x = torch.randn(PROBE_BATCH, in_channels, size, size, device=dev)
        y = torch.arange(PROBE_BATCH, device=dev) % 3
        fb: list[float] = []
        st: list[float] = []
        t_begin = time.perf_counter()
        for i in range(7):
            if _GENERATION[0] != generation:
                raise ProbeCancelled(f"timing {name} was cancelled")
            t0 = time.perf_counter()
            loss, _ = _loss(model(x), y, cfg)
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
        speed = Speed(name, dev_name, size, PROBE_BATCH, min(fb[warm:]), min(st[warm:]), time.time())
        del model, opt, x
        with _SPEED_LOCK:
            _SPEEDS[key] = speed
        return speed


def request_probe(arch: str, optimizer: str, device: str = "auto", in_channels: int = 1,
                  img_size: int = PROBE_MAX_SIZE) -> Speed | None:
    """The cached probe, or None after starting it in a background thread (so a page never blocks)."""
    key = _probe_key(arch, optimizer, device, in_channels, img_size)
    with _SPEED_LOCK:
        if key in _SPEEDS:
            return _SPEEDS[key]
        t = _PENDING.get(key)
        if t is None or not t.is_alive():
            generation = _GENERATION[0]  # a cancel from now on applies to this request

            def run() -> None:
                try:
                    probe_speed(arch, optimizer, device, in_channels, img_size, generation)
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


def cached_speed(arch: str, device: str = "auto") -> Speed | None:
    """A probe already measured for this architecture on this device (any optimiser or size), if any."""
    dev = str(select_device(device))
    name = get_spec(arch).name
    with _SPEED_LOCK:
        found = [s for s in _SPEEDS.values() if s.arch == name and s.device == dev]
    return found[-1] if found else None


MIN_PROBE_GFLOPS = 0.05  # probes of smaller models say little about the speed of others


def _fallback_rates(device: str) -> tuple[float, float]:
    """(seconds per forward-backward GFLOP per image, seconds per parameter per optimiser step) from any
    probe measured on this device, or a conservative guess for an unprobed device."""
    with _SPEED_LOCK:
        speeds = [s for s in _SPEEDS.values() if s.device == device]
    # a tiny model's step is mostly fixed overhead: its time per GFLOP would make big models look far slower
    # (LeNet-5's probe once turned ResNet-18's estimate into an hour for a run of a few minutes)
    speeds = [s for s in speeds if arch_stats(s.arch, s.size)["gflops"] >= MIN_PROBE_GFLOPS]
    if speeds:
        per_gflop = statistics.median(s.fwd_bwd_s / (s.batch * arch_stats(s.arch, s.size)["gflops"]) for s in speeds)
        per_param = statistics.median(s.opt_s / arch_stats(s.arch, s.size)["params"] for s in speeds)
        return per_gflop, per_param
    if device.startswith("cuda"):
        return 2e-3, 2e-10
    # 2 CPU cores, from probes at 64 px: ResNet-18 0.06, VGG-19 0.055, GoogLeNet 0.11, AlexNet 0.31 s per
    # forward GFLOP per image for forward + backward; optimiser steps 1.6e-9 to 3.5e-9 s per parameter
    return 0.12, 3e-9


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
    stats = arch_stats(c.arch, c.img_size, c.in_channels)
    if probe == "sync":
        speed = probe_speed(c.arch, c.optimizer, c.device, c.in_channels, c.img_size)
    elif probe == "background":
        speed = request_probe(c.arch, c.optimizer, c.device, c.in_channels, c.img_size)
    elif probe == "off":
        speed = None
    else:
        raise ValueError(f"probe must be 'sync', 'background' or 'off', not {probe!r}")
    speed = speed or cached_speed(c.arch, c.device)
    if speed is not None:
        pg = arch_stats(speed.arch, speed.size, c.in_channels)["gflops"]
        fb_img = speed.fwd_bwd_s / speed.batch * (stats["gflops"] / pg)
        opt = speed.opt_s
    else:
        per_gflop, per_param = _fallback_rates(dev)
        fb_img = per_gflop * stats["gflops"]
        opt = per_param * stats["params"]
    bs = max(2, min(c.batch_size, n_train))
    steps = max(1, n_train // bs)
    fwd_img = fb_img / 3  # a forward pass is about a third of forward + backward
    bn = min(n_train, 512) * fwd_img if c.precise_bn and stats["has_bn"] else 0.0
    epoch_s = steps * (bs * fb_img + opt) + bn + n_test * fwd_img
    return Estimate(arch=spec.name, display=spec.display, seed=c.seed, img_size=c.img_size, epochs=c.epochs,
                    batch_size=c.batch_size, device=dev, seconds=epoch_s * c.epochs + 1.0, epoch_seconds=epoch_s,
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


# --------------------------------------------------------------------------------------------- dataset views
def sample_images(source: DatasetSource, per_class: int = 6,
                  size: int = 160) -> dict[str, list[tuple[np.ndarray, str]]]:
    """A few training images per class as uint8 HxW arrays with a caption (evenly spread over the class)."""
    out: dict[str, list[tuple[np.ndarray, str]]] = {c: [] for c in source.classes}
    if source.synthetic:
        imgs, labels = synthetic.make_split("train", size, n_per_class=per_class)
        for i, (img, y) in enumerate(zip(imgs, labels.tolist())):
            out[source.classes[y]].append((img, f"synthetic #{len(out[source.classes[y]]) + 1}"))
        return out
    cache = default_cache()
    for y, cls in enumerate(source.classes):
        files = [p for p, lab in source.files.get("train", []) if lab == y]
        if not files:
            continue
        picks = sorted({round(i * (len(files) - 1) / max(1, per_class - 1)) for i in range(per_class)})
        for i in picks:
            p = files[i]
            try:
                out[cls].append((cache.get(p, size), p.name))
            except (ImageDecodeError, OSError):
                continue  # unreadable files are reported by the trainer; the grid just skips them
    return out


def size_summary(rows: list[dict]) -> list[dict]:
    """Per split and class: number of files, width/height (min, median, max) and pixel modes."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["split"], r["class"]), []).append(r)
    out = []
    for (split, cls), rs in sorted(groups.items()):
        w = [r["width"] for r in rs]
        h = [r["height"] for r in rs]
        out.append({"split": split, "class": cls, "files": len(rs),
                    "width min": min(w), "width median": int(statistics.median(w)), "width max": max(w),
                    "height min": min(h), "height median": int(statistics.median(h)), "height max": max(h),
                    "modes": ", ".join(sorted({r["mode"] for r in rs}))})
    return out
