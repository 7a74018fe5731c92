"""Experiment (stop 23, issue 11's unseen-source goal): does a model that only ever sees small patches from
inside the lung fields stop learning "adult vs child"?

The Kaggle set has no adult non-COVID image, so "adult" and "COVID" are perfectly confounded in its training
data; a whole-image model learns the age (the README's tables: every adult normal called "Covid"). A patch
model (Oh et al., IEEE TMI 2020, "Deep learning COVID-19 features on CXR using limited training data sets")
sees local texture only: random ``--patch``-px patches whose centres lie inside the lung-field template, from
the lung crop of each image decoded at ``--img-size`` (CLAHE, per-patch standardisation). A whole image is
scored by the mean softmax of a fixed grid of patches inside the template.

Validation: the trainer's split (``cxrviz.data.validation.split_indices``, fraction ``--val-fraction``, split
seed 0), the same 37 images for every seed and every patch setting and the same as the recipe sweep's, so
the validation columns are comparable (stop 23's choice of the patch size used an earlier split of this script's
own: the same count, only 4 images shared; README). Test: the Kaggle test split.
``--external NAME=FOLDER``: external folders (Covid/ + Normal/), reported only. ``--probs DIR`` keeps each
seed's per-image probabilities (validation, test, external; with paths) in ``DIR/seed{N}.npz`` for
``benchmarks/ensemble_experiment.py``.

    python benchmarks/patch_experiment.py --data ../shared/data/Covid19-dataset --external unseen=/tmp/ext/unseen \
        --seeds 0 1 2 --out patch.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrviz.data import load_split, open_dataset  # noqa: E402
from cxrviz.data.preprocess import clahe_uint8, cropped_template, lung_crop  # noqa: E402
from cxrviz.data.validation import split_indices  # noqa: E402
from cxrviz.external import balanced_accuracy, load_images, open_external  # noqa: E402
from cxrviz.lungs import lung_mask  # noqa: E402
from cxrviz.metrics import roc_auc_ovr  # noqa: E402
from cxrviz.models import get_spec  # noqa: E402


def prepare(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, S, S] -> float lung crop with CLAHE, in 0..1."""
    return clahe_uint8(lung_crop(images)).float().div_(255)


def centres(size: int, patch: int) -> np.ndarray:
    """(y, x) of every pixel where a patch centred there is in the frame and the centre is inside the lungs."""
    m = lung_mask(size, cropped_template(size)).astype(bool)
    h = patch // 2
    ys, xs = np.nonzero(m)
    ok = (ys >= h) & (ys < size - (patch - h)) & (xs >= h) & (xs < size - (patch - h))
    return np.stack([ys[ok], xs[ok]], 1)


def cut(x: torch.Tensor, yx: np.ndarray, patch: int) -> torch.Tensor:
    """x [N, 1, S, S], one centre per image -> patches [N, 1, P, P], each standardised."""
    h = patch // 2
    out = torch.stack([x[i, :, y - h:y - h + patch, c - h:c - h + patch] for i, (y, c) in enumerate(yx)])
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) / out.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


def grid(cs: np.ndarray, k: int) -> np.ndarray:
    """About k evenly spread centres out of the allowed ones."""
    idx = np.linspace(0, len(cs) - 1, k).round().astype(int)
    return cs[idx]


@torch.no_grad()
def score(model, x: torch.Tensor, cs: np.ndarray, patch: int, k: int) -> torch.Tensor:
    """Mean softmax over a fixed grid of k lung patches per image -> probs [N, C]."""
    model.eval()
    g = grid(cs, k)
    out = []
    for i in range(len(x)):
        p = cut(x[i:i + 1].expand(len(g), -1, -1, -1), g, patch)
        out.append(F.softmax(model(p), 1).mean(0))
    return torch.stack(out)


def run(args, seed: int, data, test, exts, paths: dict) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = data
    tr, va = (np.asarray(i, dtype=np.int64) for i in split_indices(y.tolist(), args.val_fraction, 0))
    cs = centres(x.shape[-1], args.patch)
    model = get_spec(args.arch).build(num_classes=3, in_channels=1)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * args.per_image * len(tr) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    t0 = time.perf_counter()
    for step in range(steps):
        model.train()
        i = rng.choice(tr, args.batch)
        p = cut(x[i], cs[rng.integers(0, len(cs), args.batch)], args.patch)
        out = model(p)
        loss = F.cross_entropy(out[0] if isinstance(out, tuple) else out, y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 10) == 0:
            print(f"    seed {seed} step {step + 1}/{steps} loss {loss.item():.3f} {time.perf_counter() - t0:.0f} s",
                  flush=True)
    row = {"arch": args.arch, "seed": seed, "patch": args.patch, "img_size": args.img_size, "epochs": args.epochs,
           "train_s": time.perf_counter() - t0}
    pv = score(model, x[va], cs, args.patch, args.grid)
    row["val_acc"] = float((pv.argmax(1) == y[va]).float().mean())
    pt = score(model, test[0], cs, args.patch, args.grid)
    row["test_acc"] = float((pt.argmax(1) == test[1]).float().mean())
    row["external"] = {}
    keep = {"val_paths": np.array([paths["train"][i] for i in va]), "val_labels": y[va].numpy(),
            "val_probs": pv.numpy(), "test_paths": np.array(paths["test"]), "test_labels": test[1].numpy(),
            "test_probs": pt.numpy()}
    for name, (ex, ey, classes) in exts.items():
        pe = score(model, ex, cs, args.patch, args.grid)
        keep.update({f"ext_{name}_paths": np.array(paths[name]), f"ext_{name}_labels": ey.numpy(),
                     f"ext_{name}_probs": pe.numpy()})
        pred = pe.argmax(1).numpy()
        present = sorted(set(ey.tolist()))
        bal, lo, hi = balanced_accuracy(ey.numpy(), pred, present)
        row["external"][name] = {"balanced_accuracy": bal, "bal_ci": [lo, hi],
                                 "recall": {classes[c]: float((pred[ey.numpy() == c] == c).mean()) for c in present},
                                 "predicted": np.bincount(pred, minlength=3).tolist(),
                                 "roc_auc": roc_auc_ovr(ey.numpy(), pe.numpy(), classes)}
    if args.probs:
        Path(args.probs).mkdir(parents=True, exist_ok=True)
        tmp = Path(args.probs) / f".seed{seed}.tmp.npz"
        np.savez_compressed(tmp, **keep)
        tmp.replace(Path(args.probs) / f"seed{seed}.npz")
    return row


def emit(row: dict, out: str | None) -> None:
    """Print one result row as JSON and, with --out, append it to that JSON-lines file."""
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="dataset folder (default: the built-in synthetic set)")
    ap.add_argument("--external", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20, help="passes of --per-image patches over each image")
    ap.add_argument("--per-image", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grid", type=int, default=25, help="patches per image when scoring")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--probs", default=None, metavar="DIR", help="keep per-image probabilities in DIR/seed{N}.npz")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = open_dataset(args.data)
    tr = load_split(src, "train", args.img_size)
    te = load_split(src, "test", args.img_size)
    data = (prepare(tr.images), tr.labels)
    test = (prepare(te.images), te.labels)
    exts, paths = {}, {"train": tr.paths, "test": te.paths}
    for spec in args.external:
        name, _, folder = spec.partition("=")
        ext = open_external(folder, src.classes)
        im = load_images(ext, args.img_size)
        exts[name] = (prepare(im.images), im.labels, src.classes)
        paths[name] = im.paths
    for s in args.seeds:
        emit(run(args, s, data, test, exts, paths), args.out)


if __name__ == "__main__":
    main()
