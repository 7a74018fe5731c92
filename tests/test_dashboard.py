"""The logic behind the Overview and Train pages (estimate, launch, format, data.survey, the model table) and
their figures (cxrviz.plots.training, cxrviz.plots.dataset)."""

from dataclasses import replace

import numpy as np
import pytest

from cxrviz.data import image_size_stats, open_dataset
from cxrviz.data.survey import sample_images, size_summary
from cxrviz.estimate import (
    LONG_RUN_S,
    cached_speed,
    cancel_probes,
    estimate_job,
    long_run_warning,
    measure_estimate_error,
    probe_speed,
    request_probe,
    split_sizes,
    wait_for_probes,
)
from cxrviz.format import format_duration
from cxrviz.launch import QUICK_DEMO, parse_seeds, quick_demo_config
from cxrviz.models import FAMILIES, REGISTRY, build_model, count_params, measure_gflops, model_stats, model_table
from cxrviz.plots import dataset, training
from cxrviz.train import TrainConfig


@pytest.mark.parametrize("text,seeds", [("0", [0]), ("0, 1, 2", [0, 1, 2]), ("3 1 1", [1, 3]), ("0-4", [0, 1, 2, 3, 4]),
                                        ("2..3; 7", [2, 3, 7])])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text,msg", [("", "at least one"), ("1, x", "not a whole number"), ("-1", "not a whole"),
                                      ("5-2", "backwards"), ("0-99", "at most")])
def test_parse_seeds_rejects(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_seeds(text)


def test_quick_demo_config_is_valid():
    c = quick_demo_config(None).resolved()
    assert c.arch == QUICK_DEMO["arch"] and c.data is None and c.img_size == QUICK_DEMO["img_size"]


@pytest.mark.parametrize("name,size", [("lenet5", 32), ("resnet18", 64), ("googlenet", 64)])
def test_meta_device_stats_match_the_real_model(name, size):
    real = build_model(name)
    meta = model_stats(name, size)
    assert meta["params"] == count_params(real)
    assert meta["gflops"] == pytest.approx(measure_gflops(real, size), rel=1e-9)
    assert meta["has_bn"] == (name != "lenet5")


def test_catalogue_is_grouped_by_family():
    rows = model_table(64)
    assert {r["name"] for r in rows} == set(REGISTRY)
    fams = [r["family"] for r in rows]
    assert fams == sorted(fams, key=FAMILIES.index)
    vgg19 = next(r for r in rows if r["name"] == "vgg19")
    assert vgg19["depth"] == 19 and vgg19["params"] > 100e6 and vgg19["gflops"] > 1


def test_estimate_from_a_measured_step_scales_with_the_work():
    n_train, n_test = split_sizes(open_dataset(None))
    one = estimate_job(TrainConfig(arch="lenet5", img_size=32, epochs=1), n_train, n_test, probe="sync")
    assert one.measured and one.seconds > 1.0  # measured steps plus the fixed second (no bound on speed)
    four = estimate_job(TrainConfig(arch="lenet5", img_size=32, epochs=4), n_train, n_test, probe="off")
    assert four.measured  # reuses the cached probe
    assert four.seconds - one.seconds == pytest.approx(3 * one.epoch_seconds)  # + the test split, scored once
    big = estimate_job(TrainConfig(arch="lenet5", img_size=128, epochs=1), n_train, n_test, probe="off")
    assert big.epoch_seconds > 4 * one.epoch_seconds  # 16x the pixels
    # the warning is about the total, not this machine's speed: just under the limit, none; just over, one
    assert long_run_warning([replace(one, seconds=LONG_RUN_S)]) is None
    assert long_run_warning([replace(one, seconds=LONG_RUN_S / 2)] * 3) is not None


def test_a_tiny_models_probe_does_not_skew_other_estimates():
    n_train, n_test = split_sizes(open_dataset(None))
    cfg = TrainConfig(arch="resnet101", img_size=128, device="cpu")
    before = estimate_job(cfg, n_train, n_test, probe="off")
    estimate_job(TrainConfig(arch="lenet5", img_size=32, epochs=1, device="cpu"), n_train, n_test, probe="sync")
    after = estimate_job(cfg, n_train, n_test, probe="off")
    assert not after.measured and after.seconds == before.seconds


def test_the_probe_times_steps_in_the_precision_the_job_trains_in():
    """A bf16 job is timed in bf16 autocast (an fp32 probe made VGG-19's 11-minute job read 20 minutes), seen in
    the dtype of the probe's activations through a process-wide forward hook; an fp32 job is timed in fp32."""
    import torch

    seen: list[torch.dtype] = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(o.dtype) if isinstance(m, torch.nn.Conv2d) else None)
    try:
        fp = probe_speed("lenet5", "sgd", "cpu", img_size=32, precision="fp32")
        fp_dtypes, seen[:] = set(seen), []
        bf = probe_speed("lenet5", "sgd", "cpu", img_size=32, precision="bf16")
        bf_dtypes = set(seen)
    finally:
        hook.remove()
    assert (fp.precision, bf.precision) == ("fp32", "bf16")
    assert cached_speed("lenet5", "cpu", "bf16") is bf and cached_speed("lenet5", "cpu", "fp32") is fp
    assert fp_dtypes == {torch.float32} and bf_dtypes == {torch.bfloat16}
    # without a probe in that precision, the rough guess expects bf16's faster steps where the job will use bf16
    from cxrviz import estimate
    from cxrviz.precision import cpu_has_bf16

    assert estimate._fallback_rates("cpu-unprobed", "bf16")[0] < 0.7 * estimate._fallback_rates("cpu-unprobed")[0]
    assert estimate._likely_precision("auto", "cpu") == ("bf16" if cpu_has_bf16() else "fp32")
    assert estimate._likely_precision("fp32", "cuda:0") == "fp32"
    assert estimate._likely_precision("auto", "cuda:0") == "bf16"


