"""The validation split: part of the training images held out for the live curves and for choosing settings,
so the test split is scored once, at the end.

Stratified by class and, where the dataset records one, by source (``ImageSet.sources``): every (class, source)
group gives the same fraction. The split seed is fixed (``val_seed``, default 0) and independent of the
training seed, so runs with different training seeds are scored on the same validation images and are
comparable; set ``val_seed`` to vary the split itself.

k-fold cross-validation (``folds`` >= 2, fold ``fold``): each (class, source) group's seeded permutation is dealt
round-robin into ``folds`` parts and part ``fold`` is held out, so the ``folds`` runs of one setting together
score every training image exactly once on validation (a larger validation set than one fixed fraction gives,
for choosing between settings that tie on a small one). The fraction is then about ``1 / folds``.
"""
from __future__ import annotations

from dataclasses import fields, replace

import torch


def split_indices(labels: list[int], fraction: float, seed: int = 0, sources: list[str] | None = None,
                  fold: int = 0, folds: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, validation indices), both sorted. In each (class, source) group of n images,
    ``round(n * fraction)`` go to validation (at least one where n >= 2, never all of them). With ``folds`` >= 2,
    validation is instead fold ``fold`` of a stratified k-fold partition (``fraction`` unused)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), not {fraction}")
    if folds and not (folds >= 2 and 0 <= fold < folds):
        raise ValueError(f"fold must be in [0, {folds}) of folds >= 2, not fold {fold} of {folds}")
    groups: dict[tuple, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault((int(y), sources[i] if sources is not None else ""), []).append(i)
    g = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for key in sorted(groups):
        idx = groups[key]
        if len(idx) < 2 or (fraction == 0 and not folds):
            continue
        perm = torch.randperm(len(idx), generator=g).tolist()
        if folds:  # dealt round-robin: the folds partition the group (a part of <= ceil(n/k) < n images)
            perm = perm[fold::folds]
        else:
            perm = perm[:min(len(idx) - 1, max(1, round(len(idx) * fraction)))]
        val += [idx[j] for j in perm]
    vs = set(val)
    return [i for i in range(len(labels)) if i not in vs], sorted(val)


def subset(image_set, idx: list[int]):
    """The same ImageSet restricted to ``idx`` (images, labels, paths and, when present, sources)."""
    t = torch.as_tensor(idx, dtype=torch.long)
    kw = {"images": image_set.images[t], "labels": image_set.labels[t], "paths": [image_set.paths[i] for i in idx]}
    names = {f.name for f in fields(image_set)}
    for name in ("sources",):
        if name in names and getattr(image_set, name) is not None:
            kw[name] = [getattr(image_set, name)[i] for i in idx]
    return replace(image_set, **kw)


def split_validation(train_set, fraction: float, seed: int = 0, fold: int = 0, folds: int = 0):
    """(train part, validation part, how it was stratified) of a training ImageSet (fold ``fold`` of ``folds``
    when ``folds`` >= 2)."""
    sources = getattr(train_set, "sources", None)
    if sources is not None and len(set(sources)) < 2:
        sources = None  # one source: stratifying by class and source is stratifying by class
    tr, va = split_indices(train_set.labels.tolist(), fraction, seed, sources, fold, folds)
    return subset(train_set, tr), subset(train_set, va), ("class+source" if sources is not None else "class")
