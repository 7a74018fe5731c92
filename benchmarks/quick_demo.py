"""Time the Train page's "Quick demo" the way the app runs it: through a JobRegistry (worker thread,
real training on the built-in synthetic set, real run saved to a temporary folder).

    python benchmarks/quick_demo.py                 # seeds 0 1 2, torch's default thread count
    python benchmarks/quick_demo.py --threads 2     # as on a 2-core machine

Prints, per seed, the time from the click (submit) to the first chart point and to the finished run, and
the final test accuracy. The target: a visible result (> 80 % test accuracy) in under a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CXRVIZ_CACHE", str(Path(tmp) / "cache"))
        import torch

        from cxrviz.jobs import JobRegistry
        from cxrviz.launch import QUICK_DEMO, quick_demo_config

        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"quick demo {QUICK_DEMO}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
              f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
        reg = JobRegistry(root=Path(tmp) / "runs")
        for seed in args.seeds:
            t0 = time.time()
            jid, = reg.submit([quick_demo_config(None, seed=seed)])
            first = None
            while reg.busy():
                s = reg.get(jid)
                if first is None and s.history:
                    first = s.history[0]["wall"] - t0
                time.sleep(0.02)
            s = reg.get(jid)
            acc = s.history[-1].get("val_acc", s.history[-1].get("test_acc")) if s.history else float("nan")
            print(f"seed {seed}: {s.status}; first epoch point after {first:.1f} s, finished after "
                  f"{s.finished - t0:.1f} s; last epoch held-out (validation) accuracy {100 * acc:.1f} % "
                  f"after {len(s.history)} epochs"
                  + (f"; error: {s.error}" if s.error else ""))


if __name__ == "__main__":
    main()
