"""Shortcut probes: does a model look at the lungs?

On a set of images (a run's test split or an external folder) a run is scored three times:

* **full**: the images as they are;
* **lungs hidden**: the lung-field template (:mod:`cxrviz.lungs`) filled with the image's own mean
  intensity, so only the border region (body outline, shoulders, labels, markers, corners) is left;
* **only lungs**: everything outside the template filled the same way.

Each accuracy gets its Wilson 95 % interval and is compared with the always-majority-class baseline of the
same images. A run is flagged **"predicts from outside the lungs"** when the lower end of the lungs-hidden
interval is above the baseline: with the lungs gone it still does better than always naming the biggest
class, so it must be reading something outside them. On an unbalanced folder (an external set of mostly
normals) the majority baseline is high, so the flag is also raised when the lungs-hidden balanced accuracy
(mean recall; Jeffreys interval as in :func:`cxrviz.external.balanced_accuracy`) is clearly above chance
(1 / number of classes present).

Grad-CAM energy: the share of each image's CAM mass (the map of the predicted class, at the model's input
size) that falls inside the template, averaged per true class. The template covers ``area_share`` of the
image, so a model that looks everywhere equally scores about that.

A run trained with ``lung_crop`` (cxrviz/data/preprocess.py) is probed the same way: the lungs are hidden (or
kept) in the image's own frame, before the run's preprocessing crops it, so the crop keeps the hidden region
where it is; its Grad-CAMs are in the cropped frame and are measured against the template moved into that
frame (``cropped_template``). Most of the border is cropped away before such a model sees it, so "lungs
hidden" leaves it little besides the margin around the lung fields.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .external import balanced_accuracy
from .lungs import lung_mask
from .metrics import wilson_interval
from .runs import Run, load_model

Progress = Callable[[int, int], None]
VARIANTS = ("full", "lungs hidden", "only lungs")
FLAG = "predicts from outside the lungs"


def hide(images: torch.Tensor, mask: np.ndarray, region: str) -> torch.Tensor:
    """uint8 [N,1,S,S] with ``region`` ("lungs" or "outside") filled with each image's mean intensity."""
    if region not in ("lungs", "outside"):
        raise ValueError(f"region must be 'lungs' or 'outside', not {region!r}")
    m = torch.from_numpy(mask if region == "lungs" else ~mask).view(1, 1, *mask.shape)
    fill = images.float().mean(dim=(1, 2, 3), keepdim=True).round().to(torch.uint8)
    return torch.where(m, fill.expand_as(images), images)


def _acc(pred: np.ndarray, y: np.ndarray) -> dict:
    k, n = int((pred == y).sum()), len(y)
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else math.nan, "ci_low": lo, "ci_high": hi, "correct": k, "n": n}


def accuracy_probe(model, pre, images: torch.Tensor, labels: np.ndarray, mask: np.ndarray) -> dict:
    """Accuracy (Wilson interval) full / lungs hidden / only lungs, the majority baseline and the flag."""
    from .predict import model_lock
    from .train import predict_probs

    y = np.asarray(labels)
    out = {}
    with model_lock(model):
        for name, x in (("full", images), ("lungs hidden", hide(images, mask, "lungs")),
                        ("only lungs", hide(images, mask, "outside"))):
            pred = predict_probs(model, x, pre, torch.device("cpu")).numpy().argmax(1)
            out[name] = _acc(pred, y)
            b, blo, bhi = balanced_accuracy(y, pred, sorted(set(y.tolist())))
            out[name].update(balanced=b, bal_ci_low=blo, bal_ci_high=bhi)
            out[name]["predicted"] = np.bincount(pred, minlength=int(max(y.max(), pred.max()) + 1)).tolist()
    counts = np.bincount(y)
    baseline = float(counts.max() / len(y)) if len(y) else math.nan
    chance = 1 / len(set(y.tolist())) if len(y) else math.nan
    hid = out["lungs hidden"]
    flagged = bool(hid["ci_low"] > baseline or hid["bal_ci_low"] > chance)
    return {"variants": out, "baseline": baseline, "chance": chance, "flagged": flagged}


def batch_cams(model, spec, x: torch.Tensor, batch_size: int = 16, progress: Progress | None = None) -> np.ndarray:
    """Grad-CAM of each image's predicted class for a preprocessed batch [N, C, S, S] -> float32 [N, S, S] in
    [0, 1], in batches through the grad-cam library, prepared as :mod:`cxrviz.explain` prepares a model (no
    in-place activations, frozen weights, backward stopped at the target layer)."""
    from pytorch_grad_cam import GradCAM

    from .explain import leaf_output, prepare_for_cam
    from .predict import model_lock

    out = []
    with model_lock(model):
        prepare_for_cam(model)
        layer = spec.target_module(model)
        handle = layer.register_forward_hook(leaf_output)  # before the library's hooks, so they see the leaf
        cam = GradCAM(model=model, target_layers=[layer])
        try:
            with torch.enable_grad():
                for i in range(0, len(x), batch_size):
                    out.append(np.asarray(cam(input_tensor=x[i:i + batch_size], targets=None), dtype=np.float32))
                    if progress:
                        progress(min(i + batch_size, len(x)), len(x))
        finally:
            cam.activations_and_grads.release()
            handle.remove()
            model.zero_grad(set_to_none=True)
    return np.nan_to_num(np.concatenate(out), nan=0.0) if out else np.zeros((0, *x.shape[-2:]), np.float32)


