"""Preprocessing options aimed at shortcuts (settings of a run, recorded with it and applied again at
prediction time):

* ``clahe``: contrast-limited adaptive histogram equalisation (scikit-image's ``equalize_adapthist``) of each
  decoded, resized uint8 image. Applied to the cached tensors after loading (cheap at 128 px), so the
  decode cache is unchanged; :class:`cxrviz.train.Preprocess` applies it to new images at prediction time.
* per-image intensity standardisation (``standardize``): each image to zero mean and unit standard
  deviation (in :class:`cxrviz.train.Preprocess`), instead of the training set's mean and std, so a source's
  overall brightness or contrast is not a feature.
* stronger scale/crop augmentation: the ``strong`` level of :mod:`cxrviz.data.augment`.
* ``lung_crop``: each image cropped to the bounding box of the fixed lung-field template
  (:data:`cxrviz.lungs.TEMPLATE`, normalised coordinates) plus a margin of ``LUNG_CROP_MARGIN`` on every
  side, then resized back to the run's size, so borders, shoulders, text and corner markers mostly leave
  the frame before the model sees the image.

  **Where the crop happens, and why.** It crops the cached, already resized uint8 tensor (the run's
  ``img_size``) and resizes the crop back to ``img_size`` (bilinear), rather than decoding at a larger size
  and cropping to exactly ``img_size``. Every path that scores an image (training, the stored test
  predictions, prediction, evaluation, external scoring, probes, Grad-CAM) already hands
  :class:`cxrviz.train.Preprocess` the image at ``img_size``, so the crop lives in one function applied
  in one place and a model sees bit-identical input at training and at prediction. The price: the box is
  about 0.81 x 0.78 of the frame, so the crop is upsampled by about 1.25 and carries the detail of an
  ``0.8 * img_size`` image; a run that wants the full detail inside the lungs raises ``img_size`` by a quarter.
  Order: crop first, then CLAHE (equalising the lungs, not the border that is cut away).
  In the cropped frame the template is :func:`cropped_template` (probes and Grad-CAM use it).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..lungs import TEMPLATE, Template

CLAHE_CLIP = 0.01  # scikit-image's default clip limit
LUNG_CROP_MARGIN = 0.05  # of the frame, on every side of the template's bounding box


def clahe_uint8(images: torch.Tensor, clip_limit: float = CLAHE_CLIP) -> torch.Tensor:
    """CLAHE of uint8 images [N, 1, H, W] (any device); returns uint8 on the same device."""
    from skimage.exposure import equalize_adapthist

    arr = images.detach().cpu().numpy()
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        for c in range(arr.shape[1]):
            eq = equalize_adapthist(arr[i, c], clip_limit=clip_limit)  # float64 in [0, 1]
            out[i, c] = np.clip(np.rint(eq * 255), 0, 255).astype(np.uint8)
    return torch.from_numpy(out).to(images.device)


def standardize_per_image(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """float [B, C, H, W] -> each image with zero mean and unit standard deviation."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(eps)
    return (x - mean) / std


def lung_crop_box(size: int, template: Template = TEMPLATE,
                  margin: float = LUNG_CROP_MARGIN) -> tuple[int, int, int, int]:
    """The crop in pixels of a square ``size`` image: (x0, y0, x1, y1), end exclusive, the template's bounding
    box plus ``margin`` rounded outwards and clipped to the frame."""
    bx = (0.5 - template.dx - template.a - margin, 0.5 + template.dx + template.a + margin)
    by = (template.cy - template.b - margin, template.cy + template.b + margin)
    x0, x1 = max(0, math.floor(bx[0] * size)), min(size, math.ceil(bx[1] * size))
    y0, y1 = max(0, math.floor(by[0] * size)), min(size, math.ceil(by[1] * size))
    return x0, y0, x1, y1


def lung_crop(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, S, S] (any device) -> the lung crop of each image resized back to S x S, uint8."""
    size = images.shape[-1]
    x0, y0, x1, y1 = lung_crop_box(size)
    crop = images[..., y0:y1, x0:x1].float()
    out = F.interpolate(crop, size=(images.shape[-2], size), mode="bilinear", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def lung_crop_view(gray: np.ndarray) -> np.ndarray:
    """The same crop of a 2-D image of any shape (a display image; the models squash to a square, so the box
    is the same share of each axis), not resized: what a lung-crop run's Grad-CAM is drawn on."""
    h, w = gray.shape[:2]
    bx, by = lung_crop_box(w), lung_crop_box(h)
    return gray[by[1]:by[3], bx[0]:bx[2]]


def cropped_template(size: int, template: Template = TEMPLATE) -> Template:
    """The lung-field template in the frame of :func:`lung_crop` at ``size`` px (the box is symmetric about the
    midline up to a pixel, so the ellipses stay a mirror pair)."""
    x0, y0, x1, y1 = lung_crop_box(size)
    w, h = (x1 - x0) / size, (y1 - y0) / size
    return Template(dx=template.dx / w, cy=(template.cy - y0 / size) / h, a=template.a / w, b=template.b / h)


def prepare_uint8(images: torch.Tensor, *, crop: bool, clahe: bool) -> torch.Tensor:
    """A run's uint8 preprocessing steps in their one order: the lung crop, then CLAHE (the trainer applies it
    to its cached tensors once, :class:`cxrviz.train.Preprocess` to new images at prediction time)."""
    if crop:
        images = lung_crop(images)
    if clahe:
        images = clahe_uint8(images)
    return images
