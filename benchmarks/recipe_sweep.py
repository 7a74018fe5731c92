"""Sweep training recipes for one or more architectures over several seeds, side by side in one run.

This is how the default recipes in cxrviz/models/registry.py were chosen. Each (arch, variant, seed) is
one real training run through cxrviz.train.train in its own process (a pool of --jobs at a time), on the
real data when --data is given. Holds out a validation split (--val-fraction, default 0.15, the trainer's
fixed stratified split) and prints the final VALIDATION accuracy per seed and the mean, which is what a
recipe is chosen on; the test accuracy (scored once per run, at the end) is printed after it for the
report only. Writes every result as JSON lines to --out.

    python benchmarks/recipe_sweep.py --data ../shared/data/Covid19-dataset --arch vgg19 --grid vgg \
        --img-size 128 --epochs 20 --seeds 0 1 2 --jobs 3 --device cuda

Before the validation split (runs with --val-fraction 0) the recipes were picked on the Kaggle set's test
folder, which made the winning figures optimistic; the README's older tables say so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRIDS: dict[str, dict[str, dict]] = {
    "vgg": {
        "recipe": {},
        "sgd.005": {"optimizer": "sgd", "lr": 0.005, "weight_decay": 5e-4},
        "sgd.02": {"optimizer": "sgd", "lr": 0.02, "weight_decay": 5e-4},
        "sgd.01-noaug": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "augment": "none"},
        "sgd.01-ls0": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "label_smoothing": 0.0},
        "sgd.01-w3": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "warmup_epochs": 3},
        "sgd.01-b16": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "batch_size": 16},
        "sgd.01-ema": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "ema": 0.99},
        "sgd.01-std": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "augment": "standard"},
        "adamw1e-3-noaug": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "augment": "none"},
        "adamw3e-4": {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.05},
        "adamw3e-4-noaug": {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 0.05, "augment": "none"},
        "adamw1e-4": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05},
        "adam1e-4-ls0": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "label_smoothing": 0.0},
    },
    "alexnet": {
        "recipe": {},
        "adam2e-4": {"lr": 2e-4},
        "adam5e-5": {"lr": 5e-5},
        "adam1e-4-noaug": {"augment": "none"},
        "adam1e-4-ema": {"ema": 0.99},
        "adam1e-4-ls.1": {"label_smoothing": 0.1},
        "adamw1e-4": {"optimizer": "adamw", "lr": 1e-4, "weight_decay": 0.05},
        "adam1e-4-b16": {"batch_size": 16},
        "sgd.005": {"optimizer": "sgd", "lr": 0.005, "weight_decay": 5e-4, "momentum": 0.9},
    },
    "cpu": {"recipe": {}, "standard-aug": {"augment": "standard"}, "clahe": {"clahe": True},
            "strong-aug": {"augment": "strong"}, "standardize": {"standardize": True}},  # small CPU check
    "tiny": {"recipe": {}, "lr5e-4": {"lr": 5e-4}},  # for the CPU test of this script
}


def run_one(arch: str, variant: str, overrides: dict, seed: int, args) -> dict:
    """Train one configuration in-process and return its result row."""
    import torch

    from cxrviz.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(arch=arch, data=args.data, img_size=args.img_size, epochs=args.epochs, seed=seed,
                      device=args.device, val_fraction=args.val_fraction, **overrides)
    t0 = time.perf_counter()
    res = train(cfg)
    held = "val_acc" if args.val_fraction > 0 else "test_acc"
    accs = [h[held] for h in res.history]  # per-epoch, on validation (test only with --val-fraction 0)
    return {"arch": arch, "variant": variant, "overrides": overrides, "seed": seed, "device": args.device,
            "img_size": args.img_size, "epochs": args.epochs, "acc": res.evaluation["accuracy"],
            "val_acc": accs[-1] if held == "val_acc" else None, "val_fraction": args.val_fraction,
            "best_acc": max(accs), "best_epoch": 1 + accs.index(max(accs)), "accs": accs,
            "wall_s": time.perf_counter() - t0, "train_s": res.timings.get("train_s"),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset folder (default: the built-in synthetic set)")
    ap.add_argument("--arch", nargs="+", default=["vgg19"])
    ap.add_argument("--grid", default="vgg", choices=sorted(GRIDS))
    ap.add_argument("--variants", nargs="*", default=None, help="only these variants of the grid")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--val-fraction", type=float, default=0.15,
                    help="held out of train to choose on (0: per-epoch test, the old, optimistic protocol)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    ap.add_argument("--out", default=None, help="write one JSON line per run here")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds: runs not started by then are skipped (running ones finish)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one job, print JSON
    args = ap.parse_args()

    if args.one:
        arch, variant, seed, overrides = json.loads(args.one)
        print("RESULT " + json.dumps(run_one(arch, variant, overrides, seed, args)), flush=True)
        return

    grid = GRIDS[args.grid]
    variants = args.variants or list(grid)
    jobs = [(a, v, s, grid[v]) for a in args.arch for v in variants for s in args.seeds]
    base = [sys.executable, __file__, "--img-size", str(args.img_size), "--epochs", str(args.epochs),
            "--device", args.device, "--val-fraction", str(args.val_fraction)] \
        + (["--data", args.data] if args.data else []) \
        + (["--threads", str(args.threads)] if args.threads else [])
    print(f"{len(jobs)} runs, {args.jobs} at a time: {args.arch} x {variants} x seeds {args.seeds}, "
          f"{args.img_size} px, {args.epochs} epochs, device {args.device}", flush=True)
    t0 = time.perf_counter()
    rows: list[dict] = []
    out = open(args.out, "a") if args.out else None

    def launch(job):
        if args.budget and time.perf_counter() - t0 > args.budget:
            return {"arch": job[0], "variant": job[1], "seed": job[2], "error": "skipped: --budget spent"}
        p = subprocess.run(base + ["--one", json.dumps(job)], capture_output=True, text=True, cwd=ROOT)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not line:
            return {"arch": job[0], "variant": job[1], "seed": job[2], "error": (p.stderr or p.stdout)[-800:]}
        return json.loads(line[0][7:])

    with ThreadPoolExecutor(args.jobs) as ex:
        for r in ex.map(launch, jobs):
            rows.append(r)
            if out:
                out.write(json.dumps(r) + "\n")
                out.flush()
            if "error" in r:
                print(f"  {r['arch']:10s} {r['variant']:18s} seed {r['seed']}: FAILED {r['error']}", flush=True)
            else:
                va = f"val {100 * r['val_acc']:5.1f} %, " if r.get("val_acc") is not None else ""
                print(f"  {r['arch']:10s} {r['variant']:18s} seed {r['seed']}: {va}test {100 * r['acc']:5.1f} % "
                      f"(best held-out {100 * r['best_acc']:.1f} % at epoch {r['best_epoch']}) {r['wall_s']:.1f} s",
                      flush=True)
    if out:
        out.close()

    took = time.perf_counter() - t0
    tables = [("val_acc", "final validation accuracy (choose on this)"),
              ("acc", "final test accuracy (scored once per run; report it, do not choose on it)")]
    for key, title in tables if args.val_fraction > 0 else tables[1:]:
        print(f"\n{title}, {args.img_size} px, {args.epochs} epochs (sweep took {took:.0f} s):")
        print(f"{'arch':10s} {'variant':18s} " + " ".join(f"{'s' + str(s):>6s}" for s in args.seeds) + "    mean")
        for a in args.arch:
            for v in variants:
                accs = [next((r.get(key) for r in rows if (r["arch"], r["variant"], r["seed"]) == (a, v, s)), None)
                        for s in args.seeds]
                ok = [x for x in accs if x is not None]
                cells = " ".join(f"{100 * x:6.1f}" if x is not None else "  fail" for x in accs)
                mean = f"{100 * sum(ok) / len(ok):7.1f}" if ok else "      -"
                print(f"{a:10s} {v:18s} {cells} {mean}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
