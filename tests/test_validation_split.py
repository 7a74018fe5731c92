"""The validation split: stratified by class (and source where recorded), fixed-seeded; per-epoch metrics on
validation, the test split scored once at the end on the final or best-on-validation weights."""
import threading

import pytest
import torch

from cxrviz.data.dataset import ImageSet
from cxrviz.data.validation import split_indices, split_validation
from cxrviz.train import ConfigError, TrainConfig, train


def _cfg(**kw):
    return TrainConfig(**{**dict(arch="lenet5", img_size=32, epochs=2, seed=0, precision="fp32"), **kw})


def test_split_is_stratified_by_class_and_source_and_fixed():
    labels = [0] * 40 + [1] * 20 + [2] * 10
    sources = (["a"] * 20 + ["b"] * 20) + ["a"] * 20 + ["b"] * 10
    tr, va = split_indices(labels, 0.2, seed=0, sources=sources)
    assert sorted(tr + va) == list(range(70)) and not set(tr) & set(va)
    per = {}
    for i in va:
        per[(labels[i], sources[i])] = per.get((labels[i], sources[i]), 0) + 1
    assert per == {(0, "a"): 4, (0, "b"): 4, (1, "a"): 4, (2, "b"): 2}
    assert split_indices(labels, 0.2, seed=0, sources=sources) == (tr, va)  # fixed
    assert split_indices(labels, 0.2, seed=1, sources=sources)[1] != va
    assert split_indices(labels, 0.0) == (list(range(70)), [])
    assert split_indices([0, 1, 1], 0.4)[1] == [2] or split_indices([0, 1, 1], 0.4)[1] == [1]  # singletons stay


def test_split_of_one_source_is_by_class_and_keeps_paths_aligned():
    s = ImageSet(images=torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), labels=torch.tensor([0] * 5 + [1] * 5),
                 paths=[f"p{i}" for i in range(10)], classes=["a", "b"], size=1)
    tr, va, how = split_validation(s, 0.2)
    assert how == "class" and len(va) == 2 and sorted(va.labels.tolist()) == [0, 1]
    assert all(int(va.images[i]) == int(p[1:]) for i, p in enumerate(va.paths))
    assert len(tr) == 8 and not set(tr.paths) & set(va.paths)


def test_new_runs_use_validation_per_epoch_and_test_once():
    events = []
    r = train(_cfg(), callback=events.append)
    rows = [e.metrics for e in events if e.kind == "epoch"]
    assert all("val_acc" in m and "val_loss" in m and "test_acc" not in m for m in rows)
    assert r.dataset["val_n"] > 0 and r.dataset["train_n"] + r.dataset["val_n"] == 300
    assert not set(r.dataset["val_paths"]) & set(r.predictions["paths"])
    ev = r.evaluation
    assert ev["split"] == "test" and ev["selected_on"] == "validation" and ev["epoch"] == 2 and ev["n"] == 60
    assert r.config["val_fraction"] == 0.15 and r.config["select"] == "final"


def test_zero_fraction_is_the_old_behaviour():
    r = train(_cfg(val_fraction=0.0))
    assert "test_acc" in r.history[-1] and "val_acc" not in r.history[-1] and "val_n" not in r.dataset
    assert r.evaluation["selected_on"] == "test (every epoch)"


def test_best_val_scores_the_best_epoch_weights():
    r = train(_cfg(epochs=3, select="best_val", augment="standard"))
    accs = [h["val_acc"] for h in r.history]
    best = accs.index(max(accs)) + 1
    assert r.evaluation["epoch"] == best and r.evaluation["select"] == "best_val"
    with pytest.raises(ConfigError, match="validation"):
        _cfg(select="best_val", val_fraction=0).resolved()
    with pytest.raises(ConfigError, match="validation fraction"):
        _cfg(val_fraction=0.9).resolved()


def test_a_stopped_run_scores_test_once_on_its_last_completed_epoch():
    stop = threading.Event()
    r = train(_cfg(epochs=3), stop=stop, callback=lambda p: p.kind == "batch" and p.epoch == 2 and stop.set())
    assert r.status == "stopped" and len(r.history) == 1
    assert r.evaluation is not None and r.evaluation["epoch"] == 1 and r.evaluation["n"] == 60


def test_charts_and_leaderboard_say_which_split():
    from types import SimpleNamespace

    from cxrviz.plots.training import Series, history_figure
    from cxrviz.report import selected_on

    rows = [{"epoch": i, "train_loss": 1 / i, "val_loss": 1.1 / i, "train_acc": 0.5, "val_acc": 0.6} for i in (1, 2)]
    kinds = [t.meta["kind"] for t in history_figure(Series("new", rows)).data]
    assert "val_acc" in kinds and "test_acc" not in kinds
    assert selected_on(SimpleNamespace(config={"arch": "lenet5"})) == "test (old run)"
    assert selected_on(SimpleNamespace(config={"val_fraction": 0.15})) == "validation"
    assert selected_on(SimpleNamespace(config={"val_fraction": 0.0})) == "test (every epoch)"
    fold = {"val_fraction": 0.2, "val_folds": 5, "val_fold": 1}
    assert selected_on(SimpleNamespace(config=fold)) == "validation (fold 2 of 5)"


def test_k_folds_partition_every_group_and_each_fold_is_one_split():
    labels = [0] * 23 + [1] * 11 + [2] * 7 + [0]  # the last one alone in its (class, source) group
    sources = ["a"] * 12 + ["b"] * 11 + ["a"] * 11 + ["a"] * 7 + ["c"]
    folds = [split_indices(labels, 0.15, seed=0, sources=sources, fold=f, folds=5) for f in range(5)]
    vals = [set(va) for _, va in folds]
    assert all(not a & b for i, a in enumerate(vals) for b in vals[i + 1:])  # disjoint
    assert set().union(*vals) == set(range(41))  # every image of a group of >= 2 is validated exactly once
    for tr, va in folds:
        assert sorted(tr + va) == list(range(42)) and 41 in tr  # a singleton group always trains
        assert 7 <= len(va) <= 11  # about a fifth, stratified: each group gives floor or ceil of n / 5
        per = {}
        for i in va:
            per[(labels[i], sources[i])] = per.get((labels[i], sources[i]), 0) + 1
        assert all(2 <= per[g] <= 3 for g in ((0, "a"), (0, "b"), (1, "a"))) and 1 <= per[(2, "a")] <= 2
    assert split_indices(labels, 0.15, 0, sources, fold=2, folds=5) == folds[2]  # fixed
    with pytest.raises(ValueError, match="fold"):
        split_indices(labels, 0.15, fold=5, folds=5)


def test_a_run_trains_on_its_fold_and_records_it():
    c = _cfg(val_folds=4, val_fold=3).resolved()
    assert c.val_fraction == 0.25
    for bad, match in ((dict(val_folds=1), "folds"), (dict(val_folds=4, val_fold=4), "fold must"),
                       (dict(val_folds=3, val_fraction=0), "validation split")):
        with pytest.raises(ConfigError, match=match):
            _cfg(**bad).resolved()
    runs = [train(_cfg(epochs=1, val_folds=2, val_fold=f)) for f in (0, 1)]
    held = [set(r.dataset["val_paths"]) for r in runs]
    assert not held[0] & held[1] and len(held[0] | held[1]) == 300  # the two folds validate every training image
    assert [r.dataset["val_fold"] for r in runs] == ["1 of 2", "2 of 2"]
    c = runs[1].config
    assert c["val_folds"] == 2 and c["val_fold"] == 1 and c["val_fraction"] == 0.5
