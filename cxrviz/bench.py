"""``python -m cxrviz bench [--quick]``: side-by-side measurements in one run, printed as a table and
written as JSON.

a. input pipeline: per-epoch time of cxrviz's decode-once cached path vs a naive torchvision
   ``ImageFolder`` + PIL resize pipeline over the same originals;
b. trainer overhead: images/s of the deck's four models in the cxrviz trainer vs a bare
   forward/backward/step loop over the same model, batch size and input size;
c. end to end: ResNet-18, 20 epochs, 128 px on the real data, whole run including the cache build;
d. app latencies: upload -> four-model prediction, four-model GradCAM, and the job registry's lag between
   an epoch's end and its point being visible to the live chart;
e. run-time estimate: the Train page's estimate (``cxrviz.estimate``) vs the measured time of short real runs.
Every figure is measured here, on this machine, in this run; nothing is a stored constant.

It is one module (about 425 lines) because it is one command: the five measurements write one JSON record that
``format_report`` and ``sanity_problems`` read, so a measurement and the lines that print and check it change
together.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from cxrviz.atomic import write_json

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "Covid19-dataset"


def _machine() -> dict:
    m = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
         "torch_threads": torch.get_num_threads(), "platform": platform.platform(terse=True),
         "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name(0)
    return m


# ---------------------------------------------------------------- a. input pipeline
def bench_input(data: str | None, size: int, epochs: int, batch_size: int = 32) -> dict:
    """Seconds per epoch: cxrviz (first epoch builds the cache from a cold directory) vs naive decoding."""
    from cxrviz.data import AUGMENT_LEVELS, ImageCache, augment_batch, load_split, open_dataset
    from cxrviz.data.dataset import forget_splits

    src = open_dataset(data)
    if src.synthetic:
        return {"skipped": "needs a real dataset folder (originals to decode)"}
    g = torch.Generator().manual_seed(0)
    aug = AUGMENT_LEVELS["standard"]

    def cached_epoch(cache: ImageCache) -> float:
        t = time.perf_counter()
        s = load_split(src, "train", size, cache=cache)
        perm = torch.randperm(len(s), generator=g)
        for i in range(0, len(s), batch_size):
            x = s.images[perm[i:i + batch_size]].float().div_(255)
            augment_batch(x, aug, g)
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as d:
        forget_splits("train", size)
        cache = ImageCache(d)
        ours = [cached_epoch(cache) for _ in range(epochs)]
        decodes = cache.decodes

    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(), transforms.Resize((size, size)), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(src.root / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    naive = []
    for _ in range(max(2, min(epochs, 3))):
        t = time.perf_counter()
        for _x, _y in loader:
            pass
        naive.append(time.perf_counter() - t)
    later = statistics.median(ours[1:]) if len(ours) > 1 else float("nan")
    naive_epoch = statistics.median(naive)
    return {"images": len(ds), "size": size, "cxrviz_first_epoch_s": ours[0], "cxrviz_later_epoch_s": later,
            "cxrviz_decodes": decodes, "naive_epoch_s": naive_epoch,
            "speedup_after_first": naive_epoch / later if later else float("nan"), "goal_speedup": 50}


# ---------------------------------------------------------------- b. trainer overhead
def bench_overhead(arch: str, size: int, steps: int, batch_size: int, device: str, data: str | None) -> dict:
    """Images/s of training steps: the cxrviz trainer vs a bare loop over the same model, batch size, input
    size and optimiser. On the CPU both are timed per step (the trainer between its batch events, after one
    warm-up step). On a GPU the trainer syncs once per epoch and emits no batch events, so both are timed
    per epoch of the same number of steps (the first epoch is warm-up), each with one sync at its end."""
    from cxrviz.data import load_split, open_dataset
    from cxrviz.models import get_spec
    from cxrviz.train import TrainConfig, make_optimizer, select_device, train

    src = open_dataset(data)
    dev = select_device(device)
    cuda = dev.type == "cuda"
    epochs = steps + 1 if cuda else 50
    c = TrainConfig(arch=arch, data=data, img_size=size, epochs=epochs, batch_size=batch_size, device=device,
                    precise_bn=False).resolved()
    n_train = len(load_split(src, "train", size))
    bs = min(batch_size, n_train)
    per_epoch = n_train // bs
    reps = per_epoch if cuda else 1  # bare-loop steps per timing: an epoch's worth on a GPU, one on the CPU
    marks: list[float] = []
    epoch_times: list[float] = []
    stop = threading.Event()

    def cb(p):
        if p.kind == "batch":
            marks.append(time.perf_counter())
            if len(marks) > steps:
                stop.set()
        elif p.kind == "epoch":
            epoch_times.append(p.metrics["train_s"])

    train(c, callback=cb, stop=stop, source=src)
    if cuda:
        trainer_step = statistics.median(epoch_times[1:]) / per_epoch
    else:  # steps 2..N+1 (the first is warm-up)
        trainer_step = statistics.median(b - a for a, b in zip(marks, marks[1:]))

    torch.manual_seed(0)
    model = get_spec(arch).build(3, 1).to(dev).train()
    opt = make_optimizer(model, c)
    x = torch.randn(bs, 1, size, size, device=dev)
    y = torch.randint(0, 3, (bs,), device=dev)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        for _ in range(reps):
            step()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append((time.perf_counter() - t) / reps)
    bare_step = statistics.median(times)
    return {"arch": arch, "size": size, "batch": bs, "steps": steps * reps,
            "trainer_img_s": bs / trainer_step, "bare_img_s": bs / bare_step,
            "overhead_pct": 100 * (trainer_step / bare_step - 1), "goal_pct": 10}


# ---------------------------------------------------------------- c. end to end
def bench_end_to_end(data: str | None, arch: str, size: int, epochs: int, device: str) -> dict:
    from cxrviz.data import ImageCache, open_dataset
    from cxrviz.data.cache import set_default_cache
    from cxrviz.data.dataset import forget_splits
    from cxrviz.train import TrainConfig, train

    src = open_dataset(data)
    with tempfile.TemporaryDirectory() as d:
        forget_splits()
        old = set_default_cache(ImageCache(d))  # cold: the run pays for decoding every original once
        try:
            t = time.perf_counter()
            r = train(TrainConfig(arch=arch, data=data, img_size=size, epochs=epochs, device=device), source=src)
            wall = time.perf_counter() - t
        finally:
            set_default_cache(old)
            forget_splits()
    return {"arch": arch, "size": size, "epochs": epochs, "dataset": src.label, "wall_s": wall,
            "data_s": r.timings["data_s"], "train_s": r.timings["train_s"], "eval_s": r.timings["eval_s"],
            "test_acc": r.evaluation["accuracy"] if r.evaluation else None, "goal_s": 216}


# ---------------------------------------------------------------- d. app latencies
def bench_app(data: str | None, size: int, archs: list[str], repeats: int) -> dict:
    """Warm, through the same code path as the Compare / Explain pages: models loaded once (the app's
    cache), then uploaded bytes -> ``ImageInput`` decode -> ``predict_image`` for every model, and
    ``explain_runs`` (GradCAM) for every model. Untrained weights: the cost does not depend on their values."""
    import io

    from PIL import Image

    from cxrviz.data import decode_image, open_dataset, synthetic
    from cxrviz.explain import explain_runs
    from cxrviz.models import get_spec
    from cxrviz.predict import predict_image
    from cxrviz.runs import Run
    from cxrviz.train import Preprocess

    src = open_dataset(data)
    if src.synthetic:
        buf = io.BytesIO()
        Image.fromarray(synthetic.make_split("test", 1024, n_per_class=1)[0][0]).save(buf, "PNG")
        blob, name = buf.getvalue(), "synthetic.png"
    else:
        big = max((p for p, _ in src.files["test"]), key=lambda p: p.stat().st_size)
        blob, name = big.read_bytes(), big.name
    loaded = {}
    runs = []
    for arch in archs:
        meta = {"config": {"arch": arch, "img_size": size, "in_channels": 1, "epochs": 0, "seed": 0},
                "dataset": {"classes": src.classes}, "display": get_spec(arch).display}
        run = Run(f"bench-{arch}", Path("."), meta)
        loaded[run.id] = (get_spec(arch).build(len(src.classes), 1).eval(), Preprocess(0.5, 0.25, 1))
        runs.append(run)
    loader = lambda r: loaded[r.id]  # noqa: E731 - the app's ModelCache hit

    def predict_all() -> None:
        predict_image(decode_image(blob, name=name), runs, model_loader=loader)

    def cam_all() -> None:
        exs = explain_runs(decode_image(blob, name=name), runs, model_loader=loader, method="GradCAM")
        bad = [e.error for e in exs if e.error]
        if bad:
            raise RuntimeError(bad[0])

    out = {"archs": archs, "size": size, "upload": f"{name} ({len(blob) / 1e6:.1f} MB)"}
    for key, fn in (("predict_all_s", predict_all), ("gradcam_all_s", cam_all)):
        fn()  # warm-up (as in the app, after the first request)
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[key] = statistics.median(ts)
    out["goal_predict_s"], out["goal_gradcam_s"] = 1.0, 3.0
    out["registry_lag_s"] = _registry_lag()
    return out


def _registry_lag() -> float:
    """Median delay between an epoch's end (the trainer emitting its "epoch" event, inside the worker) and
    another thread seeing that epoch in a registry snapshot. Event-driven: the reader wakes on a
    threading.Event set right after the registry took the update, so no poll period is added or reported."""
    from cxrviz.jobs import JobRegistry
    from cxrviz.train import TrainConfig, train

    ended: dict[int, float] = {}
    updated = threading.Event()

    def timed_train(config, callback=None, stop=None):
        def cb(p):
            if p.kind == "epoch":
                ended[p.epoch] = time.perf_counter()
            callback(p)  # the registry's own callback (Job.on_progress)
            if p.kind == "epoch":
                updated.set()
        return train(config, callback=cb, stop=stop)

    lags: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as d:
        reg = JobRegistry(root=d, trainer=timed_train)
        (jid,) = reg.submit([TrainConfig(arch="lenet5", img_size=32, epochs=4, batch_size=32)])
        while len(lags) < 4:
            if not updated.wait(120):
                break  # the job failed or hangs: report what was seen
            updated.clear()
            for row in reg.get(jid).history:
                lags.setdefault(row["epoch"], time.perf_counter() - ended[row["epoch"]])
        reg.wait(60)
    return statistics.median(lags.values()) if lags else float("nan")


# ---------------------------------------------------------------- sanity (bench --quick in CI)
SANE = {"min_cache_speedup": 5.0, "min_trainer_vs_bare": 0.25}  # 0.5 failed on noise alone: 2 cores, load 18


def sanity_problems(r: dict) -> list[str]:
    """Ratios that would mean a regression, not a slow machine (both sides are measured side by side in the
    same run): the decode-once cache must beat the naive pipeline by > 5x after the first epoch, and the trainer
    must keep at least half the images/s of a bare loop over the same model. Empty list: sane."""
    out = []
    a = r.get("input", {})
    if "skipped" not in a:
        sp = a.get("speedup_after_first", float("nan"))
        if not sp > SANE["min_cache_speedup"]:
            out.append(f"input pipeline: cache speed-up {sp:.1f}x is not above {SANE['min_cache_speedup']:.0f}x")
    for o in r.get("overhead", []):
        ratio = o["trainer_img_s"] / o["bare_img_s"] if o.get("bare_img_s") else float("nan")
        if not ratio >= SANE["min_trainer_vs_bare"]:
            out.append(f"trainer overhead: {o['arch']} @ {o['size']}px runs at {ratio:.2f} of a bare loop's images/s "
                       f"(below {SANE['min_trainer_vs_bare']})")
    e = r.get("end_to_end", {})
    if e.get("test_acc") is None:
        out.append("end to end: the run was not evaluated")
    lag = r.get("app", {}).get("registry_lag_s", float("nan"))
    if not lag >= 0:
        out.append("app: the epoch -> registry latency was not measured")
    return out


# ---------------------------------------------------------------- driver
def run_bench(quick: bool, data: str | None, device: str = "auto", out: str | None = None,
              log=print) -> dict:
    from cxrviz.data import open_dataset
    from cxrviz.estimate import measure_estimate_error
    from cxrviz.train import TrainConfig

    if data is None and DEFAULT_DATA.is_dir():
        data = str(DEFAULT_DATA)
    report: dict = {"quick": quick, "machine": _machine(), "data": data or "synthetic",
                    "started": time.strftime("%F %T")}
    deck = ["alexnet", "vgg19", "googlenet", "resnet18"]
    if quick:
        plan = dict(input=(64, 3), overhead=[("resnet18", 64), ("alexnet", 64)], steps=3, e2e=("lenet5", 48, 2),
                    app=(["resnet18", "alexnet"], 96, 2), estimate=[("lenet5", 32, 1), ("resnet18", 48, 1)])
    else:
        plan = dict(input=(128, 4), overhead=[(a, s) for s in (128, 224) for a in deck], steps=4,
                    e2e=("resnet18", 128, 20), app=(deck, 224, 5),
                    estimate=[("resnet18", 128, 3), ("googlenet", 96, 2), ("alexnet", 128, 3)])
    t0 = time.perf_counter()
    log("a. input pipeline ...")
    report["input"] = bench_input(data, *plan["input"])
    log("b. trainer overhead ...")
    report["overhead"] = []
    for arch, size in plan["overhead"]:
        log(f"   {arch} @ {size}px")
        report["overhead"].append(bench_overhead(arch, size, plan["steps"], 32, device, data))
    arch, size, epochs = plan["e2e"]
    log(f"c. end to end: {arch}, {epochs} epochs, {size}px ...")
    report["end_to_end"] = bench_end_to_end(data, arch, size, epochs, device)
    log("d. app latencies ...")
    report["app"] = bench_app(data, plan["app"][1], plan["app"][0], plan["app"][2])
    log("e. run-time estimate ...")
    report["estimate"] = measure_estimate_error(  # the Train page's estimate vs short real trainings
        [TrainConfig(arch=a, data=data, img_size=s, epochs=e, device=device) for a, s, e in plan["estimate"]],
        open_dataset(data), log=log)
    from .bench_external import bench_external

    log("f. external validation ...")
    report["external"] = bench_external(data, *((["lenet5"], 48, 12) if quick else (deck, 128, 100)))
    report["total_s"] = time.perf_counter() - t0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(out) if out else Path("bench-results") / f"bench{'-quick' if quick else ''}-{stamp}.json"
    write_json(path, report)
    report["json_path"] = str(path)
    return report


def format_report(r: dict) -> str:
    m = r["machine"]
    lines = [f"cxrviz bench{' --quick' if r['quick'] else ''} — {m['processor']}, {m['cpu_count']} CPUs, "
             f"torch {m['torch']} ({m['torch_threads']} threads){', ' + m['gpu'] if 'gpu' in m else ''}; "
             f"data: {r['data']}", ""]
    a = r["input"]
    if "skipped" in a:
        lines.append(f"a. input pipeline: skipped ({a['skipped']})")
    else:
        lines += [f"a. input pipeline ({a['images']} train images, {a['size']} px), seconds per epoch:",
                  f"   cxrviz first epoch (cold cache, {a['cxrviz_decodes']} decodes) {a['cxrviz_first_epoch_s']:8.3f}",
                  f"   cxrviz later epochs (cached + batched augmentation) {a['cxrviz_later_epoch_s']:8.4f}",
                  f"   naive ImageFolder + PIL resize, every epoch          {a['naive_epoch_s']:8.3f}",
                  f"   speed-up after the first epoch: {a['speedup_after_first']:.0f}x (goal >= {a['goal_speedup']}x)"]
    lines += ["", "b. trainer overhead (training steps, images/s):",
              f"   {'model':<10}{'px':>5}{'batch':>7}{'trainer':>10}{'bare loop':>11}{'overhead':>10}"]
    for o in r["overhead"]:
        lines.append(f"   {o['arch']:<10}{o['size']:>5}{o['batch']:>7}{o['trainer_img_s']:>10.1f}"
                     f"{o['bare_img_s']:>11.1f}"
                     f"{o['overhead_pct']:>9.1f}%")
    lines.append("   (goal: <= 10 % overhead)")
    e = r["end_to_end"]
    acc = f"{100 * e['test_acc']:.1f} %" if e["test_acc"] is not None else "n/a"
    lines += ["", f"c. end to end: {e['arch']}, {e['epochs']} epochs, {e['size']} px, {e['dataset']}, cold cache: "
              f"{e['wall_s']:.1f} s = {e['wall_s'] / 60:.2f} min (data {e['data_s']:.1f} s, "
              f"train {e['train_s']:.1f} s, "
              f"eval {e['eval_s']:.1f} s), test acc {acc} (goal <= {e['goal_s'] / 60:.1f} min)"]
    p = r["app"]
    lines += ["", f"d. app latencies ({', '.join(p['archs'])} at {p['size']} px, warm; upload {p['upload']}):",
              f"   upload -> all predictions {p['predict_all_s']:.3f} s (goal <= {p['goal_predict_s']:.0f} s)",
              f"   GradCAM of all models     {p['gradcam_all_s']:.3f} s (goal <= {p['goal_gradcam_s']:.0f} s)",
              f"   epoch end -> visible in a registry snapshot: {1000 * p['registry_lag_s']:.2f} ms (event-timed) "
              "(+ up to 1 s fragment period in the page)",
              ""]
    lines += ["e. run-time estimate (Train page) vs measured job time (warm cache):",
              f"   {'model':<11}{'px':>5}{'epochs':>7}{'estimate s':>12}{'measured s':>12}{'ratio':>7}"]
    for x in r.get("estimate", []):
        lines.append(f"   {x['display']:<11}{x['size']:>5}{x['epochs']:>7}{x['estimate_s']:>12.1f}"
                     f"{x['measured_s']:>12.1f}{x['ratio']:>7.2f}")
    lines += ["   (ratio = measured / estimate; 1.00 is exact)",
              ""]
    if "external" in r:
        from .bench_external import format_lines

        lines += format_lines(r["external"]) + [""]
    lines += [f"total {r['total_s']:.0f} s; JSON: {r.get('json_path', '-')}"]
    return "\n".join(lines)


def main(args) -> int:
    if getattr(args, "ray", False):
        from .bench_scaleout import main as bench_ray_main

        return bench_ray_main(args)
    if getattr(args, "scale", False):
        from .bench_scale import main as scale_main

        return scale_main(args)
    if getattr(args, "precision", False):  # bench --precision: fp32 vs bf16, side by side (cxrviz/precision.py)
        from cxrviz.precision import bench_precision, format_bench

        r = bench_precision(steps=2 if args.quick else 4, log=lambda s: print(s, flush=True))
        print(format_bench(r))
        if args.out:
            Path(args.out).write_text(json.dumps(r, indent=2))
        return 0
    r = run_bench(args.quick, args.data, args.device, args.out, log=lambda s: print(s, flush=True))
    print()
    print(format_report(r))
    problems = sanity_problems(r)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0
