"""Preprocessing options aimed at shortcuts (settings of a run, recorded with it and applied again at
prediction time):

* ``clahe``: contrast-limited adaptive histogram equalisation (scikit-image's ``equalize_adapthist``) of each
  decoded, resized uint8 image. Applied to the cached tensors after loading (cheap at 128 px), so the
  decode cache is unchanged; :class:`cxrviz.train.Preprocess` applies it to new images at prediction time.
* per-image intensity standardisation (``standardize``): each image to zero mean and unit standard
  deviation (in :class:`cxrviz.train.Preprocess`), instead of the training set's mean and std, so a source's
  overall brightness or contrast is not a feature.
* stronger scale/crop augmentation: the ``strong`` level of :mod:`cxrviz.data.augment`.
"""
from __future__ import annotations

import numpy as np
import torch

CLAHE_CLIP = 0.01  # scikit-image's default clip limit


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
