"""Class activation maps for stored runs, through the ``grad-cam`` package (pytorch-grad-cam).

CAMs are always computed on a *loaded copy* of a stored run (``runs.load_model`` / the app's ModelCache),
never on a model that a training job is updating. The target layer of each architecture comes from the
registry (``ModelSpec.target_layer``).

How a CAM is computed here (``compute_cam``):

* the model is prepared once: eval mode, parameters frozen (no weight gradients are ever needed) and
  ``inplace`` switched off on every activation module, so no later in-place op can overwrite the
  activations the library stored;
* for the gradient methods (GradCAM, GradCAM++, LayerCAM) a forward hook on the target layer returns its
  output as a fresh leaf that requires grad. The library's own hooks (registered after ours) store that
  leaf and its gradient, and the backward pass stops there: it only runs through the classifier head, so a
  CAM costs about one forward pass. The gradient w.r.t. the target activations is exactly the same as with
  a full backward pass (``tests/test_explain.py`` checks it against a hand computation);
* the map comes back at the model's input size (the library upsamples and scales it to [0, 1]);
  ``overlay`` upsamples it to the display size.

Models and CAM calls on the same model take turns (``predict.model_lock``): the hooks live on a model that
every session of the app shares.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .data.preprocess import lung_crop_view
from .errors import CxrvizError, message
from .models import get_spec
from .models.registry import ModelSpec
from .predict import (
    VIEW_SIZE,
    ImageInput,
    Prediction,
    fast_inference,
    gray_for,
    input_tensor,
    model_lock,
    nhwc,
    predict_with_model,
    prediction_from_logits,
    view_image,
)
from .runs import Run, RunError, load_model

__all__ = ["CAM_METHODS", "SLOW_METHODS", "CLASS_AGNOSTIC", "GRADIENT_METHODS", "ExplainError", "Explanation",
           "compute_cam", "overlay", "display_image", "explain_runs", "misclassified"]

CAM_METHODS: dict[str, type] = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "EigenCAM": EigenCAM,
    "LayerCAM": LayerCAM,
    "ScoreCAM": ScoreCAM,
}
GRADIENT_METHODS = frozenset({"GradCAM", "GradCAM++", "LayerCAM"})
SLOW_METHODS = frozenset({"ScoreCAM"})  # one forward pass per channel of the target layer
CLASS_AGNOSTIC = frozenset({"EigenCAM"})  # first principal component of the activations: no target class
DISPLAY_SIZE = VIEW_SIZE  # longest side of the images shown and composed into the PNG


class ExplainError(CxrvizError):
    """A CAM that cannot be computed; the message is one line."""


# --------------------------------------------------------------------------------------------- CAMs
def _resolve_layer(model: nn.Module, target_layer) -> nn.Module:
    if isinstance(target_layer, nn.Module):
        return target_layer
    if isinstance(target_layer, ModelSpec):
        return target_layer.target_module(model)
    if isinstance(target_layer, str):
        try:
            return model.get_submodule(target_layer)
        except AttributeError:
            raise ExplainError(f"the model has no layer {target_layer!r}") from None
    raise ExplainError(f"target layer must be a ModelSpec, a layer name or a module, not {type(target_layer).__name__}")


def prepare_for_cam(model: nn.Module) -> nn.Module:
    """Eval mode, frozen parameters, no in-place activations (idempotent; the model is a loaded copy)."""
    if not getattr(model, "_cxrviz_cam_ready", False):
        for m in model.modules():
            if isinstance(getattr(m, "inplace", None), bool):
                m.inplace = False
        model.requires_grad_(False)
        model._cxrviz_cam_ready = True
    model.eval()
    return model


def leaf_output(module, args, output):
    """Forward hook: the target layer's output as a leaf that requires grad, so the backward pass needs
    nothing below the target layer."""
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
        return output.detach().requires_grad_(True)
    return None


def _cam_with_logits(model: nn.Module, target_layer, x: torch.Tensor, target_class: int | None,
                     method: str, progress: Callable[[int, int], None] | None = None,
                     batch_size: int = 32) -> tuple[np.ndarray, torch.Tensor, float]:
    """(cam float32 [H, W] in [0, 1], logits [1, C] of the first forward pass, that pass's ms)."""
    if method not in CAM_METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; choose from: {', '.join(CAM_METHODS)}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1:
        raise ExplainError(f"expected one input image as a [1, C, H, W] tensor, got {tuple(getattr(x, 'shape', ()))}")
    layer = _resolve_layer(model, target_layer)
    x = nhwc(x if x.is_floating_point() else x.float())
    with model_lock(model):
        prepare_for_cam(model)
        fast_inference(model)
        handles = []
        if method in GRADIENT_METHODS:  # registered before the library's hooks, so theirs see the leaf
            handles.append(layer.register_forward_hook(leaf_output))
        timing: dict[str, float] = {}
        calls = [0]

        def pre_hook(mod, args):
            if calls[0] == 0:
                timing["t0"] = time.perf_counter()

        def post_hook(mod, args, out):
            calls[0] += 1
            if calls[0] == 1:
                timing["ms"] = (time.perf_counter() - timing["t0"]) * 1000
                timing["logits"] = out.detach().clone() if isinstance(out, torch.Tensor) else out[0].detach().clone()
            elif progress is not None and cam_obj is not None:
                acts = cam_obj.activations_and_grads.activations
                channels = int(acts[0].shape[1]) if acts else 1
                total = max(1, math.ceil(channels / batch_size))
                progress(min(calls[0] - 1, total), total)

        cam_obj = None
        handles.append(model.register_forward_pre_hook(pre_hook))
        handles.append(model.register_forward_hook(post_hook))
        try:
            cam_obj = CAM_METHODS[method](model=model, target_layers=[layer])
            if method == "ScoreCAM":
                cam_obj.batch_size = batch_size
            targets = None if target_class is None else [ClassifierOutputTarget(int(target_class))]
            with torch.enable_grad():
                grayscale = cam_obj(input_tensor=x, targets=targets)
        except ExplainError:
            raise
        except (RuntimeError, ValueError, IndexError, np.linalg.LinAlgError) as e:
            raise ExplainError(f"{method} failed: {message(e, 300)}") from e
        finally:
            if cam_obj is not None:
                cam_obj.activations_and_grads.release()
            for h in handles:
                h.remove()
            model.zero_grad(set_to_none=True)
    cam = np.nan_to_num(np.asarray(grayscale[0], dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(cam, 0.0, 1.0), timing["logits"], timing["ms"]


def compute_cam(model: nn.Module, target_layer, input_tensor: torch.Tensor, target_class: int | None = None,
                method: str = "GradCAM", *, progress: Callable[[int, int], None] | None = None,
                batch_size: int = 32) -> np.ndarray:
    """A class activation map of one preprocessed input ``[1, C, H, W]``: float32 ``[H, W]`` in [0, 1] at
    the model's input size. ``target_layer`` is the architecture's ModelSpec, a dotted layer name or the
    module; ``target_class`` None means the model's own prediction. ``progress(done, total)`` is called per
    ScoreCAM batch (``batch_size`` masked inputs per forward pass)."""
    return _cam_with_logits(model, target_layer, input_tensor, target_class, method, progress, batch_size)[0]


# --------------------------------------------------------------------------------------------- images
def display_image(gray: np.ndarray, max_side: int = DISPLAY_SIZE) -> np.ndarray:
    """The decoded image scaled so its longest side is at most ``max_side`` (aspect ratio kept)."""
    g = np.asarray(gray)
    if g.ndim != 2 or g.dtype != np.uint8:
        raise ExplainError(f"expected a 2-D uint8 grayscale image, got {g.dtype} {g.shape}")
    return view_image(g, max_side)


def _resize_map(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape == tuple(shape):
        return cam
    out = Image.fromarray(cam, mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def overlay(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """RGB uint8 of ``gray``'s size: the grayscale image blended with the colour-mapped CAM.
    The CAM (model input size, i.e. the squashed square the model saw) is stretched back to the image."""
    from matplotlib import colormaps

    g = np.asarray(gray)
    if g.ndim != 2:
        raise ExplainError(f"expected a 2-D grayscale image, got shape {g.shape}")
    alpha = float(min(1.0, max(0.0, alpha)))
    heat = colormaps[colormap](_resize_map(cam, g.shape))[..., :3].astype(np.float32)
    base = (g.astype(np.float32) / 255.0)[..., None]
    out = (1.0 - alpha) * base + alpha * heat
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- runs
@dataclass
class Explanation:
    run_id: str
    label: str
    arch: str
    method: str
    prediction: Prediction | None = None
    target: str | None = None  # class the map explains (None: class-agnostic method or error)
    cam: np.ndarray | None = field(default=None, repr=False)  # float32 [S, S] at the run's input size
    overlay: np.ndarray | None = field(default=None, repr=False)  # RGB uint8 at the display size
    cam_ms: float = math.nan
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.cam is not None


def explain_runs(image, runs: list[Run], model_loader=None, method: str = "GradCAM",
                 target: str | None = None, *, alpha: float = 0.5, display_size: int = DISPLAY_SIZE,
                 progress: Callable[[int, int, int], None] | None = None,
                 batch_size: int = 32) -> list[Explanation]:
    """CAM of every run on one image (an ImageInput, or a decoded uint8 array). ``target`` None explains each
    model's own prediction; a class name explains that class for every model (the fair comparison). Each run
    gets its own preprocessing.
    ``model_loader(run) -> (model, pre)`` (the app's cache); ``progress(run_index, done, total)`` reports
    ScoreCAM batches. A run that fails (unloadable weights, unknown class) gets an ``error``, the others
    still come back."""
    if method not in CAM_METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; choose from: {', '.join(CAM_METHODS)}")
    loader = model_loader or load_model
    shown = display_image(image.gray() if isinstance(image, ImageInput) else image, display_size)
    out = []
    for i, r in enumerate(runs):
        ex = Explanation(r.id, r.label, r.arch, method)
        out.append(ex)
        try:
            model, pre = loader(r)
            gray = gray_for(image, r)
            x = pre(input_tensor(gray, r))
            k = None
            if target is not None and method not in CLASS_AGNOSTIC:
                if target not in r.classes:
                    ex.prediction = predict_with_model(gray, r, model, pre)
                    raise ExplainError(f"{r.label} was not trained on class {target!r} (its classes: "
                                       f"{', '.join(r.classes)})")
                k = r.classes.index(target)
            cb = (lambda d, t, i=i: progress(i, d, t)) if progress is not None else None
            t0 = time.perf_counter()
            cam, logits, ms = _cam_with_logits(model, get_spec(r.arch), x, k, method, cb, batch_size)
            ex.cam_ms = (time.perf_counter() - t0) * 1000
            ex.prediction = prediction_from_logits(r, logits, ms)
            ex.cam = cam
            if method not in CLASS_AGNOSTIC:
                ex.target = target if target is not None else ex.prediction.predicted
            # a lung-crop run's CAM covers the crop it saw: drawn on the same crop of the image
            ex.overlay = overlay(lung_crop_view(shown) if getattr(pre, "lung_crop", False) else shown, cam, alpha)
        except (ExplainError, RunError, ValueError, RuntimeError) as e:
            ex.error = f"{r.label}: {message(e)}" if not str(e).startswith(r.label) else message(e)
    return out


# --------------------------------------------------------------------------------------------- gallery
def misclassified(run: Run) -> list[dict]:
    """The run's misclassified test images (from its stored predictions), most confident mistakes first:
    [{path (resolved against the run's dataset folder), name (as stored), true, predicted, confidence,
    probs}]."""
    try:
        pr = run.predictions
    except RunError:
        return []
    paths, labels, probs = pr.get("paths") or [], pr.get("labels") or [], pr.get("probs") or []
    classes = run.classes
    root = run.meta.get("dataset", {}).get("root")
    out = []
    for path, y, p in zip(paths, labels, probs):
        k = int(np.argmax(p))
        if k != int(y):
            full = Path(root) / path if root and not Path(path).is_absolute() else Path(path)
            out.append({"path": str(full), "name": str(path), "true": classes[int(y)], "predicted": classes[k],
                        "confidence": float(p[k]), "probs": [float(v) for v in p]})
    out.sort(key=lambda d: -d["confidence"])
    return out


__all__ += ["DISPLAY_SIZE"]
