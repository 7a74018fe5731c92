"""``python -m cxrviz <command>``: the engine, headless. Thin over the library; errors are one line.

It is one module (about 510 lines) because it is the one command-line surface: each command is a short
handler next to the others, and ``build_parser`` and ``main`` (the dispatch and the one-line error handling)
must know them all. The external-data commands already live in :mod:`cxrviz.cli_external`.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading

from tqdm import tqdm

from .data import decode_image
from .errors import CxrvizError, one_line
from .models import REGISTRY, SEED_MODELS, get_spec, model_table
from .runs import get_run, list_runs, load_model, save_run


class CLIError(CxrvizError):
    """A command that cannot do what was asked (no runs, mismatched classes, ...)."""


def _print_table(rows: list[dict], fmt: str) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        print(df.to_string(index=False))


# ---------------------------------------------------------------- models
def cmd_models(a) -> int:
    rows = model_table(img_size=224, num_classes=3, in_channels=1)
    if a.format == "table":
        for r in rows:
            r["params"] = f"{r['params']:,}"
        rows = [{k: r[k] for k in ("name", "display", "family", "depth", "params", "gflops@224", "min_size",
                                   "target_layer", "optimizer", "lr")} for r in rows]
    _print_table(rows, a.format)
    if a.format == "table":
        print("\nparams for 3 classes and 1 input channel; GFLOPs = multiply-adds per 224 px image, measured "
              "with torch.utils.flop_counter")
    return 0


# ---------------------------------------------------------------- train
def train_one(config, *, quiet: bool = False, root=None):
    """Train and store one run with a tqdm progress bar; returns the stored Run."""
    from .train import train

    spec = get_spec(config.arch)
    bars: dict[str, tqdm] = {}

    def cb(p) -> None:
        if quiet:
            return
        if p.kind == "data":
            bar = bars.get("data") or bars.setdefault("data", tqdm(total=p.total_steps, desc="decode/cache",
                                                                   unit="img", leave=False))
            bar.total = p.total_steps
            bar.n = p.step
            bar.refresh()
        elif p.kind == "start":
            if "data" in bars:
                bars.pop("data").close()
            bars["train"] = tqdm(total=p.total_steps, desc=f"{spec.display} s{config.seed}", unit="step")
        elif p.kind in ("batch", "epoch") and "train" in bars:
            bar = bars["train"]
            bar.update(p.step - bar.n)
            if p.kind == "epoch":
                held = "val_acc" if "val_acc" in p.metrics else "test_acc"  # test: no validation split
                bar.set_postfix(ep=f"{p.epoch}/{p.epochs}", loss=f"{p.metrics['train_loss']:.3f}",
                                **{held: f"{100 * p.metrics[held]:.1f}%"})
        elif p.kind == "end":
            for b in bars.values():
                b.close()

    stop = threading.Event()
    try:
        result = train(config, callback=cb, stop=stop)
    except KeyboardInterrupt:
        stop.set()
        raise
    finally:
        for b in bars.values():
            b.close()
    skipped = result.dataset.get("skipped") or []
    if skipped:  # unreadable files are left out of training: say so, and which (the run keeps the full list)
        print(f"warning: skipped {len(skipped)} unreadable file(s): " + "; ".join(skipped[:3])
              + (" ..." if len(skipped) > 3 else ""), file=sys.stderr)
    return save_run(result, root=root)


def _configs(a, archs: list[str]):
    from .train import TrainConfig

    out = []
    for arch in archs:
        get_spec(arch)
        for seed in a.seeds:
            c = TrainConfig(arch=arch, data=a.data, img_size=a.img_size, epochs=a.epochs, seed=seed, device=a.device,
                            batch_size=getattr(a, "batch_size", None), lr=getattr(a, "lr", None),
                            optimizer=getattr(a, "optimizer", None), augment=getattr(a, "augment", None),
                            precision=a.precision, val_fraction=a.val_fraction,
                            select=a.select.replace("-", "_"), clahe=a.clahe, standardize=a.standardize,
                            lung_crop=a.lung_crop)
            out.append(c.resolved())  # validate every config before the first run starts
    return out


def _summary(run) -> str:
    ev = run.evaluation
    acc = f"{100 * ev['accuracy']:.1f} % [{100 * ev['ci_low']:.1f}–{100 * ev['ci_high']:.1f}]" if ev else "n/a"
    return (f"{run.id}: {run.meta['display']} {run.status}, test acc {acc}, "
            f"train {run.meta['timings']['train_eval_s'] / 60:.2f} min")


def cmd_train(a) -> int:
    from .placement import detect_devices, parse_jobs_per_device

    configs = _configs(a, a.arch)
    per_device = parse_jobs_per_device(a.jobs_per_device)
    several = len(configs) > 1 and (per_device != 1 or (a.device == "auto" and len(detect_devices()) > 1))
    if several:  # every device of the machine, several jobs per device: the app's job registry
        from .jobs import JobRegistry

        return follow_jobs(JobRegistry(jobs_per_device=per_device), configs, quiet=a.quiet)
    for c in configs:
        run = train_one(c, quiet=a.quiet)
        print(_summary(run), flush=True)
    return 0


def follow_jobs(reg, configs, *, quiet: bool = False, poll: float = 0.5) -> int:
    """Submit ``configs`` to a JobRegistry (local devices or a Ray cluster), show one progress bar per job
    and a line per finished job; 0 when all are stored, 1 if any failed. Ctrl-C stops them all (nothing kept)."""
    import logging
    import time

    logging.getLogger("cxrviz.jobs").addHandler(logging.NullHandler())  # failures are printed below, one line each
    ids = reg.submit(configs)
    for jid in ids:
        s = reg.get(jid)
        print(f"{s.label} -> {s.device}", flush=True)
    bars: dict[str, tqdm] = {}
    reported: set[str] = set()
    failed = 0
    try:
        while len(reported) < len(ids):
            for pos, jid in enumerate(ids):
                s = reg.get(jid)
                if not quiet and s.status == "running" and jid not in bars:
                    bars[jid] = tqdm(total=1000, desc=f"{s.label} [{s.device}]", position=pos, leave=False,
                                     bar_format="{desc} {percentage:3.0f}%|{bar}| {postfix}")
                if jid in bars:
                    bars[jid].n = int(1000 * min(1.0, s.fraction))
                    bars[jid].set_postfix_str(s.message, refresh=True)
                if not s.active and jid not in reported:
                    reported.add(jid)
                    if jid in bars:
                        bars.pop(jid).close()
                    if s.status == "failed":
                        failed += 1
                        print(f"error: {s.label} on {s.device}: {s.error}", file=sys.stderr, flush=True)
                    elif s.run_id:
                        print(_summary(get_run(s.run_id)) + f" on {s.device}", flush=True)
                    else:
                        print(f"{s.label} on {s.device}: {s.message}", flush=True)
            time.sleep(poll)
    except KeyboardInterrupt:
        reg.stop_all(keep=False)
        reg.wait(30)
        raise
    finally:
        for b in bars.values():
            b.close()
    return 1 if failed else 0


def parse_recipe(text: str) -> dict:
    """``lr=1e-3,optimizer=adamw`` -> overrides of TrainConfig fields (``recipe``: none, the architecture's own)."""
    from dataclasses import fields

    from .train import ConfigError, TrainConfig

    if text.strip() in ("", "recipe"):
        return {}
    names = {f.name for f in fields(TrainConfig)} - {"arch", "data", "seed", "device"}
    out: dict = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        k, v = k.strip().replace("-", "_"), v.strip()
        if not sep or k not in names:
            raise ConfigError(f"--recipe {text!r}: expected KEY=VALUE pairs with KEY one of {', '.join(sorted(names))}")
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def cmd_sweep(a) -> int:
    from dataclasses import replace

    from .jobs import CLUSTER, JobRegistry
    from .placement import parse_jobs_per_device

    base = _configs(a, a.arch)
    variants = [parse_recipe(r) for r in (a.recipe or ["recipe"])]
    configs = [replace(c, **v).resolved() for v in variants for c in base]
    if a.ray is None:  # this machine's devices
        return follow_jobs(JobRegistry(jobs_per_device=parse_jobs_per_device(a.jobs_per_device)), configs,
                           quiet=a.quiet)
    from .cluster import connected, shutdown, sweep_registry

    address = None if a.ray == "local" else a.ray
    ours = not connected()  # a connection this process already had (a notebook, a test) stays open
    reg = sweep_registry(address, cpus_per_run=a.cpus_per_run)
    print(f"Ray: {reg.cluster.where}; {len(configs)} run(s); runs are stored in this machine's checkpoints/",
          flush=True)
    try:
        return follow_jobs(reg, [replace(c, device=CLUSTER) for c in configs], quiet=a.quiet)
    finally:
        if ours:
            shutdown()


def cmd_reproduce(a) -> int:
    from .format import fmt_pct
    from .report import DECK

    if a.external is not None:  # the generalisation experiment: single-source vs mixed, internal vs external
        from .cli_external import cmd_generalise

        return cmd_generalise(a)
    if a.archs or a.map or a.format != "table":
        raise CLIError("--archs, --map and --format go with --external FOLDER (the generalisation experiment)")

    configs = _configs(a, SEED_MODELS)
    runs = []
    for c in configs:
        run = train_one(c, quiet=a.quiet)
        print(_summary(run), flush=True)
        runs.append(run)
    print()
    print(f"{'model':<11}{'depth':>6}{'train time':>13}{'test acc (95% CI)':>26}   {'deck: time':>10}{'deck acc':>10}")
    for r in runs:
        d = DECK[r.arch]
        ev = r.evaluation or {}
        acc = (f"{fmt_pct(ev['accuracy'])} ({100 * ev['ci_low']:.1f}–{100 * ev['ci_high']:.1f})" if ev else "n/a")
        t = r.meta["timings"]["train_eval_s"] / 60
        print(f"{d['display']:<11}{d['depth']:>6}{t:>9.2f} min{acc:>26}   {d['time_min']:>6.2f} min"
              f"{fmt_pct(d['acc']):>10}")
    dev = runs[0].meta["environment"]["device"] if runs else "?"
    ds = runs[0].meta["dataset"]["name"] if runs else "?"
    print(f"\ncxrviz: {dev}, data: {ds}; deck: 20 epochs on a Colab GPU. Test split of "
          f"{runs[0].evaluation['n'] if runs and runs[0].evaluation else '?'} images: one image is "
          f"{100 / max(1, runs[0].evaluation['n'] if runs and runs[0].evaluation else 1):.1f} points.")
    return 0


# ---------------------------------------------------------------- evaluate / predict / table
def cmd_evaluate(a) -> int:
    import torch

    from .data import load_split, open_dataset
    from .metrics import evaluate_predictions, per_source
    from .train import predict_probs

    if a.data is not None or a.all or len(a.runs) != 1:  # external validation (cli_external)
        from .cli_external import cmd_evaluate_external

        a.format = "table" if a.format in (None, "text") else a.format
        if not a.runs and not a.all:
            raise CLIError("name a run (or several, or --all, with --data FOLDER)")
        if a.data is None:
            raise CLIError("scoring several runs (or --all) needs --data FOLDER (an external folder)")
        return cmd_evaluate_external(a)
    a.format = a.format or "text"
    run = get_run(a.runs[0])
    data = run.meta["dataset"].get("spec") or run.meta["dataset"].get("root")
    src = open_dataset(data)
    if src.classes != run.classes:
        raise CLIError(f"dataset classes {src.classes} do not match the run's classes {run.classes}")
    test = load_split(src, "test", int(run.config["img_size"]))
    model, pre = load_model(run)
    probs = predict_probs(model, test.images, pre, torch.device("cpu"))
    ev = evaluate_predictions(test.labels.tolist(), probs.numpy(), src.classes)
    if len(set(test.sources)) > 1:  # a multi-source dataset: each image's source, as the run stored it
        ev["per_source"] = per_source(test.labels.tolist(), probs.argmax(1).tolist(), test.sources, src.classes)
    if a.format == "json":
        print(json.dumps(ev, indent=2))
        return 0
    print(f"{run.id} on {src.label}: {len(test)} test images")
    print(f"accuracy {100 * ev['accuracy']:.1f} % (95 % CI {100 * ev['ci_low']:.1f}–{100 * ev['ci_high']:.1f}), "
          f"macro-F1 {ev['macro_f1']:.3f}, macro ROC-AUC {ev['roc_auc']['macro']:.3f}")
    for c, m in ev["per_class"].items():
        print(f"  {c:<18} precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f}  n={m['support']}")
    print("confusion (rows = true, cols = predicted):")
    for c, row in zip(src.classes, ev["confusion"]):
        print(f"  {c:<18} {row}")
    for s, v in ev.get("per_source", {}).items():
        print(f"  source {s}: {100 * v['accuracy']:.1f} % of {v['n']} "
              f"({100 * v['ci_low']:.1f}–{100 * v['ci_high']:.1f}; classes {', '.join(v['classes'])})")
    if test.errors:
        print(f"skipped {len(test.errors)} unreadable files: " + "; ".join(test.errors[:5]))
    return 0


def cmd_predict(a) -> int:
    from .predict import agreement, best_runs, predict_runs

    gray = decode_image(a.image)
    if a.runs:
        runs = [get_run(r) for r in a.runs]
    else:
        runs = best_runs(list_runs()[0])
    if not runs:
        raise CLIError("no stored runs yet: train one first, e.g. `python -m cxrviz train --arch resnet18`")
    preds, failures = predict_runs(gray, runs)  # a run with broken weights is named, the others still predict
    for r, why in failures:
        print(f"warning: run {r.id} skipped: {why}", file=sys.stderr)
    if not preds:
        raise CLIError(f"no usable run: {failures[0][1]}" if failures else "no usable run")
    if a.format == "json":
        print(json.dumps([p.to_dict() for p in preds], indent=2))
        return 0
    rows = [{"run": p.run_id, "predicted": p.predicted, "confidence": f"{100 * p.confidence:.1f} %",
             **{c: f"{v:.3f}" for c, v in zip(p.classes, p.probs)}, "ms": f"{p.latency_ms:.1f}"} for p in preds]
    _print_table(rows, "table")
    print(agreement(preds))
    return 0


def cmd_table(a) -> int:
    from .report import display_groups, display_table, export

    runs, problems = list_runs()
    if a.groups:
        df = display_groups(runs)
    else:
        df = display_table(runs)
    print(export(df, a.format), end="")
    for name, why in problems:
        print(f"unreadable run {name}: {why}", file=sys.stderr)
    return 0


def cmd_bench(a) -> int:
    try:
        from .bench import main as bench_main
    except ImportError as e:
        raise CLIError(f"benchmarks unavailable: {e}") from None
    return bench_main(a)


# ---------------------------------------------------------------- parser
def _pos_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {s}")
    return v


def _add_data_args(p: argparse.ArgumentParser, default_help: str = "built-in synthetic set") -> None:
    p.add_argument("--data", action="append", default=None, metavar="PATH",
                   help=f"dataset folder with train/ and test/; repeat to merge folders class by class, each a "
                        f"named source (default: {default_help})")
    p.add_argument("--add", action="append", default=None, metavar="CLASS=PATH[:SPLIT]",
                   help="add one class folder from another source (repeatable); with no :train or :test its "
                        "images are split by --add-test-fraction (seeded, per class)")
    p.add_argument("--add-test-fraction", type=float, default=0.2, metavar="F",
                   help="test share of an --add folder given without a split (default 0.2)")


def _add_train_args(p: argparse.ArgumentParser, with_arch: bool) -> None:
    if with_arch:
        p.add_argument("--arch", nargs="+", required=True, metavar="A",
                       help=f"one or more of: {', '.join(REGISTRY)}")
    _add_data_args(p)
    p.add_argument("--img-size", type=_pos_int, default=None, help="input size in px (default: recipe, 128)")
    p.add_argument("--epochs", type=_pos_int, default=None, help="default: recipe (20)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S")
    p.add_argument("--device", default="auto", help="auto (every GPU: each job on the least loaded) | cpu | cuda | "
                                                     "cuda:N | mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto (default): bf16 autocast + channels-last where faster (GPU; CPU with bf16 instructions)")
    p.add_argument("--val-fraction", type=float, default=0.15, metavar="F",
                   help="training images held out (stratified, fixed split seed 0) for the per-epoch metrics; the "
                        "test split is scored once at the end (default 0.15; 0 = test every epoch, the old way)")
    p.add_argument("--clahe", action="store_true", help="adaptive histogram equalisation of every image")
    p.add_argument("--lung-crop", action="store_true",
                   help="crop every image to the lung fields (fixed template + margin) before the model sees it")
    p.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="per-image intensity standardisation (zero mean, unit sd) instead of the set's mean/sd "
                        "(default: the architecture's recipe; on for VGG-19)")
    p.add_argument("--select", choices=["final", "best-val"], default="final",
                   help="weights scored on the test split: the final epoch's, or the best on validation")
    if with_arch:
        p.add_argument("--jobs-per-device", default="1", metavar="N|auto",
                       help="jobs one device runs at a time (auto: from free GPU memory and a probe step; 1 on CPU)")
        p.add_argument("--batch-size", type=_pos_int, default=None)
        p.add_argument("--lr", type=float, default=None)
        p.add_argument("--optimizer", choices=["adamw", "sgd", "adam"], default=None)
        p.add_argument("--augment", choices=["none", "light", "standard", "strong"], default=None,
                       help="default: the recipe's (none for the deck's four models, light for LeNet-5)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cxrviz",
                                 description="Train, explain and rank classic CNNs on chest X-rays.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("models", help="list the model registry")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("train", help="train one or more architectures x seeds; each is stored as a run")
    _add_train_args(p, True)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="architectures x recipes x seeds, on this machine's devices or a Ray cluster")
    _add_train_args(p, True)
    p.add_argument("--recipe", action="append", default=None, metavar="K=V[,K=V]",
                   help="a recipe variant (repeatable), e.g. lr=1e-3,optimizer=adamw; default: each model's recipe")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run every run as a Ray task: on the cluster at ADDRESS (host:port, or auto), or without "
                        "ADDRESS on a local Ray cluster started for this sweep")
    p.add_argument("--cpus-per-run", type=_pos_int, default=1, help="CPUs a run asks for on a cluster without GPUs")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("reproduce", help="train the deck's four models and print the deck-style table; with "
                                         "--external, the generalisation experiment (single-source vs --add mixed)")
    _add_train_args(p, False)
    from .cli_external import add_generalise_args

    add_generalise_args(p)
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("evaluate", help="evaluate a stored run on its test split, or runs on an external folder")
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("--data", default=None, help="external folder: class folders (or test/ with them); "
                                                "default: the run's own test split")
    p.add_argument("--format", choices=["text", "table", "json", "csv"], default=None)
    p.set_defaults(func=cmd_evaluate)
    from .cli_external import add_parsers

    add_parsers(sub, p)
    p = sub.add_parser("predict", help="predict one image (PNG, JPEG or DICOM) with stored runs")
    p.add_argument("image")
    p.add_argument("--runs", nargs="+", default=None, help="run ids (default: the best run of each architecture)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("table", help="the stored runs as a leaderboard")
    p.add_argument("--format", choices=["md", "csv", "latex", "json"], default="md")
    p.add_argument("--groups", action="store_true", help="one row per seed group (mean ± sd)")
    p.set_defaults(func=cmd_table)
    p = sub.add_parser("bench", help="benchmarks: input pipeline, trainer overhead, end to end, app latencies, "
                                     "run-time estimate")
    p.add_argument("--quick", action="store_true", help="small configuration, under 2 minutes")
    p.add_argument("--data", default=None, help="dataset folder (default: ../shared/data/Covid19-dataset if present)")
    p.add_argument("--out", default=None, help="where to write the JSON report")
    p.add_argument("--device", default="auto")
    p.add_argument("--ray", action="store_true", help="only Ray's overhead per run: a 6-run synthetic sweep on a "
                                                      "local 2-CPU Ray cluster vs the same runs here")
    p.add_argument("--scale", action="store_true",
                   help="data scale instead: generated datasets of 1 000, 10 000 and 30 000 images of ~1 024 px")
    p.add_argument("--scales", type=_pos_int, nargs="+", default=None, metavar="N",
                   help="with --scale: dataset sizes (default: 1000 10000 30000)")
    p.add_argument("--workdir", default=None, help="with --scale: where datasets and caches are written "
                                                   "(default: a cxrviz-scale folder in the temp dir; reused)")
    p.add_argument("--no-near", action="store_true", help="with --scale: skip the near-duplicate check")
    p.add_argument("--reuse", action="store_true", help="with --scale: keep measurements already in --workdir")
    p.add_argument("--precision", action="store_true",
                   help="only: training images/s in fp32 / fp32+channels-last / bf16 / bf16+channels-last (CPU)")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "add", None) is not None or isinstance(getattr(args, "data", None), list):
            from .data import dataset_spec, open_dataset

            # repeated --data and --add: one serialisable dataset spec (what TrainConfig.data stores), checked
            # before anything runs; its warnings (a class from one source only) are printed once
            args.data_folders = args.data  # the folders alone (reproduce --external: the single-source arm)
            args.data = dataset_spec(args.data, args.add, args.add_test_fraction)
            for w in open_dataset(args.data).warnings:
                print(f"warning: {w}", file=sys.stderr)
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CxrvizError as e:  # anything a user can get wrong
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:  # not raised as a user error, still one line (e.g. a file vanished)
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:  # e.g. out of memory: one line (the app's wording), not a traceback
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1
