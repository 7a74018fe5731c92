"""Sweep training recipes for one or more architectures over several seeds, side by side in one run.

This is how the default recipes in cxrviz/models/registry.py were chosen. Each (arch, variant, seed) is
one real training run through cxrviz.train.train in its own process (a pool of --jobs at a time), on the
real data when --data is given. Holds out a validation split (--val-fraction, default 0.15, the trainer's
fixed stratified split) and prints the final VALIDATION accuracy per seed and the mean, which is what a
recipe is chosen on; the test accuracy (scored once per run, at the end) is printed after it for the
report only. Writes every result as JSON lines to --out.

    python benchmarks/recipe_sweep.py --data ../shared/data/Covid19-dataset --arch vgg19 --grid vgg \
        --img-size 128 --epochs 20 --seeds 0 1 2 --jobs 3 --device cuda

Issue 11's protocol (the README's accuracy and generalisation tables): ``--add CLASS=PATH[:SPLIT]`` trains on a
mixed set, ``--save DIR`` stores every run, ``--external NAME=FOLDER`` scores each stored run on an external
folder (never used for the choice), and ``--summarize OUT.jsonl`` prints mean ± sd over seeds per (training
data, model, variant) with the variant validation chooses (highest mean validation accuracy; ties keep the
registry's recipe, listed first):

    python benchmarks/recipe_sweep.py --data KAGGLE --arch resnet18 alexnet --grid generalise --threads 1 \
        --out sweep.jsonl --save SWEEP_RUNS --external unseen=EXTERNAL_ALL --external other=EXTERNAL_OTHER
    python benchmarks/recipe_sweep.py --summarize sweep.jsonl

``--folds K`` chooses on k-fold cross-validation instead of one fixed split: fold f of K is held out (stratified
by class and source) and trained with seed f, so the K runs of a variant score every training image once on
validation. Use it where variants tie on the fixed split (AlexNet's did, on 37 images):

    python benchmarks/recipe_sweep.py --data KAGGLE --arch alexnet --grid generalise --folds 5 --threads 1 \
        --variants recipe strong-aug clahe --out cv.jsonl

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
from dataclasses import fields
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
    # issue 11's CPU sweep: the recipe against each shortcut-aimed option alone (stronger scale and crop
    # augmentation, CLAHE, per-image standardisation, the lung-field crop, and the crop with CLAHE and
    # standardisation together), chosen on validation, reported on test and external
    "generalise": {"recipe": {}, "strong-aug": {"augment": "strong"}, "clahe": {"clahe": True},
                   "standardize": {"standardize": True}, "lung-crop": {"lung_crop": True},
                   "crop-clahe-std": {"lung_crop": True, "clahe": True, "standardize": True},
                   # the three with augmentation on top (stop 23: the unseen-source goal's last tries)
                   "crop-clahe-std-aug": {"lung_crop": True, "clahe": True, "standardize": True,
                                          "augment": "standard"},
                   "crop-clahe-std-strong": {"lung_crop": True, "clahe": True, "standardize": True,
                                             "augment": "strong"}},
    "tiny": {"recipe": {}, "lr5e-4": {"lr": 5e-4}},  # for the CPU test of this script
}


def run_one(arch: str, variant: str, overrides: dict, seed: int, args) -> dict:
    """Train one configuration in-process and return its result row."""
    import torch

    from cxrviz.models.registry import Recipe
    from cxrviz.runs import PREPROCESSING_FLAGS
    from cxrviz.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(arch=arch, data=data_spec(args), img_size=args.img_size, epochs=args.epochs, seed=seed,
                      device=args.device, val_fraction=args.val_fraction, precision=args.precision, **overrides)
    t0 = time.perf_counter()
    res = train(cfg)
    held = "val_acc" if args.val_fraction > 0 else "test_acc"
    accs = [h[held] for h in res.history]  # per-epoch, on validation (test only with --val-fraction 0)
    extra: dict = {}
    if args.save or args.external:
        from cxrviz.runs import save_run

        run = save_run(res, args.save)  # None: the default run store (checkpoints/)
        extra["run_id"] = run.id
        extra["external"] = {name: external_summary(run, folder) for name, folder in args.external}
    # the recipe as it ran ("recipe" changes when the registry does): every Recipe field and preprocessing flag
    settings = {k: res.config.get(k) for k in [f.name for f in fields(Recipe)] + list(PREPROCESSING_FLAGS)}
    return {"arch": arch, "variant": variant, "overrides": overrides, "settings": settings, "seed": seed,
            "device": args.device,
            "img_size": args.img_size, "epochs": args.epochs, "precision": res.config.get("precision_used"),
            "acc": res.evaluation["accuracy"],
            "val_acc": accs[-1] if held == "val_acc" else None, "val_fraction": res.config["val_fraction"],
            "val_n": res.dataset.get("val_n"), "val_folds": overrides.get("val_folds", 0),
            "best_acc": max(accs), "best_epoch": 1 + accs.index(max(accs)), "accs": accs,
            "wall_s": time.perf_counter() - t0, "train_s": res.timings.get("train_s"),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "add": args.add, **extra}


def data_spec(args) -> str | None:
    """The dataset the runs train on: --data, plus any --add CLASS=PATH[:SPLIT] class folders."""
    from cxrviz.data import dataset_spec

    return dataset_spec([args.data] if args.data else [], args.add) if args.add else args.data


def external_summary(run, folder: str) -> dict:
    """Score a stored run on an external folder (the record is stored with the run) and keep the headline."""
    from cxrviz.external import score_run

    e = score_run(run, folder)["external"]
    return {"n": e["n"], "accuracy": e["accuracy"], "balanced_accuracy": e["balanced_accuracy"],
            "recall": e["recall"]}


def _named(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"--external needs NAME=FOLDER, not {text!r}")
    return name, folder


def mean_sd(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(xs) / len(xs)
    return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def pct(xs: list[float]) -> str:
    m, sd = mean_sd(xs)
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def summary(rows: list[dict]) -> str:
    """Markdown tables from sweep rows (this run's, or --summarize FILE's): per (data, arch, variant), mean ± sd
    over seeds of validation, test and each external folder, and the variant each architecture's
    validation accuracy chooses (the highest mean; on a tie the one listed first, the registry's recipe)."""
    ok = [r for r in rows if "error" not in r]
    out = []
    def key(r):  # one table per training data and validation protocol
        return json.dumps([r.get("add") or [], r.get("val_folds") or 0])

    for k in dict.fromkeys(key(r) for r in ok):
        part = [r for r in ok if key(r) == k]
        add, folds = json.loads(k)
        ext_names = list(dict.fromkeys(n for r in part for n in (r.get("external") or {})))
        title = "training data: --data" + "".join(f" --add {a}" for a in add) + (
            f"; validation: {folds}-fold cross-validation (fold f trains with seed f; mean ± sd over folds)"
            if folds else "; validation: one fixed split (mean ± sd over seeds)")
        out += ["", title, "",
                "| " + " | ".join(["model", "variant", "folds" if folds else "seeds", "validation acc", "test acc"]
                                  + [f"{n}: {c}" for n in ext_names for c in ("balanced acc", "recall per class")])
                + " |",
                "|---|---|---|---|---|" + "---|---|" * len(ext_names)]
        chosen = {}
        for arch in dict.fromkeys(r["arch"] for r in part):
            best = None
            for variant in dict.fromkeys(r["variant"] for r in part if r["arch"] == arch):
                rs = sorted((r for r in part if (r["arch"], r["variant"]) == (arch, variant)), key=lambda r: r["seed"])
                vals = [r["val_acc"] for r in rs if r.get("val_acc") is not None]
                cells = [arch, variant, "/".join(str(r["seed"]) for r in rs), pct(vals) if vals else "–",
                         pct([r["acc"] for r in rs])]
                for n in ext_names:
                    es = [r["external"][n] for r in rs if n in (r.get("external") or {})]
                    if not es:
                        cells += ["–", "–"]
                        continue
                    cells.append(pct([e["balanced_accuracy"] for e in es]))
                    cells.append(", ".join(f"{c} {pct([e['recall'][c] for e in es])}" for c in es[0]["recall"]))
                out.append("| " + " | ".join(cells) + " |")
                if vals and (best is None or mean_sd(vals)[0] > best[0] + 1e-12):
                    best = (mean_sd(vals)[0], variant)
            if best:
                chosen[arch] = best[1]
        if chosen:
            out += ["", "chosen on validation: " + ", ".join(f"{a}: {v}" for a, v in chosen.items())]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset folder (default: the built-in synthetic set)")
    ap.add_argument("--add", action="append", default=[], metavar="CLASS=PATH[:SPLIT]",
                    help="add one class folder from another source to --data (repeatable)")
    ap.add_argument("--external", action="append", default=[], type=_named, metavar="NAME=FOLDER",
                    help="score every run on this external folder (repeatable; implies storing the runs)")
    ap.add_argument("--save", default=None, help="store every run in this run folder (default with --external: "
                                                 "the default run store)")
    ap.add_argument("--summarize", default=None, metavar="JSONL",
                    help="print the summary tables of an --out file (several sweeps' rows) and exit")
    ap.add_argument("--arch", nargs="+", default=["vgg19"])
    ap.add_argument("--grid", default="vgg", choices=sorted(GRIDS))
    ap.add_argument("--variants", nargs="*", default=None, help="only these variants of the grid")
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                    help="training precision (auto: bf16 where the CPU has bf16 instructions and it probes faster)")
    ap.add_argument("--val-fraction", type=float, default=0.15,
                    help="held out of train to choose on (0: per-epoch test, the old, optimistic protocol)")
    ap.add_argument("--folds", type=int, default=0,
                    help="k-fold cross-validation: fold f of K held out, trained with seed f (replaces --seeds)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process")
    ap.add_argument("--out", default=None, help="write one JSON line per run here")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds: runs not started by then are skipped (running ones finish)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one job, print JSON
    args = ap.parse_args()

    if args.summarize:
        print(summary([json.loads(ln) for ln in Path(args.summarize).read_text().splitlines() if ln.strip()]))
        return
    if args.one:
        arch, variant, seed, overrides = json.loads(args.one)
        print("RESULT " + json.dumps(run_one(arch, variant, overrides, seed, args)), flush=True)
        return

    grid = GRIDS[args.grid]
    variants = args.variants or list(grid)
    unknown = [v for v in variants if v not in grid]
    if unknown:
        ap.error(f"variants {unknown} are not in the {args.grid!r} grid ({', '.join(grid)})")
    if args.folds > 0:
        args.seeds = list(range(args.folds))  # fold f trains with seed f
    jobs = [(a, v, s, {**grid[v], **({"val_folds": args.folds, "val_fold": s} if args.folds else {})})
            for a in args.arch for v in variants for s in args.seeds]
    from cxrviz.errors import CxrvizError
    from cxrviz.train import TrainConfig

    for a, v, s, overrides in jobs:  # the trainer's own checks, before any process starts (--folds 1, a bad size)
        try:
            TrainConfig(arch=a, img_size=args.img_size, epochs=args.epochs, seed=s, device=args.device,
                        val_fraction=args.val_fraction, precision=args.precision, **overrides).resolved()
        except CxrvizError as e:
            ap.error(f"{a} {v}: {e}")
    base = [sys.executable, __file__, "--img-size", str(args.img_size), "--epochs", str(args.epochs),
            "--device", args.device, "--val-fraction", str(args.val_fraction), "--precision", args.precision] \
        + (["--data", args.data] if args.data else []) \
        + (["--threads", str(args.threads)] if args.threads else []) \
        + [x for a in args.add for x in ("--add", a)] \
        + [x for n, f in args.external for x in ("--external", f"{n}={f}")] \
        + (["--save", args.save] if args.save else [])
    print(f"{len(jobs)} runs, {args.jobs} at a time: {args.arch} x {variants} x "
          f"{f'{args.folds} folds (fold f with seed f)' if args.folds else f'seeds {args.seeds}'}, "
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
    print("\nmean ± sd over seeds (percent):" + summary(rows))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
