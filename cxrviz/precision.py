"""Numeric precision of training and evaluation: fp32, or bf16 autocast with channels-last memory.

On a GPU cxrviz has always trained in bf16 autocast with channels-last tensors. On a CPU bf16 pays only
where the hardware has bf16 instructions (AVX512-BF16 or AMX): elsewhere PyTorch emulates it and it is
slower than fp32. So the setting ``precision`` is ``"auto"`` (the default), ``"bf16"`` or ``"fp32"``:

* ``auto`` on a GPU is bf16; on a CPU it is bf16 only if the CPU reports ``avx512_bf16`` or ``amx_bf16``
  AND a short probe (a few training steps of the same architecture at the same size, fp32 vs bf16) finds
  bf16 faster. The probe runs once per (architecture, size, channels) per process;
* ``bf16`` / ``fp32`` force it (bf16 on a CPU without bf16 instructions works, slowly).

:func:`bench_precision` measures images/s of fp32, fp32 + channels-last, bf16 and bf16 + channels-last
side by side (``python -m cxrviz bench --precision``).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp32")
_PROBE_CACHE: dict[tuple, tuple[bool, float]] = {}


@dataclass(frozen=True)
class Precision:
    """What a run uses: ``bf16`` autocast or not, channels-last memory or not, and why (recorded)."""
    name: str  # "bf16" | "fp32"
    channels_last: bool
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def record(self) -> dict:
        return {"precision": self.name, "channels_last": self.channels_last, "precision_reason": self.reason}


FP32 = Precision("fp32", False, "fp32")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), from /proc/cpuinfo's flags."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def autocast(device: torch.device, bf16: bool):
    """The autocast context for one forward pass (a no-op context when ``bf16`` is False)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def _time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, channels_last: bool,
                steps: int, warmup: int = 1) -> float:
    """Seconds per training step (forward, cross-entropy, backward, SGD step) after ``warmup`` steps."""
    device = x.device
    model = model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = to_memory_format(x, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    model.train()
    t = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
        with autocast(device, bf16):
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def probe_bf16(arch: str, img_size: int, in_channels: int = 1, num_classes: int = 3, batch_size: int = 8,
               steps: int = 2) -> tuple[bool, float]:
    """(bf16 is faster, speed-up of bf16 + channels-last over fp32) from a few training steps of ``arch`` on
    random input; cached per (arch, size, channels) for the process. Leaves every random generator as it was."""
    key = (arch, img_size, in_channels)
    if key not in _PROBE_CACHE:
        from .models import get_spec

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = get_spec(arch).build(num_classes=num_classes, in_channels=in_channels)
            x = torch.randn(batch_size, in_channels, img_size, img_size)
            y = torch.randint(0, num_classes, (batch_size,))
            t32 = _time_steps(model, x, y, bf16=False, channels_last=False, steps=steps)
            t16 = _time_steps(model, x, y, bf16=True, channels_last=True, steps=steps)
        ratio = t32 / t16 if t16 > 0 else 0.0
        _PROBE_CACHE[key] = (ratio > 1.05, ratio)
    return _PROBE_CACHE[key]


def choose(setting: str, device: torch.device, arch: str, img_size: int, in_channels: int = 1) -> Precision:
    """The precision a run uses for ``setting`` ("auto" | "bf16" | "fp32") on ``device``."""
    if setting == "fp32":
        return Precision("fp32", False, "fp32 requested")
    if setting == "bf16":
        return Precision("bf16", True, "bf16 requested")
    if device.type == "cuda":
        return Precision("bf16", True, "auto: GPU")
    if device.type != "cpu":
        return Precision("fp32", False, f"auto: fp32 on {device.type}")
    if not cpu_has_bf16():
        return Precision("fp32", False, "auto: the CPU has no bf16 instructions (avx512_bf16/amx_bf16)")
    faster, ratio = probe_bf16(arch, img_size, in_channels)
    if faster:
        return Precision("bf16", True, f"auto: bf16 {ratio:.2f}x faster than fp32 in a probe")
    return Precision("fp32", False, f"auto: bf16 not faster than fp32 in a probe ({ratio:.2f}x)")


def bench_precision(archs=("vgg19", "resnet18"), img_size: int = 128, batch_size: int = 32, steps: int = 3,
                    in_channels: int = 1, log=lambda s: None) -> dict:
    """Images/s of training steps in fp32, fp32 + channels-last, bf16 autocast and bf16 + channels-last,
    measured side by side per architecture on the CPU: the variants take turns one step at a time (after one
    warm-up step each), so a machine shared with other work slows them alike; the median step counts."""
    from .models import get_spec

    out = {"img_size": img_size, "batch_size": batch_size, "steps": steps, "cpu_bf16": cpu_has_bf16(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           "models": {}}
    variants = (("fp32", False, False), ("fp32_cl", False, True), ("bf16", True, False), ("bf16_cl", True, True))
    for arch in archs:
        torch.manual_seed(0)
        model = get_spec(arch).build(num_classes=3, in_channels=in_channels)
        x = torch.randn(batch_size, in_channels, img_size, img_size)
        y = torch.randint(0, 3, (batch_size,))
        times: dict[str, list[float]] = {v[0]: [] for v in variants}
        for r in range(steps + 1):
            for name, bf16, cl in variants:
                t = _time_steps(model, x, y, bf16=bf16, channels_last=cl, steps=1, warmup=0)
                if r > 0:  # round 0 is the warm-up
                    times[name].append(t)
            log(f"  {arch} round {r}: " + ", ".join(f"{k} {batch_size / v[-1]:.1f} img/s" for k, v in times.items()
                                                   if v))
        row = {name: batch_size / statistics.median(ts) for name, ts in times.items()}
        row["best"] = max(row, key=row.get)
        row["speedup_bf16_cl"] = row["bf16_cl"] / row["fp32"]
        out["models"][arch] = row
    return out


def format_bench(r: dict) -> str:
    lines = [(f"precision: training steps, batch {r['batch_size']}, {r['img_size']} px, {r['threads']} threads, "
              f"CPU bf16 instructions: {'yes' if r['cpu_bf16'] else 'no'} ({r['cpu_capability']}); images/s:"),
             f"  {'model':<10}{'fp32':>8}{'fp32+CL':>9}{'bf16':>8}{'bf16+CL':>9}{'bf16+CL/fp32':>14}"]
    for arch, m in r["models"].items():
        lines.append(f"  {arch:<10}{m['fp32']:>8.1f}{m['fp32_cl']:>9.1f}{m['bf16']:>8.1f}{m['bf16_cl']:>9.1f}"
                     f"{m['speedup_bf16_cl']:>13.2f}x")
    return "\n".join(lines)
