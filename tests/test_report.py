"""Leaderboard tables, seed groups, significance, seminar table, exports and charts, on real tiny runs."""
import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SYNTHETIC_COUNTS, SYNTHETIC_FOLDER, check_reading
from cxrviz.format import fmt_pct
from cxrviz.metrics import aggregate, mcnemar_exact, paired_correctness
from cxrviz.plots import leaderboard, training
from cxrviz.report import (
    DECK,
    SYNTHETIC,
    arch_summary,
    best_cells,
    caveats,
    dataset_counts,
    default_dataset,
    display_groups,
    display_table,
    export,
    filter_frame,
    groups_frame,
    leaderboard_frame,
    runs_frame,
    select_runs,
    seminar_frame,
    seminar_table,
    significance,
    unique_labels,
)
from cxrviz.runs import list_runs

REAL = SYNTHETIC_FOLDER  # runs trained on the synthetic folder (real files on disk), not the built-in set


def _by_arch(runs, arch, seed=None):
    return [r for r in runs if r.arch == arch and (seed is None or r.config["seed"] == seed)]


# ---------------------------------------------------------------- frames
def test_runs_frame_columns_and_values(tiny_runs):
    _, runs = tiny_runs
    df = runs_frame(runs)
    assert len(df) == 4
    assert set(df["dataset"]) == {REAL}
    assert {"recall:Covid", "recall:Normal", "recall:Viral Pneumonia"} <= set(df.columns)
    for r, row in zip(runs, df.itertuples()):
        assert row.run == r.id
        assert row.accuracy == r.evaluation["accuracy"]
        assert row.train_min == pytest.approx(r.meta["timings"]["train_eval_s"] / 60)
        assert row.gflops > 0 and row.params_M > 0 and row.img_size == 64
        assert row.ci_low <= row.accuracy <= row.ci_high
        assert row.n_test == 3 * SYNTHETIC_COUNTS["test"]


def test_groups_frame_aggregates_seeds(tiny_runs):
    _, runs = tiny_runs
    g = groups_frame(runs)
    assert len(g) == 3  # resnet18 x2 seeds, lenet5, alexnet
    res = g[g["arch"] == "resnet18"].iloc[0]
    accs = [r.accuracy for r in _by_arch(runs, "resnet18")]
    assert res["seeds"] == 2 and res["seed_list"] == "0, 1"
    agg = aggregate(accs)
    assert res["accuracy"] == pytest.approx(agg["mean"])
    assert res["accuracy_sd"] == pytest.approx(agg["sd"])
    assert (res["acc_min"], res["acc_max"]) == (min(accs), max(accs))
    assert res["recall:Covid"] == pytest.approx(np.mean([r.evaluation["per_class"]["Covid"]["recall"]
                                                         for r in _by_arch(runs, "resnet18")]))
    single = g[g["arch"] == "lenet5"].iloc[0]
    assert single["seeds"] == 1 and single["accuracy_sd"] == 0.0
    assert list(g["accuracy"]) == sorted(g["accuracy"], reverse=True)


def test_leaderboard_frame_runs_and_groups(tiny_runs):
    _, runs = tiny_runs
    t = leaderboard_frame(runs)
    assert len(t) == 4 and list(t["test acc"]) == sorted(t["test acc"], reverse=True)
    assert t["test acc"].max() <= 100 and {"95 % CI", "ms/img", "GFLOPs", "recall Covid", "run"} <= set(t.columns)
    best = best_cells(t)
    assert t["test acc"].iloc[best["test acc"][0]] == t["test acc"].max()
    assert t["train (min)"].iloc[best["train (min)"][0]] == t["train (min)"].min()
    tg = leaderboard_frame(runs, groups=True)
    assert len(tg) == 3 and {"seeds", "± sd", "spread"} <= set(tg.columns)
    assert leaderboard_frame([]).empty and leaderboard_frame([], groups=True).empty


def test_arch_summary(tiny_runs):
    _, runs = tiny_runs
    s = arch_summary(runs_frame(runs))
    res = s[s["arch"] == "resnet18"].iloc[0]
    assert res["runs"] == 2 and len(res["accs"]) == 2
    assert res["ci_low"] <= res["mean"] <= res["ci_high"]
    assert res["deck_acc"] == DECK["resnet18"]["acc"]
    assert math.isnan(s[s["arch"] == "lenet5"].iloc[0]["deck_acc"])


