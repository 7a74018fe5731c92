"""CLI commands of external validation: ``evaluate RUN... --data FOLDER``, ``probe`` and ``lungs``.

Registered by :mod:`cxrviz.cli`; errors are raised as CxrvizError (printed as ``error: <line>``, exit 2)."""
from __future__ import annotations

import json
import math
import sys

from tqdm import tqdm

from .errors import CxrvizError


def _runs(a):
    from .predict import best_runs
    from .runs import get_run, list_runs

    if a.all:
        runs = best_runs(list_runs()[0])
        if not runs:
            raise CxrvizError("--all: no finished runs stored yet")
    else:
        runs = [get_run(r) for r in a.runs]
    if not runs:
        raise CxrvizError("name one or more runs, or --all")
    return runs


def _print(rows: list[dict], fmt: str) -> None:
    import pandas as pd

    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    df = pd.DataFrame(rows)
    if fmt == "csv":
        print(df.to_csv(index=False), end="")
    else:
        # every number is a percent (one decimal) except the fractions: ECE and ROC-AUC (three)
        frac = {c: "{:.3f}".format for c in df.columns if c == "ECE" or str(c).startswith("AUC ")}
        print(df.to_string(index=False, float_format="{:.1f}".format, formatters=frac))


def _bar(desc: str, quiet: bool):
    bar = None if quiet else tqdm(desc=desc, unit="img", leave=False, file=sys.stderr)

    def cb(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()
    return bar, cb


def cmd_evaluate_external(a) -> int:
    from .external import open_external, score_run, table_rows
    from .predict import ModelCache

    runs = _runs(a)
    open_external(a.data, runs[0].classes, a.map)  # folder and mapping errors before any decoding
    cache = ModelCache()
    records = []
    for r in runs:
        bar, cb = _bar(f"{r.label}", a.quiet or a.format != "table")
        try:
            records.append(score_run(r, a.data, a.map, model_loader=cache.get, progress=cb))
        finally:
            if bar is not None:
                bar.close()
    if a.format == "json":
        print(json.dumps([{k: v for k, v in rec.items() if k not in ("probs", "paths", "labels")} for rec in records],
                         indent=2, default=str))
        return 0
    _print(table_rows(records), a.format)
    if a.format != "table":
        return 0
    rec0 = records[0]
    d = rec0["data"]
    print(f"\nexternal: {d['root']} ({d['n_files']} files, fingerprint {d['fingerprint']}), classes "
          f"{', '.join(f'{k}->{v}' for k, v in d['mapping'].items())}; internal = the run's own test split. "
          "Intervals: Wilson 95 % (accuracy), Jeffreys per class combined (balanced accuracy).")
    for rec in records:
        e = rec["external"]
        print(f"\n{rec['label']} ({rec['run']})")
        print("  confusion (rows: external classes, columns: the run's classes " + ", ".join(e["confusion_cols"]) + ")")
        for name, row in zip(e["confusion_rows"], e["confusion"]):
            print(f"    {name:<18} {row}")
        ps = e.get("per_source")
        if ps:
            print("  per source: " + "; ".join(f"{s} {100 * v['accuracy']:.1f} % of {v['n']} "
                                               f"({100 * v['ci_low']:.1f}–{100 * v['ci_high']:.1f})"
                                               for s, v in ps.items()))
        if rec["skipped"]:
            print(f"  skipped {len(rec['skipped'])} unreadable file(s): " + "; ".join(rec["skipped"][:3]))
    return 0


def cmd_probe(a) -> int:
    from .predict import ModelCache
    from .probes import probe_run, table_rows

    runs = _runs(a)
    cache = ModelCache()
    records = []
    for r in runs:
        bar, cb = _bar(f"{r.label} Grad-CAM", a.quiet or a.format != "table")
        try:
            records.append(probe_run(r, a.data, a.map, model_loader=cache.get, cam=not a.no_cam, progress=cb))
        finally:
            if bar is not None:
                bar.close()
    if a.format == "json":
        print(json.dumps(records, indent=2, default=str))
        return 0
    _print(table_rows(records), a.format)
    if a.format == "table":
        for rec in records:
            print(f"\n{rec['label']} on {rec['data']} ({rec['n']} images):")
            for line in rec["reading"]:
                print(f"  {line}")
    return 0


def cmd_lungs(a) -> int:
    from . import lungs

    res = lungs.check(a.masks, size=a.size) if a.masks else None
    if a.format == "json":
        print(json.dumps({"template": lungs.TEMPLATE.to_dict(), "check": res,
                          "synthetic_signal_inside": lungs.synthetic_signal_inside()}, indent=2))
    else:
        t = lungs.TEMPLATE
        print(f"lung-field template: two ellipses at x = 0.5 ± {t.dx}, y = {t.cy}, semi-axes {t.a} × {t.b} "
              f"(normalised, squashed-square image); {100 * float(lungs.lung_mask(128).mean()):.1f} % of the image")
        if res:
            o = res["overlap"]
            print(f"against {res['n']} masks at {res['size']} px: IoU {o['iou']['mean']:.3f} (10th pct "
                  f"{o['iou']['p10']:.3f}), lungs inside {100 * o['lungs_inside']['mean']:.1f} %, template on lungs "
                  f"{100 * o['template_on_lungs']['mean']:.1f} %; mean mask IoU {res['mean_mask_overlap']['iou']:.3f}")
            print(f"refit on these masks: {res['refit']}")
        print(f"synthetic phantoms: {100 * lungs.synthetic_signal_inside():.1f} % "
              "of the class signal inside the template")
    if a.figure:
        from .plots.external import lung_overlay_png

        if not a.images:
            raise CxrvizError("--figure needs --images FOLDER (radiographs to draw the template on)")
        data = lung_overlay_png(a.images, a.masks, n=a.n)
        from pathlib import Path

        Path(a.figure).write_bytes(data)
        print(f"wrote {a.figure}")
    return 0


def cmd_generalise(a) -> int:
    """``reproduce --data KAGGLE --add Normal=OTHER --external FOLDER``: see :mod:`cxrviz.generalise`."""
    from .cli import train_one
    from .generalise import make_plan, notes, overlap_lines, run_experiment, table_rows
    from .models import SEED_MODELS
    from .predict import ModelCache

    settings = {"img_size": a.img_size, "epochs": a.epochs, "device": a.device, "precision": a.precision,
                "val_fraction": a.val_fraction, "select": a.select.replace("-", "_"), "clahe": a.clahe,
                "standardize": a.standardize, "lung_crop": a.lung_crop}
    data = getattr(a, "data_folders", None) or ([a.data] if isinstance(a.data, str) else a.data)
    plan = make_plan(data, a.add, a.external, a.archs or list(SEED_MODELS), a.seeds, settings,
                     add_test_fraction=a.add_test_fraction, mapping=a.map)

    def log(line: str) -> None:  # progress on stderr: stdout is the table (or JSON / CSV)
        print(line, file=sys.stderr, flush=True)

    result = run_experiment(plan, lambda c: train_one(c, quiet=a.quiet), log=log, model_loader=ModelCache().get)
    rows = table_rows(result)
    if a.format == "json":
        print(json.dumps({"rows": rows, "notes": notes(plan, result), "overlap": result["overlap"]}, indent=2,
                         default=str))
        return 0
    _print(rows, a.format)
    if a.format == "table":
        print()
        for line in notes(plan, result):
            print(line)
    else:
        for line in overlap_lines(result["overlap"]):
            print(line, file=sys.stderr)
    return 0


def add_generalise_args(p) -> None:
    """``reproduce``'s options for the generalisation experiment."""
    p.add_argument("--external", default=None, metavar="FOLDER",
                   help="the generalisation experiment: train on the --data folders alone and with the --add folders, "
                        "score every run on this external folder (class folders) and probe it there")
    p.add_argument("--archs", nargs="+", default=None, metavar="A", help="with --external: these models instead of "
                                                                           "the deck's four")
    p.add_argument("--map", default=None, help='with --external: external class names -> classes, e.g. '
                                               '"COVID-19=Covid"')
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")


def add_parsers(sub, evaluate_parser) -> None:
    """Extend ``evaluate`` (RUN... --data --map --all) and add ``probe`` and ``lungs``."""
    p = evaluate_parser
    p.add_argument("--map", default=None,
                   help='external class names -> run classes, e.g. "COVID-19=Covid,No finding=Normal"')
    p.add_argument("--all", action="store_true", help="the best run of each architecture")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p = sub.add_parser("probe", help="shortcut probes: accuracy with the lungs hidden / only the lungs, Grad-CAM "
                                     "energy in the lungs (test split, or --data FOLDER)")
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("--all", action="store_true", help="the best run of each architecture")
    p.add_argument("--data", default=None, help="external folder (default: the run's own test split)")
    p.add_argument("--map", default=None)
    p.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM energy (faster)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_probe)
    p = sub.add_parser("lungs", help="the lung-field template: overlap with real masks, overlay figure")
    p.add_argument("--masks", default=None, help="folder of binary lung masks (PNG) to measure against")
    p.add_argument("--images", default=None, help="folder of radiographs for --figure (same stems as the masks)")
    p.add_argument("--figure", default=None, help="write an overlay PNG of the template on a few images")
    p.add_argument("--n", type=int, default=6, help="images in the figure")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_lungs)


def fmt_pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f} %"
