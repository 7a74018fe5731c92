"""The trainer on real data at small sizes: callbacks, stop, determinism, GoogLeNet aux losses, storage."""
import threading
import time

import pytest
import torch

from cxrviz.runs import list_runs, load_model, save_run
from cxrviz.train import ConfigError, TrainConfig, lr_lambda, train


def tiny(real_data, **kw):
    base = dict(arch="lenet5", data=str(real_data), img_size=48, epochs=2, batch_size=32, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_trains_reports_and_stores(real_data, tmp_path):
    events = []
    r = train(tiny(real_data, arch="resnet18"), callback=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "data" and "start" in kinds and kinds[-1] == "end"
    batches = [e for e in events if e.kind == "batch"]
    epochs = [e for e in events if e.kind == "epoch"]
    assert len(batches) == 2 * (r.dataset["train_n"] // 32) and len(epochs) == 2
    assert r.dataset["val_n"] == 37  # 15 % of 111 + 70 + 70 training images, stratified
    assert all(e.loss is not None and e.eta is not None and e.eta >= 0 for e in batches)
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr"} <= set(epochs[-1].metrics)
    assert "test_acc" not in epochs[-1].metrics  # the test split is scored once, at the end
    assert r.status == "done" and len(r.history) == 2
    ev = r.evaluation
    assert ev["n"] == 66 and 0 <= ev["accuracy"] <= 1 and ev["ci_low"] <= ev["accuracy"] <= ev["ci_high"]
    assert set(ev["per_class"]) == {"Covid", "Normal", "Viral Pneumonia"} and ev["latency_ms"] > 0
    assert len(r.predictions["probs"]) == 66 and len(r.predictions["paths"]) == 66
    run = save_run(r, root=tmp_path)
    runs, problems = list_runs(tmp_path)
    assert [x.id for x in runs] == [run.id] and not problems
    model, pre = load_model(runs[0])
    assert not model.training and pre.mean == pytest.approx(r.norm["mean"])


def test_cpu_runs_are_repeatable(real_data):
    a = train(tiny(real_data, epochs=1, seed=3))
    b = train(tiny(real_data, epochs=1, seed=3))
    c = train(tiny(real_data, epochs=1, seed=4))
    assert a.batch_losses == b.batch_losses
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.batch_losses != c.batch_losses


def test_googlenet_trains_with_aux_heads(real_data):
    r = train(tiny(real_data, arch="googlenet", img_size=64, epochs=1, batch_size=16))
    assert r.status == "done" and any(k.startswith("aux1.") for k in r.state_dict)


def test_stop_between_batches_within_a_second(real_data):
    stop = threading.Event()
    seen = {}

    def cb(p):
        if p.kind == "batch" and p.step == 2 and "t" not in seen:
            seen["t"] = time.perf_counter()
            stop.set()

    r = train(tiny(real_data, arch="resnet18", img_size=64, epochs=20), callback=cb, stop=stop)
    assert r.status == "stopped" and time.perf_counter() - seen["t"] < 1.0 + r.timings["eval_s"]
    assert r.history == [] and r.evaluation is None  # stopped inside epoch 1: no full epoch yet


def test_stop_mid_batch_via_hooks(real_data):
    """A stop lands inside a long forward/backward pass, not after it."""
    stop = threading.Event()
    t = {}

    def cb(p):
        if p.kind == "start":
            threading.Timer(0.3, lambda: (t.setdefault("set", time.perf_counter()), stop.set())).start()
        if p.kind == "end":
            t["end"] = time.perf_counter()

    r = train(tiny(real_data, arch="vgg11", img_size=128, epochs=5, batch_size=64), callback=cb, stop=stop)
    assert r.status == "stopped" and r.history == []
    # one VGG-11 step on 64 images at 128 px takes several seconds on a CPU; the stop lands inside it
    # (the bound is loose because test machines are shared and noisy)
    assert t["end"] - t["set"] < 2.0


def test_stop_after_epoch_keeps_partial_history(real_data):
    stop = threading.Event()

    def cb(p):
        if p.kind == "epoch" and p.epoch == 1:
            stop.set()

    r = train(tiny(real_data, epochs=5), callback=cb, stop=stop)
    assert r.status == "stopped" and len(r.history) == 1 and r.evaluation["epoch"] == 1


@pytest.mark.parametrize("kw,msg", [
    (dict(arch="alexnet", img_size=32), "below AlexNet's minimum of 63 px"),
    (dict(lr=-1.0), "learning rate must be a positive number"),
    (dict(optimizer="lion"), "optimizer must be one of"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(arch="nope"), "unknown architecture"),
])
def test_config_errors(real_data, kw, msg):
    with pytest.raises((ConfigError, KeyError), match=msg):
        tiny(real_data, **kw).resolved()


def test_recipe_fills_defaults():
    c = TrainConfig(arch="alexnet").resolved()
    assert (c.optimizer, c.lr, c.img_size, c.epochs, c.augment) == ("adam", 1e-4, 128, 20, "none")
    assert TrainConfig(arch="resnet18", lr=0.05).resolved().lr == 0.05


def test_lr_schedule_warmup_and_cosine():
    c = TrainConfig(arch="resnet18", epochs=10, warmup_epochs=1).resolved()
    f = lr_lambda(c, 10)
    assert f(0) == pytest.approx(0.1) and f(10) == pytest.approx(1.0) and f(99) < 0.05
