"""Experiment (stop 24, issue 11's unseen-source goal): combine a whole-image model and a lung-patch model.

The two leave the shortcut in opposite directions on adult radiographs (README, "unseen sources"): the lung-crop
AlexNet calls most of Figure 1's COVID images "Covid" but half of the adult normals too; the lung-patch ResNet-18
(``benchmarks/patch_experiment.py``) calls most adult normals "Normal" but misses half of the COVID images. This
script scores two fixed combinations (no weight is fitted, so nothing is chosen on any split): ``mean``, their
mean softmax, and ``gate``: the patch model says whether an image is Normal (its P(Normal) is kept) and the
whole-image model says which of the other classes (the rest split in its proportions). ``gate`` was written after
seeing both models' confusions on ``unseen`` for seeds 0 and 1 (stop 24), before seed 2's patch model was
scored: its unseen figure is optimistic, and its Covid-vs-Viral-Pneumonia step is the whole-image model's,
which on the Kaggle set can tell those two apart by age (every Covid image adult, every Viral Pneumonia image a
child's), so it would call an adult non-COVID pneumonia "Covid"; no folder here has one to show it.
Per seed: seed N of the stored whole-image runs (``--run N=RUN_ID``) with seed N of the patch model
(``DIR/seedN.npz`` written by ``patch_experiment.py --probs DIR``).

Splits: validation = the trainer's 37 images (both models held them out: the script checks the paths match), test
= the Kaggle test split, ``--external NAME=FOLDER`` = external folders, reported only. Each row holds the two
models' and the two combinations' figures side by side (``whole``, ``patch``, ``mean``, ``gate``).

    python benchmarks/ensemble_experiment.py --data ../shared/data/Covid19-dataset --runs RUNS \\
        --run 0=ID0 --run 1=ID1 --run 2=ID2 --probs PATCH_PROBS --external unseen=EXTERNAL_ALL --out ens.jsonl
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patch_experiment import emit  # noqa: E402  (the sibling script: its per-seed files are this one's input)
from recipe_sweep import _named  # noqa: E402

from cxrviz.data import load_split, open_dataset  # noqa: E402
from cxrviz.external import score_run, summarize  # noqa: E402
from cxrviz.runs import get_run, load_model  # noqa: E402
from cxrviz.train import predict_probs  # noqa: E402


def aligned(paths_a, probs_a, paths_b, probs_b, what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Both models' probabilities in the order of ``paths_a``; an error if they did not score the same images."""
    a, b = [str(p) for p in paths_a], [str(p) for p in paths_b]
    if sorted(a) != sorted(b):
        raise SystemExit(f"error: the two models scored different {what} images ({len(set(a) ^ set(b))} differ)")
    pos = {p: i for i, p in enumerate(b)}
    return np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)[[pos[p] for p in a]], a


def gate(whole: np.ndarray, patch: np.ndarray, classes: list[str], normal: str = "Normal") -> np.ndarray:
    """The patch model says whether (its P(Normal) is kept), the whole-image model says which: the rest,
    1 - P(Normal), is split between the other classes in the whole-image model's proportions."""
    k = classes.index(normal)
    other = np.delete(whole, k, axis=1)
    other = other / np.clip(other.sum(1, keepdims=True), 1e-12, None)
    return np.insert(other * (1 - patch[:, [k]]), k, patch[:, k], axis=1)


def headline(labels, probs, classes) -> dict:
    s = summarize(labels, probs, classes)
    return {"accuracy": s["accuracy"], "balanced_accuracy": s["balanced_accuracy"],
            "bal_ci": [s["bal_ci_low"], s["bal_ci_high"]], "recall": s["recall"], "predicted": s["predicted"],
            "roc_auc": s["roc_auc"]}


def one_seed(seed: int, run_id: str, args, train_set) -> dict:
    run = get_run(run_id, args.runs)
    if run.config.get("seed") != seed:
        raise SystemExit(f"error: run {run_id} was trained with seed {run.config.get('seed')}, not {seed}")
    patch = np.load(Path(args.probs) / f"seed{seed}.npz")
    classes = run.classes
    row: dict = {"seed": seed, "run_id": run_id, "whole": run.arch, "patch_probs": f"seed{seed}.npz", "splits": {}}
    model, pre = load_model(run)
    # validation: the run's held-out images, re-predicted from its stored weights
    val_paths = run.meta["dataset"]["val_paths"]
    idx = {p: i for i, p in enumerate(train_set.paths)}
    vi = torch.as_tensor([idx[p] for p in val_paths])
    pv = predict_probs(model, train_set.images[vi], pre, torch.device("cpu")).numpy()
    parts = {"val": (val_paths, pv, train_set.labels[vi].numpy()),
             "test": (run.predictions["paths"], run.predictions["probs"], np.asarray(run.predictions["labels"]))}
    for name, folder in args.external:
        rec = score_run(run, folder, store=False)
        parts[name] = (rec["paths"], rec["probs"], np.asarray(rec["labels"]))
    for split, (paths, probs, labels) in parts.items():
        key = f"ext_{split}" if split not in ("val", "test") else split
        if f"{key}_paths" not in patch:
            raise SystemExit(f"error: {Path(args.probs) / f'seed{seed}.npz'} holds no {split!r} probabilities")
        a, b, order = aligned(paths, probs, patch[f"{key}_paths"], patch[f"{key}_probs"], split)
        pl = dict(zip([str(p) for p in patch[f"{key}_paths"]], patch[f"{key}_labels"].tolist()))
        if [pl[p] for p in order] != [int(v) for v in labels]:
            raise SystemExit(f"error: the two models' {split} labels disagree")
        row["splits"][split] = {"n": len(order), "whole": headline(labels, a, classes),
                                "patch": headline(labels, b, classes), "mean": headline(labels, (a + b) / 2, classes),
                                "gate": headline(labels, gate(a, b, classes), classes)}
    return row


def _pair(text: str) -> tuple[int, str]:
    seed, sep, rid = text.partition("=")
    if not sep or not seed.strip().isdigit() or not rid.strip():
        raise argparse.ArgumentTypeError(f"--run needs SEED=RUN_ID, not {text!r}")
    return int(seed), rid.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="the dataset both models trained on (default: the built-in set)")
    ap.add_argument("--runs", required=True, help="run folder holding the whole-image runs")
    ap.add_argument("--run", action="append", type=_pair, required=True, metavar="SEED=RUN_ID")
    ap.add_argument("--probs", required=True, metavar="DIR", help="patch_experiment.py --probs DIR")
    ap.add_argument("--external", action="append", default=[], type=_named, metavar="NAME=FOLDER")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    src = open_dataset(args.data)
    sizes = {get_run(rid, args.runs).config["img_size"] for _, rid in args.run}
    if len(sizes) != 1:
        raise SystemExit(f"error: the whole-image runs have different image sizes {sorted(sizes)}")
    train_set = load_split(src, "train", int(sizes.pop()))
    for seed, rid in args.run:
        emit(one_seed(seed, rid, args, train_set), args.out)


if __name__ == "__main__":
    main()