def cam_energy(run: Run, model, pre, images: torch.Tensor, labels: np.ndarray, mask: np.ndarray,
               progress: Progress | None = None) -> dict:
    """Mean share of Grad-CAM energy inside the lung template, per true class and overall."""
    from .models import get_spec

    cams = batch_cams(model, get_spec(run.arch), pre(images), progress=progress).astype(np.float64)
    if getattr(pre, "lung_crop", False):  # the model saw the lung crop: its CAMs are in that frame, so is the mask
        from .data.preprocess import cropped_template

        mask = lung_mask(int(images.shape[-1]), cropped_template(int(images.shape[-1])))
    m = mask.astype(np.float64)
    if cams.shape[1:] != m.shape:
        cams = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(cams)[:, None], size=m.shape,
                                                          mode="bilinear")[:, 0])
    shares: dict[str, list[float]] = {}
    for cam, y in zip(cams, labels):
        tot = cam.sum()
        if tot > 0:
            shares.setdefault(run.classes[int(y)], []).append(float((cam * m).sum() / tot))
    allv = [v for vs in shares.values() for v in vs]
    return {"per_class": {c: float(np.mean(v)) for c, v in shares.items()},
            "overall": float(np.mean(allv)) if allv else math.nan, "area_share": float(m.mean()),
            "method": "GradCAM", "n": len(allv)}


def probe(run: Run, images: torch.Tensor, labels, *, model_loader=None, cam: bool = True,
          progress: Progress | None = None) -> dict:
    """All probes of one run on uint8 images [N,1,S,S] (at the run's size) with labels into its classes."""
    model, pre = (model_loader or load_model)(run)
    y = np.asarray(labels, dtype=np.int64)
    mask = lung_mask(int(images.shape[-1]))
    res = accuracy_probe(model, pre, images, y, mask)
    res["cam"] = cam_energy(run, model, pre, images, y, mask, progress) if cam else None
    res["reading"] = reading(res)
    return res


def reading(res: dict) -> list[str]:
    """Plain-language sentences for one probe result."""
    v, base = res["variants"], res["baseline"]
    hid, only, full = v["lungs hidden"], v["only lungs"], v["full"]

    def pct(d):
        return f"{100 * d['accuracy']:.0f} % ({100 * d['ci_low']:.0f}–{100 * d['ci_high']:.0f})"

    out = []
    if res["flagged"] and hid["ci_low"] > base:
        out.append(f"⚠️ {FLAG.capitalize()}: with the lungs hidden it is still right on {pct(hid)} of the images, "
                   f"clearly above the {100 * base:.0f} % of always naming the majority class.")
    elif res["flagged"]:
        out.append(f"⚠️ {FLAG.capitalize()}: with the lungs hidden its balanced accuracy (mean recall) is still "
                   f"{100 * hid['balanced']:.0f} % ({100 * hid['bal_ci_low']:.0f}–{100 * hid['bal_ci_high']:.0f}), "
                   f"clearly above the {100 * res['chance']:.0f} % of guessing.")
    else:
        out.append(f"With the lungs hidden it is right on {pct(hid)}: not clearly above the {100 * base:.0f} % "
                   "majority baseline, so no sign that it predicts from outside the lungs.")
    if only["ci_low"] > base:
        out.append(f"With only the lungs visible it is right on {pct(only)} (full image: {pct(full)}).")
    else:
        out.append(f"With only the lungs visible it drops to {pct(only)}, not clearly above the baseline "
                   f"(full image: {pct(full)}).")
    cam = res.get("cam")
    if cam and not math.isnan(cam["overall"]):
        out.append(f"{100 * cam['overall']:.0f} % of its Grad-CAM energy lies inside the lung fields, which cover "
                   f"{100 * cam['area_share']:.0f} % of the image.")
    return out


def test_split(run: Run, progress: Progress | None = None):
    """The run's own test split at its size (a cxrviz.data.ImageSet)."""
    from .data import load_split, open_dataset

    return load_split(open_dataset(run.meta["dataset"].get("root")), "test", int(run.config["img_size"]),
                      progress=progress)


def probe_run(run: Run, folder=None, mapping=None, *, model_loader=None, cam: bool = True,
              progress: Progress | None = None, store: bool = True) -> dict:
    """Probe a run on its test split (``folder`` None) or on an external folder; stored with the run under
    ``probes-test`` or ``probes-<fingerprint>``."""
    from .external import load_images, open_external
    from .runs import write_record

    if folder is None:
        imgs, where, key = test_split(run), "test split", "probes-test"
    else:
        ext = open_external(folder, run.classes, mapping)
        imgs, where, key = load_images(ext, int(run.config["img_size"])), str(ext.root), f"probes-{ext.fingerprint}"
    res = probe(run, imgs.images, imgs.labels.numpy(), model_loader=model_loader, cam=cam, progress=progress)
    rec = {"kind": "probes", "run": run.id, "arch": run.arch, "display": run.meta.get("display", run.arch),
           "label": run.label, "data": where, "n": len(imgs), **res}
    if store:
        write_record(run, key, rec)
    return rec


def table_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        v = r["variants"]
        row = {"run": r["run"], "model": r["display"], "data": r["data"], "n": r["n"]}
        for name in VARIANTS:
            row[f"{name} acc"] = 100 * v[name]["accuracy"]
            row[f"{name} CI"] = f"{100 * v[name]['ci_low']:.1f}–{100 * v[name]['ci_high']:.1f}"
        row["lungs hidden balanced acc"] = 100 * v["lungs hidden"].get("balanced", math.nan)
        row["majority baseline"] = 100 * r["baseline"]
        row["flag"] = FLAG if r["flagged"] else ""
        cam = r.get("cam")
        if cam:
            row["CAM in lungs"] = 100 * cam["overall"]
            row.update({f"CAM in lungs {c}": 100 * s for c, s in cam["per_class"].items()})
            row["lung area"] = 100 * cam["area_share"]
        rows.append(row)
    return rows
