"""``python -m cxrviz bench --ray``: what Ray costs per run. The same small synthetic sweep (LeNet-5, 32 px) runs
through the job registry twice, on this machine's device and on a local Ray cluster, and every run is stored.

Per run, *overhead* = (slots x wall clock of the sweep - the trainers' own time) / runs, where the trainer's own
time is ``timings.total_s`` (measured inside the task) and slots is how many runs go at once (1 locally, one per
CPU on the cluster): the slot-seconds per run spent on anything but training (submitting, scheduling, worker
start, shipping progress and weights back, storing). Cluster start-up is reported apart.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from .jobs import CLUSTER, JobRegistry
from .runs import get_run
from .train import TrainConfig


def _sweep(reg: JobRegistry, configs: list[TrainConfig], slots: int) -> dict:
    t0 = time.time()
    ids = reg.submit(configs)
    if not reg.wait(3600):
        raise RuntimeError("sweep did not finish within an hour")
    wall = time.time() - t0
    train, stored = [], []
    for jid in ids:
        s = reg.get(jid)
        if s.status != "done":
            raise RuntimeError(f"{s.label}: {s.status} ({s.error})")
        train.append(get_run(s.run_id, root=reg.root).meta["timings"]["total_s"])
        stored.append(s.finished - s.created)
    return {"runs": len(ids), "slots": slots, "wall_s": wall, "trainer_median_s": statistics.median(train),
            "overhead_per_run_s": (slots * wall - sum(train)) / len(ids),
            "submit_to_stored_median_s": statistics.median(stored)}


def bench_ray(runs: int = 6, epochs: int = 2, size: int = 32, cpus: int = 2) -> dict:
    """6 LeNet-5 runs on the synthetic set, locally (one after another on the CPU) and on a local Ray cluster of
    ``cpus`` CPUs (one CPU per run, so ``cpus`` at a time); cluster start-up is reported apart."""
    from . import cluster

    configs = [TrainConfig(arch="lenet5", img_size=size, epochs=epochs, batch_size=32, seed=s, device="cpu")
               for s in range(runs)]
    with tempfile.TemporaryDirectory() as d:
        local = _sweep(JobRegistry(root=Path(d) / "local"), configs, 1)
        t = time.time()
        trainer = cluster.RayTrainer(None, cpus_per_run=1, local_cpus=cpus)
        trainer._ensure()
        start = time.time() - t
        try:
            ray = _sweep(JobRegistry(root=Path(d) / "ray", cluster=trainer),
                         [TrainConfig(**{**c.to_dict(), "device": CLUSTER}) for c in configs], cpus)
        finally:
            cluster.shutdown()
    return {"runs": runs, "arch": "lenet5", "size": size, "epochs": epochs, "ray_cpus": cpus,
            "local": local, "ray": ray, "ray_start_s": start, "machine_cpus": os.cpu_count()}


def format_ray(r: dict) -> str:
    lo, ra = r["local"], r["ray"]
    return "\n".join([
        f"Ray overhead: {r['runs']} runs, LeNet-5 {r['size']} px, {r['epochs']} epochs, synthetic set "
        f"({r['machine_cpus']} CPUs here; Ray cluster of {r['ray_cpus']} CPUs, 1 per run)",
        f"   {'':<24}{'wall clock':>11}{'trainer (median)':>18}{'overhead per run':>18}{'submit->stored (median)':>25}",
        *[f"   {name:<24}{x['wall_s']:>10.1f}s{x['trainer_median_s']:>17.2f}s{x['overhead_per_run_s']:>17.2f}s"
          f"{x['submit_to_stored_median_s']:>24.2f}s"
          for name, x in (("local, 1 at a time", lo), (f"Ray, {ra['slots']} at a time", ra))],
        f"   cluster start-up (ray.init + first worker): {r['ray_start_s']:.1f} s, not in the figures above",
        "   overhead per run = (runs at a time x wall clock - trainers' own time) / runs; submit->stored includes "
        "the wait for a free slot"])


def main(args) -> int:
    r = bench_ray()
    path = Path(args.out) if args.out else Path("bench-results") / f"bench-ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2))
    print(format_ray(r))
    print(f"JSON: {path}")
    return 0
