"""Benchmark of external validation (part of ``python -m cxrviz bench``): scoring runs on an external folder
after its first decode, and the shortcut probes (accuracy variants + Grad-CAM energy) on a test split and
the external folder. Runs are stored on disk with untrained weights: the cost does not depend on their
values. The external folder is built in a temp dir: Figure 1 COVID + OpenIST normals when
``../shared/data/external`` exists, else the synthetic set written as files."""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

EXTERNAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "external"


def _external_folder(dst: Path, n: int, classes: list[str]) -> str:
    """``n`` images, Covid/ and Normal/: real external sources when present, else synthetic files."""
    covid, normal = EXTERNAL_DATA / "figure1-covid" / "images", EXTERNAL_DATA / "openist-normal" / "images"
    if covid.is_dir() and normal.is_dir() and "Covid" in classes and "Normal" in classes:
        cf = sorted(covid.iterdir())[: n // 3]
        nf = sorted(normal.iterdir())[: n - len(cf)]
        for cls, files in (("Covid", cf), ("Normal", nf)):
            (dst / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, dst / cls / f.name)
        return "Figure 1 COVID + OpenIST normal"
    from .data.synthetic import write_folder

    with tempfile.TemporaryDirectory() as work:  # written beside, so only class folders end up in dst
        write_folder(Path(work) / "syn", counts={"test": max(1, n // 3)}, size=160)
        shutil.move(str(Path(work) / "syn" / "test"), str(dst))
    return "synthetic files"


def _store_untrained(root: Path, arch: str, size: int, data: str | None, classes: list[str]):
    from .models import get_spec
    from .runs import save_run

    model = get_spec(arch).build(num_classes=len(classes), in_channels=1)
    res = SimpleNamespace(
        config={"arch": arch, "img_size": size, "seed": 0, "epochs": 0, "in_channels": 1},
        state_dict={k: v.contiguous() for k, v in model.state_dict().items()}, status="done", history=[],
        batch_losses=[], predictions={}, timings={"train_eval_s": 0.0}, environment={},
        evaluation={"accuracy": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0},
        dataset={"name": "bench", "root": data, "classes": classes}, norm={"mean": 0.5, "std": 0.25, "in_channels": 1})
    return save_run(res, root=root)


def bench_external(data: str | None, archs: list[str], size: int, n_external: int) -> dict:
    from .data import open_dataset
    from .external import load_images, open_external, score_run
    from .predict import ModelCache
    from .probes import probe_run

    src = open_dataset(data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        what = _external_folder(tmp / "ext", n_external, src.classes)
        runs = [_store_untrained(tmp / "runs", a, size, str(src.root) if src.root else None, src.classes)
                for a in archs]
        ext = open_external(tmp / "ext", src.classes)
        t = time.perf_counter()
        load_images(ext, size)
        first_decode = time.perf_counter() - t
        cache = ModelCache()
        for r in runs:
            cache.get(r)
        t = time.perf_counter()
        for r in runs:
            score_run(r, tmp / "ext", model_loader=cache.get)
        score_s = time.perf_counter() - t
        t = time.perf_counter()
        n_test = 0
        for r in runs:
            n_test = probe_run(r, None, model_loader=cache.get)["n"]
            probe_run(r, tmp / "ext", model_loader=cache.get)
        probe_s = time.perf_counter() - t
    return {"archs": archs, "size": size, "external": what, "n_external": len(ext.files), "n_test": n_test,
            "first_decode_s": first_decode, "score_s": score_s, "probe_s": probe_s,
            "goal_score_s": 30.0, "goal_probe_s": 120.0}


def format_lines(e: dict) -> list[str]:
    return [f"f. external validation ({', '.join(e['archs'])} at {e['size']} px; {e['n_external']} external images: "
            f"{e['external']}):",
            f"   first decode of the external folder       {e['first_decode_s']:.2f} s",
            f"   scoring all runs (after the first decode)  {e['score_s']:.2f} s (goal <= {e['goal_score_s']:.0f} s)",
            f"   probes incl. Grad-CAM, {e['n_test']} test + {e['n_external']} external images, all runs: "
            f"{e['probe_s']:.1f} s (goal <= {e['goal_probe_s']:.0f} s)"]
