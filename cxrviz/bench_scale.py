"""``python -m cxrviz bench --scale``: how cxrviz behaves on datasets of 1 000, 10 000 and 30 000 images.

For each size a generated dataset is written to disk (originals around 1 024 px, a quarter PNG and the rest
JPEG, 80 % train / 20 % test, three classes: synthetic phantoms rendered at 256 px, with per-image noise and
shifts, upsampled) and measured in a fresh process (so peak RAM is that size's own): the first decode (every
core) and a cache reload, peak RAM, training steps of ResNet-18 at 128 px (an epoch projected from their
rate; RAM during them), the Overview page's engine calls (first and reopened), the duplicate check (exact and
near), and batches read from the memory-mapped cache. Then: decode speed-up of 2 workers over 1 on the
largest set, and the Leaderboard with 50 and 500 stored runs. Every cost is printed with its growth
per step (1k -> 10k -> 30k), next to the growth of the data. Nothing is a stored constant.

It is one module (about 420 lines) because it is one command: the dataset writer, the per-size measurement, the
speed-up and Leaderboard checks and the report share the sizes and the record's keys, and nothing else uses them.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cxrviz.atomic import write_json

SCALES = (1000, 10000, 30000)
CLASSES = ("Covid", "Normal", "Viral Pneumonia")
POOL_PER_CLASS = 24  # base phantoms per class; every image adds its own noise, shift and size
_POOL: dict = {}


# ------------------------------------------------------------------------------------- generating the data
def _init_pool(pool: dict) -> None:
    _POOL.update(pool)


def _write_chunk(jobs: list[tuple[int, str, int]], px: int = 1024) -> int:
    from PIL import Image

    for i, path, label in jobs:
        rng = np.random.default_rng(i)
        base = _POOL[label][i % len(_POOL[label])].astype(np.int16)
        dy, dx = rng.integers(-8, 9, 2)
        a = np.roll(base, (int(dy), int(dx)), axis=(0, 1)) + rng.integers(-6, 7, base.shape, dtype=np.int16)
        gain = rng.uniform(0.85, 1.15)
        a = np.clip(a * gain, 0, 255).astype(np.uint8)
        w, h = int(px * rng.uniform(0.94, 1.1)), int(px * rng.uniform(0.94, 1.06))
        im = Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR)
        out = Path(path)
        tmp = out.with_name(out.name + ".part")
        if out.suffix == ".png":
            im.save(tmp, "PNG", compress_level=1)
        else:
            im.save(tmp, "JPEG", quality=90)
        os.replace(tmp, out)
    return len(jobs)


def derive_scale_dataset(root: Path, n: int, template: Path, log=print) -> Path:
    """``n`` images from a smaller generated set: file ``i`` is template file ``i mod m`` plus a trailer of 16
    bytes after the image's end (ignored by decoders), so every file is byte-unique: the content-keyed cache
    decodes each one, exactly the work of distinct originals of the same kind. Their pixels repeat, so near
    duplicates come in groups of n/m copies. Writing costs a file copy instead of a PNG encode."""
    root = Path(root)
    done = root / ".complete"
    tag = f"{n} from {template}"
    if done.exists() and done.read_text().strip() == tag:
        return root
    files = sorted(p for p in Path(template).rglob("img-*") if p.suffix in (".png", ".jpg"))
    by_index = {int(p.stem[4:]): p for p in files}
    m = len(by_index)
    t = time.perf_counter()
    for i in range(n):
        y = i % len(CLASSES)
        split = "test" if i % 5 == 4 else "train"
        src = by_index[i % m]
        out = root / split / CLASSES[y] / f"img-{i:06d}{src.suffix}"
        if out.exists():
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(src.read_bytes() + np.random.default_rng(i).bytes(16))
        os.replace(tmp, out)
        if i % 5000 == 4999:
            log(f"   wrote {i + 1}/{n} images ({time.perf_counter() - t:.0f} s)")
    done.write_text(tag)
    return root


def write_scale_dataset(root: Path, n: int, workers: int | None = None, log=print, px: int = 1024) -> Path:
    """``n`` images of ~``px`` px in the Kaggle layout (skipped if a complete one is already there)."""
    from cxrviz.data.cache import default_workers
    from cxrviz.data.synthetic import make_split

    root = Path(root)
    done = root / ".complete"
    if done.exists() and done.read_text().strip() == f"{n} {px}":
        return root
    imgs, labels = make_split("train", 256, n_per_class=POOL_PER_CLASS, seed=11)
    pool = {y: imgs[labels == y] for y in range(len(CLASSES))}
    jobs = []
    for i in range(n):
        y = i % len(CLASSES)
        split = "test" if i % 5 == 4 else "train"
        ext = ".png" if i % 4 == 0 else ".jpg"
        folder = root / split / CLASSES[y]
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((i, str(folder / f"img-{i:06d}{ext}"), y))
    todo = [j for j in jobs if not Path(j[1]).exists()]
    t = time.perf_counter()
    chunks = [todo[k:k + 64] for k in range(0, len(todo), 64)]
    with ProcessPoolExecutor(max_workers=workers or default_workers(), initializer=_init_pool, initargs=(pool,),
                             mp_context=multiprocessing.get_context("spawn")) as ex:
        written = 0
        for m in ex.map(_write_chunk, chunks, [px] * len(chunks)):
            written += m
            if written % 2048 < 64:
                log(f"   wrote {written}/{len(todo)} images ({time.perf_counter() - t:.0f} s)")
    done.write_text(f"{n} {px}")
    return root


# ------------------------------------------------------------------------------------- measuring one size
def _mem() -> dict:
    """Current and peak resident memory of this process (bytes), from /proc where there is one."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["VmRSS"] = out["VmHWM"]
    return out


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _timed(fn):
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def measure(root: Path, cache_dir: Path, size: int = 128, steps: int = 6, batch: int = 32,
            near: bool = True) -> dict:
    """Every measurement of one dataset, in this (fresh) process."""
    import torch

    from cxrviz.data import (
        find_duplicates,
        image_size_stats,
        load_split,
        near_duplicates,
        open_dataset,
    )
    from cxrviz.data.cache import ImageCache, set_default_cache
    from cxrviz.data.dataset import forget_splits
    from cxrviz.data.survey import sample_images, size_summary
    from cxrviz.models import get_spec

    torch.manual_seed(0)
    r: dict = {"root": str(root)}
    set_default_cache(ImageCache(cache_dir))
    r["open_s"], src = _timed(lambda: open_dataset(str(root)))
    r["images"] = sum(len(v) for v in src.files.values())
    r["train_n"] = len(src.files["train"])
    r["originals_bytes"] = sum(p.stat().st_size for v in src.files.values() for p, _ in v)

    # first decode (cold cache, every core), then a reload as after a restart
    t = time.perf_counter()
    train = load_split(src, "train", size)
    test = load_split(src, "test", size)
    r["first_decode_s"] = time.perf_counter() - t
    r["cache_bytes"] = int(train.images.numel() + test.images.numel())
    r["peak_rss_after_decode"] = _mem()["VmHWM"]
    del train, test
    forget_splits()
    set_default_cache(ImageCache(cache_dir))
    t = time.perf_counter()
    train = load_split(src, "train", size)
    load_split(src, "test", size)
    r["reload_s"] = time.perf_counter() - t
    r["mapped"] = train.mapped

    # training steps of ResNet-18 from the cached uint8 set (the trainer's per-batch path), RAM during them
    model = get_spec("resnet18").build(num_classes=3, in_channels=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    mean, std = train.mean_std()
    lossf = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    _reset_peak()
    rss0 = _mem()["VmRSS"]

    def step() -> None:
        idx = torch.randint(0, len(train), (batch,), generator=g)
        x = (train.images[idx].float().div_(255) - mean) / std
        loss = lossf(model(x), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    img_s = steps * batch / (time.perf_counter() - t)
    m = _mem()
    r.update(train_img_s=img_s, epoch_projected_s=len(train) / img_s, train_steps=steps, batch=batch,
             rss_before_training=rss0, peak_rss_training=m["VmHWM"],
             training_over_cache=m["VmHWM"] - r["cache_bytes"])  # goal: <= 1.5 GB (issue 14)

    # the same batches from a memory-mapped copy of the cache (a RAM budget of 0): same tensors, its cost
    forget_splits()
    mapped = load_split(src, "train", size, ram_budget_bytes=0)
    idx = torch.randint(0, len(train), (64 * batch,), generator=g)
    r["mapped_equal"] = bool(torch.equal(mapped.images[idx[:256]], train.images[idx[:256]]))

    def batches_ms(images) -> float:
        t = time.perf_counter()
        for k in range(0, len(idx), batch):
            images[idx[k:k + batch]]
        return 1000 * (time.perf_counter() - t) / 64

    r["batch_ram_ms"], r["batch_mapped_ms"] = batches_ms(train.images), batches_ms(mapped.images)

    # the Overview page's engine calls: first (nothing scanned yet), then reopened (a fresh process state)
    def overview() -> None:
        s = open_dataset(str(root))
        s.counts()
        s.source_counts()
        size_summary(image_size_stats(s))
        sample_images(s, 6, 160)
        find_duplicates(s)

    r["overview_first_s"], _ = _timed(overview)
    set_default_cache(ImageCache(cache_dir))
    r["overview_reopen_s"], _ = _timed(overview)
    # the duplicate check alone, cold (a fresh cache: every file hashed), and near duplicates (a 32 px decode)
    fresh = ImageCache(Path(tempfile.mkdtemp(prefix="dups-", dir=cache_dir.parent)))
    r["duplicates_s"], dups = _timed(lambda: find_duplicates(src, cache=fresh))
    r["duplicate_groups"] = len(dups["groups"])
    if near:
        r["near_duplicates_s"], nd = _timed(lambda: near_duplicates(src, cache=fresh))
        r["near_duplicate_groups"] = len(nd["groups"])
    r["peak_rss"] = _mem()["VmHWM"]
    return r


# ------------------------------------------------------------------------------------- decode speed-up, leaderboard
def decode_speedup(root: Path, workdir: Path, size: int = 128) -> dict:
    """First decode of the same files with 1 and with 2 worker processes, each from a cold cache."""
    from cxrviz.data import load_split, open_dataset
    from cxrviz.data.cache import ImageCache
    from cxrviz.data.dataset import forget_splits

    src = open_dataset(str(root))
    out = {"images": len(src.files["train"])}
    for w in (1, 2):
        forget_splits()
        cache = ImageCache(Path(tempfile.mkdtemp(prefix=f"w{w}-", dir=workdir)))
        out[f"workers{w}_s"], _ = _timed(lambda: load_split(src, "train", size, cache=cache, workers=w))
    out["speedup"] = out["workers1_s"] / out["workers2_s"]
    return out


def bench_leaderboard(workdir: Path, counts=(50, 500)) -> dict:
    """``list_runs`` + the Leaderboard's tables with 50 and 500 stored runs (copies of one real tiny run,
    each its own folder with its own seed, accuracy and id), first and second time."""
    import copy
    import random

    from cxrviz.report import display_groups, display_table, leaderboard_frame
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    base = train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, batch_size=32, seed=0))
    rnd = random.Random(0)
    out = {}
    for n in counts:
        root = workdir / f"runs-{n}"
        have = len(list(root.iterdir())) if root.is_dir() else 0
        for i in range(have, n):
            r = copy.copy(base)
            r.config = {**base.config, "seed": i, "arch": rnd.choice(["lenet5", "resnet18"])}
            r.evaluation = {**base.evaluation, "accuracy": rnd.uniform(0.5, 0.95)}
            save_run(r, root=root, run_id=f"{r.config['arch']}-32px-s{i}-bench-{i:05d}")

        def board() -> None:
            runs, _ = list_runs(root)
            leaderboard_frame(runs)
            leaderboard_frame(runs, groups=True)
            display_table(runs)
            display_groups(runs)

        out[f"runs{n}_first_s"], _ = _timed(board)
        out[f"runs{n}_again_s"], _ = _timed(board)
    return out


