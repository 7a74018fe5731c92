"""Precision of training and evaluation (cxrviz/precision.py): the setting is respected and recorded, "auto"
stays fp32 where the CPU has no bf16 instructions or bf16 is not faster, and a bf16 run still learns."""
import threading

import pytest
import torch

from cxrviz import precision as prec
from cxrviz.train import ConfigError, TrainConfig, TrainSession, train

CPU = torch.device("cpu")


def _cfg(**kw):
    return TrainConfig(**{**dict(arch="lenet5", img_size=32, epochs=1, seed=0), **kw})


def _activation_dtypes(setting: str) -> set:
    """The dtypes of every convolution's output during one training epoch and one evaluation."""
    s = TrainSession(_cfg(precision=setting))
    s.setup()
    seen = set()
    for m in s.model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda mod, i, o: seen.add(o.dtype))
    s.evaluate(1, s.run_epoch(1))
    s.release()
    s.finish("done")
    return seen


def test_fp32_setting_means_no_autocast_and_bf16_setting_means_autocast():
    assert _activation_dtypes("fp32") == {torch.float32}
    assert _activation_dtypes("bf16") == {torch.bfloat16}


def test_precision_is_recorded_with_the_run():
    r = train(_cfg(precision="fp32"))
    assert r.config["precision"] == "fp32" and r.config["precision_used"] == "fp32"
    assert r.environment["precision"] == "fp32" and r.environment["channels_last"] is False
    assert "requested" in r.environment["precision_reason"]
    with pytest.raises(ConfigError, match="precision"):
        _cfg(precision="fp16").resolved()


def test_auto_stays_fp32_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(prec, "probe_bf16", lambda *a, **k: pytest.fail("no probe on a CPU without bf16"))
    p = prec.choose("auto", CPU, "resnet18", 64)
    assert p.name == "fp32" and not p.channels_last and "no bf16 instructions" in p.reason
    r = train(_cfg())  # the default is "auto"
    assert r.config["precision"] == "auto" and r.environment["precision"] == "fp32"


def test_auto_follows_the_probe_on_a_bf16_cpu(monkeypatch):
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(prec, "probe_bf16", lambda *a, **k: (False, 0.7))
    assert prec.choose("auto", CPU, "resnet18", 64).name == "fp32"
    monkeypatch.setattr(prec, "probe_bf16", lambda *a, **k: (True, 1.9))
    p = prec.choose("auto", CPU, "resnet18", 64)
    assert p.name == "bf16" and p.channels_last and "1.90x" in p.reason
    assert prec.choose("fp32", CPU, "resnet18", 64).name == "fp32"


def test_probe_is_cached_and_leaves_the_random_generators_alone(monkeypatch):
    monkeypatch.setattr(prec, "_PROBE_CACHE", {})
    torch.manual_seed(5)
    before = torch.get_rng_state()
    faster, ratio = prec.probe_bf16("lenet5", 32, steps=1)
    assert torch.equal(torch.get_rng_state(), before) and ratio > 0
    monkeypatch.setattr(prec, "_time_steps", lambda *a, **k: pytest.fail("probed twice"))
    assert prec.probe_bf16("lenet5", 32) == (faster, ratio)


def test_bf16_run_learns_keeps_fp32_weights_and_stops():
    r = train(_cfg(precision="bf16", epochs=6, ema=0.9))
    assert r.environment["precision"] == "bf16" and r.environment["channels_last"] is True
    assert all(v.dtype in (torch.float32, torch.int64) and v.is_contiguous() for v in r.state_dict.values())
    # measured: bf16 1.096 -> 0.990 in 6 epochs, fp32 1.096 -> 0.986; a model that does not learn stays near 1.10
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"] - 0.05
    assert r.history[-1]["train_acc"] > 0.5 and r.evaluation["accuracy"] > 0.5  # chance: 1/3
    stop = threading.Event()
    r = train(_cfg(precision="bf16", epochs=3), stop=stop,
              callback=lambda p: p.kind == "batch" and p.epoch == 2 and stop.set())
    assert r.status == "stopped" and len(r.history) == 1


def test_bench_measures_the_four_variants_side_by_side():
    r = prec.bench_precision(archs=("lenet5",), img_size=32, batch_size=4, steps=1)
    m = r["models"]["lenet5"]
    assert {"fp32", "fp32_cl", "bf16", "bf16_cl"} <= set(m) and all(m[k] > 0 for k in ("fp32", "bf16_cl"))
    assert "lenet5" in prec.format_bench(r) and r["cpu_bf16"] == prec.cpu_has_bf16()