# ---------------------------------------------------------------- datasets, status, filters
def test_mixed_datasets_and_stopped_runs(mixed_runs):
    _, runs = mixed_runs
    df = runs_frame(runs)
    counts = dataset_counts(df)
    assert counts == {REAL: 5, SYNTHETIC: 1}
    assert default_dataset(df) == REAL
    assert default_dataset(filter_frame(df, dataset=SYNTHETIC)) == SYNTHETIC
    assert default_dataset(pd.DataFrame()) is None
    stopped = df[df["status"] == "stopped"]
    assert len(stopped) == 1 and stopped.iloc[0]["arch"] == "lenet5"
    real = filter_frame(df, dataset=REAL)
    assert len(real) == 5 and SYNTHETIC not in set(real["dataset"])
    assert len(filter_frame(df, dataset=REAL, statuses=["done"])) == 4
    assert len(filter_frame(df, dataset=REAL, img_sizes=[32])) == 1
    assert set(filter_frame(df, families=["ResNet"])["arch"]) == {"resnet18"}
    assert [r.id for r in select_runs(runs, real)] == list(real["run"])
    # the exported tables never rank across datasets silently: a dataset column, stopped runs marked
    t = display_table(runs)
    assert set(t["dataset"]) == {REAL, SYNTHETIC}
    assert t["model"].str.endswith("(stopped)").sum() == 1
    assert list(t["dataset"]) == sorted(t["dataset"])  # grouped by dataset
    g = display_groups(runs)
    assert set(g["dataset"]) == {REAL, SYNTHETIC} and g["stopped"].sum() == 1