# ------------------------------------------------------------------------------------- the whole benchmark
ROWS = [("first decode (s)", "first_decode_s"), ("cache reload (s)", "reload_s"),
        ("peak RAM (MB)", "peak_rss"), ("RAM in training (MB)", "peak_rss_training"),
        ("RAM in training above the cache (MB)", "training_over_cache"),
        ("ResNet-18 epoch, projected (s)", "epoch_projected_s"), ("Overview first (s)", "overview_first_s"),
        ("Overview reopened (s)", "overview_reopen_s"), ("duplicate check (s)", "duplicates_s"),
        ("near duplicates (s)", "near_duplicates_s"), ("batch from memmap (ms)", "batch_mapped_ms"),
        ("batch from RAM (ms)", "batch_ram_ms"), ("decoded cache (MB)", "cache_bytes")]


def run_scale(scales=SCALES, workdir: str | None = None, out: str | None = None, near: bool = True,
              log=print, px: int = 1024, size: int = 128, steps: int = 6, runs=(50, 500), reuse: bool = False,
              derive: bool = True) -> dict:
    """Every size in turn. ``derive``: the larger sets reuse the smallest set's pixels (byte-unique files, see
    :func:`derive_scale_dataset`); ``reuse``: keep a size's stored measurement if there is one."""
    workdir = Path(workdir or Path(tempfile.gettempdir()) / "cxrviz-scale")
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"scales": list(scales), "workdir": str(workdir), "results": {}}
    first = workdir / f"data-{min(scales)}"
    report["derived_from"] = str(first) if derive else None
    for n in scales:
        root = workdir / f"data-{n}"
        log(f"scale {n}: writing the dataset ...")
        report.setdefault("generate_s", {})[str(n)], _ = _timed(
            lambda: write_scale_dataset(root, n, log=log, px=px) if n == min(scales) or not derive
            else derive_scale_dataset(root, n, first, log=log))
        cache_dir = workdir / f"cache-{n}-{int(time.time())}"
        res = workdir / f"result-{n}.json"
        if reuse and res.exists():
            log(f"scale {n}: stored measurement {res}")
            report["results"][str(n)] = json.loads(res.read_text())
            continue
        log(f"scale {n}: measuring in a fresh process ...")
        cmd = [sys.executable, "-m", "cxrviz.bench_scale", "measure", str(root), str(cache_dir), str(res),
               "--size", str(size), "--steps", str(steps)]
        if not near:
            cmd.append("--no-near")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"scale {n}: measurement failed: {p.stderr.strip().splitlines()[-1:]}")
        report["results"][str(n)] = json.loads(res.read_text())
        log("   " + json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                for k, v in report["results"][str(n)].items()}))
    # on the largest set: starting the worker processes (~0.5 s) is noise there, as in real use
    log(f"decode speed-up on {max(scales)} images, 1 vs 2 workers ...")
    report["speedup"] = decode_speedup(workdir / f"data-{max(scales)}", workdir, size)
    log("   " + json.dumps(report["speedup"]))
    log(f"leaderboard with {' and '.join(map(str, runs))} runs ...")
    report["leaderboard"] = bench_leaderboard(workdir, runs)
    log("   " + json.dumps(report["leaderboard"]))
    path = Path(out) if out else Path("bench-results") / f"bench-scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(path, report)
    report["json_path"] = str(path)
    return report


