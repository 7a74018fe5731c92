"""Build the folders of the generalisation experiment (README, "Training to generalise") as links into the
external radiographs, so every figure there can be re-run from the shared data without copying it:

    python benchmarks/external_folders.py ../shared/data/external /tmp/cxrviz-external

makes, under the target folder (links, nothing copied; rebuilt from scratch each time):

* ``unseen/Covid`` (Figure 1, 35) + ``unseen/Normal`` (all 275 OpenIST normals): sources no class of the
  Kaggle set saw, the "unseen sources" evaluation;
* ``openist150/``: the first 150 OpenIST normals (sorted by file name), added to Normal's training images
  for the mixed set (``--add Normal=TARGET/openist150:train``);
* ``other/Covid`` (Figure 1) + ``other/Normal`` (the other 125 OpenIST normals): the mixed set's external
  folder (its normals share their hospital with the training normals: optimistic, and said so).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".dcm", ".bmp", ".tif", ".tiff"}
N_TRAIN = 150


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder (expected figure1-covid/images and "
                         f"openist-normal/images under the external folder)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"error: no images in {folder}")
    return files


def _link(files: list[Path], dest: Path) -> None:
    dest.mkdir(parents=True)
    for f in files:
        os.symlink(f.resolve(), dest / f.name)


def build(external: str | os.PathLike, target: str | os.PathLike, n_train: int = N_TRAIN) -> dict[str, int]:
    """Make the three folders under ``target`` (replacing them); returns the image count of each leaf."""
    ext, out = Path(external), Path(target)
    covid = _images(ext / "figure1-covid" / "images")
    normal = _images(ext / "openist-normal" / "images")
    if len(normal) <= n_train:
        raise SystemExit(f"error: {len(normal)} OpenIST normals, need more than {n_train} to hold some out")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("unseen", "openist150", "other"):
        if (out / name).is_symlink() or (out / name).is_file():
            (out / name).unlink()
        elif (out / name).exists():
            shutil.rmtree(out / name)
    plan = {"unseen/Covid": covid, "unseen/Normal": normal, "openist150": normal[:n_train],
            "other/Covid": covid, "other/Normal": normal[n_train:]}
    for leaf, files in plan.items():
        _link(files, out / leaf)
    return {leaf: len(files) for leaf, files in plan.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("external", help="the external data folder (with figure1-covid/ and openist-normal/)")
    ap.add_argument("target", help="where to build the link folders")
    a = ap.parse_args(argv)
    for leaf, n in build(a.external, a.target).items():
        print(f"{Path(a.target) / leaf}: {n} images")


if __name__ == "__main__":
    sys.exit(main())