# ---------------------------------------------------------------- exports
def _md_rows(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    split = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    return split[0], lines[1], split[2:]


def _latex_rows(text):
    body = text.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    header = text.split("\\toprule\n", 1)[1].split("\\midrule", 1)[0]
    rows = [ln.rstrip().removesuffix("\\\\").split(" & ") for ln in body.strip().splitlines()]
    return header.rstrip().removesuffix("\\\\").split(" & "), rows


@pytest.mark.parametrize("groups", [False, True])
def test_exports_parse_back(mixed_runs, groups):
    _, runs = mixed_runs
    df = display_groups(runs) if groups else display_table(runs)
    back = pd.read_csv(io.StringIO(export(df, "csv")))
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    key = "runs" if groups else "run"
    assert list(back[key]) == list(df[key])
    if not groups:
        assert back["macro-F1"].tolist() == pytest.approx(df["macro-F1"].tolist())

    header, sep, rows = _md_rows(export(df, "md"))
    assert header == [str(c) for c in df.columns]
    assert set(sep.replace("|", "").replace(":", "")) == {"-"}
    assert len(rows) == len(df) and all(len(r) == len(df.columns) for r in rows)
    assert [r[list(df.columns).index(key)] for r in rows] == [str(v) for v in df[key]]

    tex = export(df, "latex")
    assert tex.startswith("\\begin{tabular}{") and "\\toprule" in tex and tex.rstrip().endswith("\\end{tabular}")
    spec = tex.split("{", 2)[2].split("}", 1)[0]
    assert len(spec) == len(df.columns)
    head, trows = _latex_rows(tex)
    assert len(head) == len(df.columns) and len(trows) == len(df)
    assert all(len(r) == len(df.columns) for r in trows)
    assert "\\%" in tex and "%" not in tex.replace("\\%", "")  # % escaped everywhere
    assert "_" not in tex.replace("\\_", "")

    recs = json.loads(export(df, "json"))
    assert len(recs) == len(df)
    with pytest.raises(ValueError):
        export(df, "xlsx")


def test_empty_tables_export():
    for df in (display_table([]), display_groups([])):
        assert df.empty and len(df.columns) > 5
        assert pd.read_csv(io.StringIO(export(df, "csv"))).columns.tolist() == df.columns.tolist()
        assert export(df, "latex").count("\\\\") == 1


# ---------------------------------------------------------------- significance
def test_significance_on_same_test_images(tiny_runs):
    _, runs = tiny_runs
    sig = significance(runs)
    n = len(runs)
    p = sig["p"].to_numpy()
    assert p.shape == (n, n) and np.allclose(p, p.T, equal_nan=True) and np.all(np.diag(p) == 1)
    assert len(sig["pairs"]) == n * (n - 1) // 2 and all(pr["comparable"] for pr in sig["pairs"])
    # each entry is the exact test on the two runs' own per-image predictions
    a, b = runs[0], runs[1]
    ca, cb = paired_correctness(a.predictions, b.predictions)
    assert ca.sum() == a.evaluation["correct"] and cb.sum() == b.evaluation["correct"]
    ref = mcnemar_exact(ca, cb)
    pr = sig["pairs"][0]
    assert (pr["a_only"], pr["b_only"], pr["p_value"]) == (ref["a_only"], ref["b_only"], ref["p_value"])
    assert pr["reading"].startswith(f"{sig['labels'][0]} vs {sig['labels'][1]}: ")
    for pr in sig["pairs"]:  # every reading says what its own counts and exact p-value mean
        g = check_reading(pr["reading"])
        if pr["disagree"]:
            assert (int(g["na"]), int(g["nb"])) == (pr["a_only"], pr["b_only"])


@pytest.mark.parametrize("a_only,b_only,verdict", [
    (10, 0, "evidence that A s0 is better on these test images"),  # p = 0.002
    (1, 7, "no evidence that either is better"),  # p = 0.07: more wins for B, but not enough
    (0, 6, "evidence that B s1 is better on these test images"),  # p = 0.03
    (5, 0, "no evidence that either is better"),  # p = 0.06
    (3, 2, "no evidence that either is better"),
])
def test_significance_reading_wording(a_only, b_only, verdict):
    from cxrviz.metrics import mcnemar_reading

    ca = np.array([True] * a_only + [False] * b_only + [True] * 20)
    cb = np.array([False] * a_only + [True] * b_only + [True] * 20)
    text = mcnemar_reading("A s0", "B s1", mcnemar_exact(ca, cb))
    assert text.endswith(" — " + verdict)
    check_reading(text)
    same = mcnemar_reading("A s0", "B s1", mcnemar_exact(cb, cb))
    assert same == "A s0 vs B s1: they agree on every image, p = 1.00 — no evidence that either is better"


def test_significance_not_comparable_across_test_sets(mixed_runs):
    _, runs = mixed_runs
    real = [r for r in runs if r.arch == "resnet18"][:1]
    synth = [r for r in runs if r.meta["dataset"].get("synthetic")]
    sig = significance(real + synth)
    (pr,) = sig["pairs"]
    assert not pr["comparable"] and pr["reading"].endswith("not comparable: different test sets")
    assert math.isnan(sig["p"].iat[0, 1])


def test_unique_labels():
    class R:
        def __init__(self, i, seed, size=64):
            self.id, self.meta, self.config = i, {"display": "ResNet-18"}, {"seed": seed, "img_size": size, "epochs": 2}
    assert unique_labels([R("a", 0), R("b", 1)]) == ["ResNet-18 s0", "ResNet-18 s1"]
    labs = unique_labels([R("aaaa1111", 0), R("bbbb2222", 0)])
    assert len(set(labs)) == 2


# ---------------------------------------------------------------- seminar
def test_seminar_table_and_caveats(tiny_runs):
    _, runs = tiny_runs
    s = seminar_frame(runs)
    assert list(s["arch"][:4]) == list(DECK)
    res = s[s["arch"] == "resnet18"].iloc[0]
    assert res["seeds"] == 2 and res["deck_acc"] == 0.909 and res["img_size"] == 64
    assert s[s["arch"] == "vgg19"].iloc[0]["seeds"] == 0  # not trained in the fixture
    assert "lenet5" in set(s["arch"])
    t = seminar_table(runs)
    assert list(t["deck acc"][:4]) == ["80.3 %", "83.3 %", "89.4 %", "90.9 %"]
    assert t.iloc[1]["cxrviz acc"] == "not run yet"
    assert t.iloc[3]["cxrviz acc"].count("±") == 1
    assert t.iloc[3]["deck time"] == "4.79 min" and t.iloc[3]["cxrviz time"].endswith("min (cpu)")
    cav = caveats(66, 0.909)
    assert "66 images" in cav[0] and "1.5 points" in cav[0] and "81.6–95.8" in cav[0]
    assert any("paediatric" in c for c in cav)
    assert any("synthetic" in c.lower() for c in caveats(60, 0.5, synthetic=True))
    assert fmt_pct(0.909) == "90.9 %" and fmt_pct(math.nan) == "–"


# ---------------------------------------------------------------- charts
def test_figures_build_and_png(mixed_runs):
    _, runs = mixed_runs
    df = filter_frame(runs_frame(runs), dataset=REAL)
    sel = select_runs(runs, df)
    sig = significance(sel[:3])
    figs = [leaderboard.acc_vs_time(df), leaderboard.acc_per_arch(df, deck=True, big=True), leaderboard.confusions(sel),
            leaderboard.roc(sel), training.training_curves(sel), leaderboard.significance_heatmap(sig)]
    for f in figs:
        assert len(f.data) > 0
        f.to_json()
    assert len(leaderboard.confusions(sel).data) == len(sel)
    deck = [t for t in figs[1].data if t.name == "deck (single run)"]
    assert deck and 90.9 in list(deck[0].x)
    pngs = [leaderboard.acc_vs_time_png(df), leaderboard.acc_per_arch_png(df, True),
            leaderboard.confusions_png(sel[:2]),
            leaderboard.roc_png(sel[:2]), training.training_curves_png(sel[:2]), leaderboard.significance_png(sig),
            leaderboard.acc_vs_time_png(df.iloc[0:0])]
    for b in pngs:
        assert b[:8] == b"\x89PNG\r\n\x1a\n" and len(b) > 1000
    assert not leaderboard.acc_vs_time(df.iloc[0:0]).data


def test_cli_table_formats(tiny_runs, monkeypatch, capsys):
    from cxrviz.cli import main

    root, runs = tiny_runs
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    assert main(["table", "--format", "csv"]) == 0
    back = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert sorted(back["run"]) == sorted(r.id for r in runs)
    assert main(["table", "--format", "latex", "--groups"]) == 0
    out = capsys.readouterr().out
    assert "\\toprule" in out and out.count("\\\\") == 1 + 3
    assert main(["table", "--format", "md"]) == 0
    header, _, rows = _md_rows(capsys.readouterr().out)
    assert "test acc" in header and len(rows) == 4


def test_deleting_a_copy(tiny_runs, tmp_path):
    """Deletion used by the page: the run vanishes from listings, the others stay."""
    from cxrviz.runs import delete_run

    _, runs = tiny_runs
    for r in runs[:2]:
        shutil.copytree(r.path, tmp_path / r.id)
    listed = list_runs(tmp_path)[0]
    delete_run(listed[0])
    left = list_runs(tmp_path)[0]
    assert [r.id for r in left] == [listed[1].id]


def test_run_stopped_before_any_evaluation(tiny_runs):
    """A run stopped before its first epoch has no evaluation and no predictions: shown, never ranked."""
    import copy

    from cxrviz.runs import Run

    _, runs = tiny_runs
    meta = copy.deepcopy(runs[0].meta)
    meta.update(status="stopped", evaluation=None, epochs_done=0)
    early = Run("early-stop", runs[0].path, meta, _history={"history": [], "batch_losses": []}, _predictions={})
    mixed = runs + [early]
    t = display_table(mixed)
    row = t[t["run"] == "early-stop"].iloc[0]
    assert row["test acc"] == "–" and row["95 % CI"] == "–" and row["model"].endswith("(stopped)")
    assert t.iloc[-1]["run"] == "early-stop"  # unevaluated runs sort last
    assert len(groups_frame(mixed)) == 3
    assert len(leaderboard_frame(mixed)) == 5
    sig = significance([runs[0], early])
    assert sig["pairs"][0]["reading"].endswith("not comparable: no stored test predictions")
    df = runs_frame(mixed)
    assert len(arch_summary(df)) == 3
    assert seminar_frame(mixed)["seeds"].sum() == 4 + 1  # the early run joins its group but adds no accuracy
    for b in (leaderboard.acc_vs_time_png(df), leaderboard.confusions_png([early]), leaderboard.roc_png([early]),
              training.training_curves_png([early])):
        assert b[:4] == b"\x89PNG"
    assert len(leaderboard.confusions([early]).data) == 0
