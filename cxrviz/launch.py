"""What a launch of training jobs is made of besides the settings: the seed list a user types, and the
quick demo's configuration."""
from __future__ import annotations

import re

from .train import ConfigError, TrainConfig

# One click on a fresh machine: a small model on the built-in synthetic set that reaches a visible result
# (> 90 % test accuracy) in well under a minute on 2 CPU cores; benchmarks/quick_demo.py measures it.
QUICK_DEMO = {"arch": "lenet5", "img_size": 64, "epochs": 20, "lr": 4e-3, "augment": "light"}
MAX_SEEDS = 32


def quick_demo_config(data: str | None = None, seed: int = 0) -> TrainConfig:
    """The quick demo's configuration on ``data`` (None = the built-in synthetic set)."""
    return TrainConfig(data=data or None, seed=seed, **QUICK_DEMO)


def parse_seeds(text: str | int | None) -> list[int]:
    """"0", "0, 1, 2", "0 1 2" or ranges like "0-4" -> sorted unique seeds. Raises ConfigError (one line)."""
    if text is None or str(text).strip() == "":
        raise ConfigError("enter at least one seed, e.g. 0 or 0, 1, 2 or 0-4")
    seeds: set[int] = set()
    for part in re.split(r"[,\s;]+", str(text).strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part) or re.fullmatch(r"(\d+)", part)
        if not m:
            raise ConfigError(f"seeds: {part!r} is not a whole number or a range like 0-4")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.lastindex == 2 else lo
        if hi < lo:
            raise ConfigError(f"seeds: range {part!r} runs backwards")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise ConfigError(f"seeds: at most {MAX_SEEDS} seeds per launch")
        if hi >= 2**31:
            raise ConfigError(f"seeds: {hi} is too large")
        seeds.update(range(lo, hi + 1))
    if not seeds:
        raise ConfigError("enter at least one seed, e.g. 0 or 0, 1, 2 or 0-4")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"seeds: at most {MAX_SEEDS} seeds per launch")
    return sorted(seeds)
