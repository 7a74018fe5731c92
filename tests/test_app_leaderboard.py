"""AppTest of the Leaderboard and Seminar pages over real stored runs (real and synthetic data, one stopped)."""
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import SYNTHETIC_FOLDER, check_reading

APP = str(Path(__file__).resolve().parents[1] / "app.py")
REAL = SYNTHETIC_FOLDER  # runs trained on the synthetic folder (real files on disk), not the built-in set


def _open(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(page).run()
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _table(at: AppTest):
    assert len(at.dataframe) == 1
    return at.dataframe[0].value


def _md(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _readings(md: str) -> list[str]:
    """The plain-language McNemar sentences shown (one per line, possibly as list items or bold)."""
    out = []
    for line in md.splitlines():
        line = line.strip().lstrip("-*• ").replace("**", "")
        if " vs " in line and ("evidence that" in line):
            out.append(line)
    return out


def test_leaderboard_runs_filters_groups_significance(mixed_runs, monkeypatch):
    root, runs = mixed_runs
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    at = _open("pages/leaderboard.py")
    _ok(at)
    assert at.selectbox(key="lb_dataset").value == REAL  # the real dataset, not the synthetic run
    t = _table(at)
    assert len(t) == 5 and set(t["dataset"]) == {REAL}
    assert t["model"].str.endswith("(stopped)").sum() == 1
    assert list(t["test acc"]) == sorted(t["test acc"], reverse=True)
    assert {"GFLOPs", "95 % CI", "macro-F1", "recall Covid", "ms/img", "train (min)", "device"} <= set(t.columns)
    labels = {b.label for b in at.download_button}
    assert {"⬇️ CSV", "⬇️ Markdown", "⬇️ LaTeX", "⬇️ PNG"} <= labels

    # paired tests among the four best runs on the same test images, read out in plain language
    md = _md(at)
    readings = _readings(md)
    assert len(readings) == 6  # the four best runs: every pair, each reading true to its own numbers
    for r in readings:
        check_reading(r)
    assert "not comparable" not in md

    # status filter drops the stopped run
    at.multiselect(key=f"lb_status_{REAL}").set_value(["done"]).run()
    _ok(at)
    assert len(_table(at)) == 4

    # seed groups: resnet18 s0 + s1 become one entry with mean ± sd
    at.radio(key="lb_view").set_value("Seed groups").run()
    _ok(at)
    g = _table(at)
    assert len(g) == 3 and sorted(g["seeds"]) == [1, 1, 2]
    res = g[g["model"] == "ResNet-18"].iloc[0]
    accs = [100 * r.accuracy for r in runs if r.arch == "resnet18"]
    assert res["test acc"] == pytest.approx(sum(accs) / 2)
    assert res["spread"] == f"{min(accs):.1f}–{max(accs):.1f}"

    # the synthetic run is only shown when its dataset is chosen, with a warning
    at.selectbox(key="lb_dataset").set_value("synthetic").run()
    _ok(at)
    assert len(_table(at)) == 1
    assert any("synthetic" in w.value for w in at.warning)


def test_leaderboard_pairs_across_image_sizes(mixed_runs, monkeypatch):
    root, runs = mixed_runs
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    at = _open("pages/leaderboard.py")
    stopped = next(r for r in runs if r.status == "stopped")
    best = max((r for r in runs if r.status == "done" and not r.meta["dataset"].get("synthetic")),
               key=lambda r: r.accuracy)
    # the stopped run (32 px) was evaluated on the same test images: comparable despite its other image size
    at.multiselect(key=f"lb_pick_{REAL}").set_value([best.id, stopped.id]).run()
    _ok(at)
    (reading,) = _readings(_md(at))
    check_reading(reading)


def test_delete_run_needs_confirmation(mixed_runs, tmp_path, monkeypatch):
    src, runs = mixed_runs
    root = tmp_path / "runs"
    shutil.copytree(src, root)
    (root / "not-a-run").mkdir()  # an unreadable folder is reported, not fatal
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    at = _open("pages/leaderboard.py")
    _ok(at)
    assert any("unreadable" in e.label for e in at.expander)
    target = runs[-1].id
    at.selectbox(key="lb_del_run").set_value(target).run()
    assert at.button(key="lb_del_btn").disabled  # nothing happens without the confirmation
    at.checkbox(key=f"lb_del_ok_{target}").check().run()
    assert not at.button(key="lb_del_btn").disabled
    at.button(key="lb_del_btn").click().run()
    _ok(at)
    assert not (root / target).exists()
    assert (src / target).exists()  # the shared fixture is untouched
    assert len([d for d in root.iterdir() if not d.name.startswith(".")]) == len(runs)  # runs - 1 + not-a-run
    assert target not in at.selectbox(key="lb_del_run").options


def test_seminar_view(mixed_runs, monkeypatch):
    root, runs = mixed_runs
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    at = _open("pages/seminar.py")
    _ok(at)
    assert at.selectbox(key="sem_dataset").value == REAL
    assert len(at.table) == 1
    t = at.table[0].value
    assert list(t.index[:4]) == ["AlexNet", "VGG-19", "GoogLeNet", "ResNet-18"]
    assert list(t["deck acc"][:4]) == ["80.3 %", "83.3 %", "89.4 %", "90.9 %"]
    assert list(t["deck time"][:4]) == ["4.71 min", "5.61 min", "4.61 min", "4.79 min"]
    assert t.loc["VGG-19", "cxrviz acc"] == "not run yet"
    assert "±" in t.loc["ResNet-18", "cxrviz acc"]
    md = _md(at)
    assert "font-size" in md  # the projector CSS
    assert "24 images" in md and "4.2 points" in md and "paediatric" in md
    labels = {b.label for b in at.download_button}
    assert "⬇️ Chart (PNG)" in labels


def test_pages_without_runs(ckpt_root):
    for page in ("pages/leaderboard.py", "pages/seminar.py"):
        at = _open(page)
        _ok(at)
        assert any("No stored runs" in i.value for i in at.info)