def test_long_run_warning_for_vgg19_at_224_on_a_cpu():
    n_train, n_test = split_sizes(open_dataset(None))
    est = estimate_job(TrainConfig(arch="vgg19", img_size=224, device="cpu"), n_train, n_test, probe="off")
    assert est.seconds > LONG_RUN_S and est.long
    msg = long_run_warning([est])
    assert "VGG-19 at 224 px on a CPU" in msg and "Long run" in msg


def test_cancelled_probe_caches_nothing():
    assert request_probe("resnet34", "sgd") is None  # starts timing in the background
    cancel_probes()
    assert wait_for_probes(120)
    assert cached_speed("resnet34") is None


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 75, 3725, None)] == ["4 s", "1 min 15 s", "1 h 02 min", "–"]


def test_sample_images_synthetic():
    src = open_dataset(None)
    grid = sample_images(src, per_class=4, size=48)
    assert list(grid) == src.classes
    for items in grid.values():
        assert len(items) == 4
        assert all(img.shape == (48, 48) and img.dtype == np.uint8 for img, _ in items)


def test_sample_images_and_sizes_of_a_folder(synthetic_folder):
    src = open_dataset(synthetic_folder)
    grid = sample_images(src, per_class=3, size=64)
    assert all(len(v) == 3 for v in grid.values())
    rows = image_size_stats(src)
    table = size_summary(rows)
    assert {(r["split"], r["class"]) for r in table} == {(s, c) for s in ("train", "test") for c in src.classes}
    assert sum(r["files"] for r in table) == len(rows)
    assert all(r["width min"] <= r["width median"] <= r["width max"] for r in table)


# ------------------------------------------------------------------------------------------ charts
def _rows(n, wall0=1.7e9):
    return [{"epoch": i, "train_loss": 1 / i, "test_loss": 1.2 / i, "train_acc": 0.3 + 0.05 * i,
             "test_acc": 0.25 + 0.05 * i, "wall": wall0 + i} for i in range(1, n + 1)]


def test_history_figure_single_job():
    s = training.Series("LeNet-5 32px e3 s0", _rows(3), [0.5, 1.0, 1.5], [1.1, 1.0, 0.9])
    fig = training.history_figure(s)
    kinds = [t.meta["kind"] for t in fig.data]
    assert kinds == ["batch_loss", "train_loss", "test_loss", "train_acc", "test_acc"]
    acc = fig.data[-1]
    assert list(acc.x) == [1, 2, 3] and list(acc.y) == pytest.approx([30, 35, 40])  # percent
    assert [c[0] for c in acc.customdata] == [1.7e9 + 1, 1.7e9 + 2, 1.7e9 + 3]  # epoch-end wall time
    assert acc.xaxis == "x2"


def test_history_figure_overlay_and_empty():
    a = training.Series("run A", _rows(3))
    b = training.Series("run B", _rows(5))
    fig = training.history_figure([a, b], title="Overlay")
    assert len(fig.data) == 8 and {t.meta["series"] for t in fig.data} == {"run A", "run B"}
    assert [t.name for t in fig.data if t.showlegend] == ["run A", "run B"]
    empty = training.history_figure(training.Series("queued"))
    assert empty.layout.annotations[-1].text.startswith("waiting")


def test_series_from_a_live_job_and_a_stored_run(tmp_path):
    from cxrviz.jobs import JobRegistry
    from cxrviz.runs import list_runs

    reg = JobRegistry(root=tmp_path)
    jid, = reg.submit([TrainConfig(arch="lenet5", img_size=32, epochs=2)])
    assert reg.wait(120)
    live = training.series_from_snapshot(reg.get(jid))
    assert len(live.history) == 2 and len(live.batch_x) == len(live.batch_losses) > 0
    assert live.batch_x[-1] == pytest.approx(2.0)
    run = list_runs(tmp_path)[0][0]
    stored = training.series_from_run(run, batches=True)
    assert [r["epoch"] for r in stored.history] == [1, 2] and stored.status == "done"
    fig = training.history_figure([live, stored])
    assert len(fig.data) == 8


def test_counts_and_size_figures():
    fig = dataset.counts_figure({"train": {"a": 3, "b": 4}, "test": {"a": 1, "b": 2}}, synthetic=True)
    assert [t.name for t in fig.data] == ["train", "test"] and "synthetic" in fig.layout.title.text
    rows = [{"split": "train", "class": "a", "width": 10, "height": 20, "mode": "L", "file": "x.png"},
            {"split": "test", "class": "b", "width": 30, "height": 40, "mode": "RGB", "file": "y.png"}]
    fig = dataset.size_scatter_figure(rows)
    assert [t.name for t in fig.data] == ["a", "b"]


def test_estimate_error_is_measured_against_a_real_training():
    """The bench's calibration check: one tiny real training, its estimate made just before, and the ratio."""
    src = open_dataset(None)
    row, = measure_estimate_error([TrainConfig(arch="lenet5", img_size=32, epochs=1)], src, log=lambda s: None)
    assert row["arch"] == "lenet5" and row["n_train"] == split_sizes(src)[0]
    assert row["estimate_s"] > 0 and row["measured_s"] > 0
    assert row["ratio"] == pytest.approx(row["measured_s"] / row["estimate_s"])
