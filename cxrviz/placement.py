"""Where a training job runs: the machine's devices, each job's expected work, least-loaded placement, and how
many jobs one device runs at a time.

:class:`cxrviz.jobs.JobRegistry` uses these; they take device *names*, so placement is tested on a CPU-only
machine with an injected device list (``devices=["cuda:0", "cuda:1"]``).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from .models import get_spec
from .train import ConfigError, TrainConfig

MAX_JOBS_PER_DEVICE = 8  # the automatic setting never goes beyond this
MEMORY_HEADROOM = 0.8  # the automatic setting plans with this share of the free memory
PROBE_MARGIN_BYTES = 256 << 20  # per job, beyond its probe step: cached data set, evaluation batches, allocator slack


def detect_devices() -> list[str]:
    """Every CUDA device (``cuda:0`` ... ``cuda:N-1``), else ``mps``, else ``cpu``: the pool ``auto`` draws from."""
    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return ["mps"]
    return ["cpu"]


def normalise_device(name: str) -> str:
    """``cuda`` means ``cuda:0`` (what torch does); names are lower case."""
    name = (name or "auto").strip().lower()
    return "cuda:0" if name == "cuda" else name


@lru_cache(maxsize=512)
def forward_gflops(arch: str, img_size: int, in_channels: int = 1) -> float:
    """Forward G multiply-adds per image, counted on the meta device (no weights allocated: milliseconds)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = get_spec(arch).build(num_classes=3, in_channels=in_channels).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, img_size, img_size))
    return counter.get_total_flops() / 2e9


def job_work(c: TrainConfig) -> float:
    """A resolved job's expected work, in G multiply-adds per training image: epochs x forward GFLOPs at its
    image size. The image count is left out on purpose: the jobs of one queue nearly always train on the same
    data set, and counting it would mean listing every folder at submit time."""
    return c.epochs * forward_gflops(c.arch, c.img_size, c.in_channels)


def least_loaded(pool: list[str], load: dict[str, float]) -> str:
    """The device of ``pool`` with the least queued work (ties: the first in the pool)."""
    if not pool:
        raise ConfigError("no device to place the job on")
    return min(pool, key=lambda d: (load.get(d, 0.0), pool.index(d)))


def probe_footprint(c: TrainConfig, device: str) -> int:
    """Peak CUDA memory (bytes) of one training step of ``c`` on ``device`` (bf16 autocast as the trainer),
    plus a margin for the cached data set and evaluation: what one more job on that device needs."""
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    model = get_spec(c.arch).build(num_classes=3, in_channels=c.in_channels).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # the largest state of the optimisers offered
    x = torch.zeros(c.batch_size, c.in_channels, c.img_size, c.img_size, device=dev)
    y = torch.zeros(c.batch_size, dtype=torch.long, device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out, y)
    loss.backward()
    opt.step()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev) - base
    del model, opt, x, y, out, loss
    torch.cuda.empty_cache()
    return int(peak) + PROBE_MARGIN_BYTES


def auto_jobs_per_device(device: str, c: TrainConfig) -> int:
    """How many jobs like ``c`` fit on ``device`` at once: 80 % of its free memory over one job's measured
    footprint, at most 8. 1 on the CPU and MPS (they gain nothing from it: their cores are already busy)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return 1
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    need = probe_footprint(c, device)
    return max(1, min(MAX_JOBS_PER_DEVICE, int(MEMORY_HEADROOM * free // need)))


def parse_jobs_per_device(value: str | int) -> int | str:
    """``auto`` or a positive integer (from the CLI or the page); anything else is a ConfigError."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"jobs per device must be a positive integer or 'auto', not {value!r}") from None
    if not 1 <= n <= 64:
        raise ConfigError(f"jobs per device must be between 1 and 64, not {n}")
    return n