def _fmt(key: str, v: float) -> str:
    return f"{v / 2**20:.0f}" if key in ("peak_rss", "peak_rss_training", "cache_bytes", "training_over_cache") \
        else f"{v:.2f}"


def format_scale(r: dict) -> str:
    ns = [n for n in map(str, r["scales"]) if n in r["results"]]
    res = r["results"]
    head = "| | " + " | ".join(f"{int(n):,} images" for n in ns) + " | growth per step (data: " + \
        " → ".join(f"×{int(b) / int(a):.0f}" for a, b in zip(ns, ns[1:])) + ") |"
    lines = [head, "|---" * (len(ns) + 2) + "|"]
    for label, key in ROWS:
        vals = [res[n].get(key) for n in ns]
        if any(v is None for v in vals):
            continue
        growth = " → ".join(f"×{b / a:.1f}" if a else "–" for a, b in zip(vals, vals[1:]))
        lines.append(f"| {label} | " + " | ".join(_fmt(key, v) for v in vals) + f" | {growth} |")
    s = r.get("speedup")
    if s:
        lines.append(f"\nFirst decode of {s['images']} training images of ~1 024 px: {s['workers1_s']:.1f} s with 1 "
                     f"worker, {s['workers2_s']:.1f} s with 2: ×{s['speedup']:.2f} (goal ≥ ×1.7).")
    lb = r.get("leaderboard")
    if lb:
        ns_ = sorted(int(k[4:-8]) for k in lb if k.endswith("_first_s"))
        parts = [f"{n} runs {lb[f'runs{n}_first_s']:.2f} s (again {lb[f'runs{n}_again_s']:.2f} s)" for n in ns_]
        growth = lb[f"runs{ns_[-1]}_first_s"] / lb[f"runs{ns_[0]}_first_s"]
        lines.append(f"Leaderboard (list_runs + tables): {', '.join(parts)}: ×{growth:.1f} for "
                     f"×{ns_[-1] / ns_[0]:.0f} runs (goal ≤ 2 s at 500).")
    lines.append(f"\nJSON: {r.get('json_path', '-')}")
    return "\n".join(lines)


def main(args) -> int:
    r = run_scale(args.scales or SCALES, args.workdir, args.out, near=not args.no_near,
                  log=lambda s: print(s, flush=True), reuse=getattr(args, "reuse", False))
    print()
    print(format_scale(r))
    return 0


if __name__ == "__main__":  # the per-size measurement runs here, in a fresh process
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["measure"])
    ap.add_argument("root")
    ap.add_argument("cache")
    ap.add_argument("out")
    ap.add_argument("--no-near", action="store_true")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    result = measure(Path(a.root), Path(a.cache), size=a.size, steps=a.steps, near=not a.no_near)
    Path(a.out).write_text(json.dumps(result))
