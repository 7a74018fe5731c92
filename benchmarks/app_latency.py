"""App latency benchmark: upload -> predictions of the deck's four models, and their Grad-CAMs.

    python benchmarks/app_latency.py [--size 224] [--repeats 7] [--threads 2] [--image PATH] [--methods ...]

Measured as the app does it, warm: models built once (untrained weights: the cost does not depend on the
weights) and handed to the same code path the Compare / Explain pages use (``decode_image`` on the
uploaded bytes, ``predict.predict_image``, ``explain.explain_runs`` with a model loader that returns the
already-loaded model). Prints the median (and min / max) of several repeats. Targets from the issue, on
2 CPU cores: predictions of the four models at 224 px <= 1 s; GradCAM of all four <= 3 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "Covid19-dataset"


def fake_run(arch: str, size: int, classes: list[str]):
    """An in-memory Run description (no weights on disk): only what predict/explain read from a run."""
    from cxrviz.models import get_spec
    from cxrviz.runs import Run

    spec = get_spec(arch)
    meta = {"id": f"bench-{arch}", "status": "done", "arch": arch, "display": spec.display,
            "config": {"arch": arch, "img_size": size, "epochs": 0, "seed": 0, "in_channels": 1},
            "dataset": {"classes": classes}, "norm": {"mean": 0.5, "std": 0.25, "in_channels": 1}}
    return Run(meta["id"], Path("/nonexistent") / meta["id"], meta)


def pick_image(path: str | None) -> tuple[bytes, str]:
    if path:
        p = Path(path)
        return p.read_bytes(), p.name
    if DATA.is_dir():  # the largest test radiograph: a conservative upload
        files = [p for p in (DATA / "test").rglob("*") if p.is_file()]
        p = max(files, key=lambda f: f.stat().st_size)
        return p.read_bytes(), p.name
    import io

    import numpy as np
    from PIL import Image

    from cxrviz.data import synthetic

    img = synthetic.make_split("test", 1024).images[0, 0].numpy().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue(), "synthetic.png"


def stats(xs: list[float]) -> str:
    return f"median {statistics.median(xs):7.3f} s   (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image", default=None, help="default: the largest test image of the real dataset")
    ap.add_argument("--archs", nargs="+", default=None, help="default: the deck's four models")
    ap.add_argument("--methods", nargs="+", default=["GradCAM"],
                    help="CAM methods to time (ScoreCAM is slow: one forward pass per channel)")
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from cxrviz.data import decode_image
    from cxrviz.explain import explain_runs
    from cxrviz.models import SEED_MODELS, get_spec
    from cxrviz.predict import ImageInput, agreement, predict_runs
    from cxrviz.train import Preprocess

    archs = a.archs or SEED_MODELS
    classes = ["Covid", "Normal", "Viral Pneumonia"]
    data, name = pick_image(a.image)
    torch.manual_seed(0)
    runs = [fake_run(arch, a.size, classes) for arch in archs]
    loaded = {}
    t = time.perf_counter()
    for r in runs:
        loaded[r.id] = (get_spec(r.arch).build(len(classes), 1).eval(), Preprocess(0.5, 0.25, 1))
    t_build = time.perf_counter() - t
    loader_run = lambda r: loaded[r.id]  # noqa: E731

    gray = decode_image(data, name=name)
    image = ImageInput(data=data, name=name)
    print(f"cxrviz app latency: torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(os.cpu_count()={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}), {a.size} px, "
          f"models {', '.join(archs)}")
    print(f"image {name}: {len(data) / 1024:.0f} KB, {gray.shape[1]}x{gray.shape[0]} px; "
          f"models built once in {t_build:.2f} s (not counted: the app caches them)")

    def upload_to_predictions():
        img = ImageInput(data=data, name=name)  # what the Compare page does with the uploaded bytes
        t1 = time.perf_counter()
        preds, errors = predict_runs(img, runs, loader_run)
        assert not errors, errors
        agreement(preds)
        return t1, preds

    upload_to_predictions()  # warm-up (oneDNN kernels, channels-last weights, allocator)
    t_dec, t_all, per_model = [], [], {r.arch: [] for r in runs}
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        t1, preds = upload_to_predictions()
        t2 = time.perf_counter()
        t_dec.append(t1 - t0)
        t_all.append(t2 - t0)
        for p in preds:
            per_model[p.arch].append(p.latency_ms / 1000)
    print(f"\nupload -> predictions (decode + resize/normalise per run + {len(runs)} forward passes), target <= 1 s")
    print(f"  total             {stats(t_all)}")
    print(f"  decode (view)     {stats(t_dec)}")
    for arch, xs in per_model.items():
        print(f"  {arch:<17} {stats(xs)}   (forward only)")

    for method in a.methods:
        reps = a.repeats if method != "ScoreCAM" else 1
        explain_runs(image, runs, loader_run, method)  # warm-up
        t_cam, per = [], {r.arch: [] for r in runs}
        for _ in range(reps):
            t0 = time.perf_counter()
            exs = explain_runs(image, runs, loader_run, method)
            t_cam.append(time.perf_counter() - t0)
            for ex in exs:
                if ex.error:
                    print(f"  error: {ex.error}")
                per[ex.arch].append(ex.cam_ms / 1000)
        tgt = " (target <= 3 s)" if method == "GradCAM" else ""
        print(f"\n{method} of all {len(runs)} models (CAM + prediction + overlay at the display size){tgt}")
        print(f"  total             {stats(t_cam)}")
        for arch, xs in per.items():
            print(f"  {arch:<17} {stats(xs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
