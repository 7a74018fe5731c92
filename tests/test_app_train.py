"""AppTest of the Overview and Train pages: they render without an exception, show the expected widgets,
and launching from Train puts real jobs into the app's process-wide registry."""
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT, tiny_train_settings
from cxrviz.jobs import CANCELLED, DONE, QUEUED, RUNNING, STOPPED
from cxrviz.models import REGISTRY

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def page(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def registry(ckpt_root):
    """The app's own registry (one per process), emptied around each test; runs go to a fresh folder."""
    from pages.common import job_registry

    reg = job_registry()
    reg.stop_all(keep=False)
    assert reg.wait(60)
    reg.clear_finished()
    yield reg
    reg.stop_all(keep=False)
    reg.wait(60)
    reg.clear_finished()


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "success", "warning", "error", "info"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [str(getattr(e, "proto", "")) for e in at.get("progress")]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ overview
def test_overview_synthetic_by_default():
    at = page("overview")
    assert any("SYNTHETIC DATA" in w.value for w in at.warning)
    assert at.text_input(key="ov_path").value == ""
    assert {b.label for b in at.button} >= {"Use folder", "Use synthetic"}
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Classes"] == "3" and int(metrics["Training images"]) > 0
    assert len(at.get("plotly_chart")) >= 1  # counts per class and split
    assert len(at.get("image")) == 3 * 6  # sample grid: 6 per class


def test_overview_rejects_a_bad_folder_and_keeps_the_previous_dataset(tmp_path):
    at = page("overview")
    at.text_input(key="ov_path").set_value(str(tmp_path / "missing")).run()
    assert not at.exception
    assert any("dataset folder not found" in e.value for e in at.error)
    assert any("SYNTHETIC DATA" in w.value for w in at.warning)  # still on the synthetic set
    (tmp_path / "flat").mkdir()
    at.text_input(key="ov_path").set_value(str(tmp_path / "flat")).run()
    assert any("no train/ folder" in e.value for e in at.error)


def test_overview_dataset_folder(synthetic_folder):
    at = page("overview")
    at.text_input(key="ov_path").set_value(str(synthetic_folder)).run()
    assert not at.exception and not at.error
    assert not any("SYNTHETIC DATA" in w.value for w in at.warning)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Training images"], metrics["Test images"]) == ("72", "24")  # 24 + 8 per class
    assert len(at.get("image")) >= 3 * 5
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 6  # size table: 2 splits x 3 classes
    # remembered for the session: other pages train on it
    at.switch_page("pages/train.py").run()
    assert not at.exception
    assert synthetic_folder.name in texts(at)


# ------------------------------------------------------------------------------------------ train
def test_train_page_widgets(registry):
    at = page("train")
    labels = {c.label for c in at.checkbox}
    assert labels == {s.display for s in REGISTRY.values()}
    assert at.checkbox(key="t_arch_resnet18").value  # the default choice
    captions = texts(at)
    assert "18 layers" in captions and "GFLOPs" in captions
    for key in ("t_img_size", "t_epochs", "t_batch", "t_lr"):
        assert at.number_input(key=key).value is None  # empty = the recipe
    assert "recipe" in at.number_input(key="t_lr").proto.placeholder
    assert {s.key for s in at.selectbox} >= {"t_opt", "t_aug", "t_device"}
    assert at.text_input(key="t_seeds").value == "0"
    assert at.button(key="quick_demo").label.startswith("⚡ Quick demo")
    assert not at.button(key="t_launch").disabled
    assert len(at.dataframe) >= 1 and "estimate" in at.dataframe[0].value.columns  # plan with run-time estimate
    assert "Estimated time on this device" in captions


def test_train_long_run_warning(registry):
    at = page("train")
    at.checkbox(key="t_arch_resnet18").uncheck()
    at.checkbox(key="t_arch_vgg19").check()
    at.number_input(key="t_img_size").set_value(224).run()
    assert not at.exception
    assert any("Long run" in w.value and "VGG-19 at 224 px" in w.value for w in at.warning)


def test_train_bad_settings_show_one_line_errors(registry):
    at = page("train")
    at.text_input(key="t_seeds").set_value("1, x").run()
    assert any("not a whole number" in e.value for e in at.error)
    assert at.button(key="t_launch").disabled
    at.text_input(key="t_seeds").set_value("0").run()
    at.checkbox(key="t_arch_alexnet").check()
    at.number_input(key="t_img_size").set_value(32).run()
    assert any("AlexNet's minimum" in e.value for e in at.error)
    assert at.button(key="t_launch").disabled
    assert registry.snapshots() == []


def _tiny_launch(at: AppTest, seeds: str = "0") -> AppTest:
    return tiny_train_settings(at, seeds).button(key="t_launch").click().run()


DOUBLE_CLICK_S = float(re.search(r"^DOUBLE_CLICK_S = ([\d.]+)", (ROOT / "pages" / "train.py").read_text(), re.M)[1])


class _Clock:
    """The double-click window's clock, moved by the test (no real time involved)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_launch_creates_jobs_seen_by_every_session(registry, ckpt_root):
    at = page("train")
    clock = at.session_state["train_clock"] = _Clock()
    _tiny_launch(at, seeds="0, 1")
    assert not at.exception
    snaps = registry.snapshots()
    assert [(s.arch, s.seed, s.config["img_size"], s.config["epochs"]) for s in snaps] == \
        [("lenet5", 0, 32, 1), ("lenet5", 1, 32, 1)]
    # the rerun after the click, and the same launch again within the double-click window, queue nothing more
    at.run()
    clock.t += DOUBLE_CLICK_S - 0.1
    at.button(key="t_launch").click().run()
    assert len(registry.snapshots()) == 2
    assert any("double click ignored" in t.value for t in at.toast)
    assert registry.wait(300)
    # after the window, the same launch is a deliberate new one
    clock.t += 0.2
    at.button(key="t_launch").click().run()
    assert not at.exception and len(registry.snapshots()) == 4
    assert registry.wait(300)
    # a second session (another tab, or a reload) sees the same finished jobs, with charts
    other = page("train")
    body = texts(other)
    for s in registry.snapshots():
        assert s.status == DONE and s.run_id
        assert s.label in body and s.run_id in body
    assert len(other.get("plotly_chart")) >= 2
    # the runs (all four) are on disk for the leaderboard
    assert sorted(p.name for p in ckpt_root.iterdir()) == sorted(s.run_id for s in registry.snapshots())


def test_quick_demo_button_queues_the_demo(registry):
    at = page("train")
    at.button(key="quick_demo").click().run()
    assert not at.exception
    snaps = registry.snapshots()
    assert len(snaps) == 1
    from cxrviz.launch import QUICK_DEMO

    assert snaps[0].arch == QUICK_DEMO["arch"] and snaps[0].config["img_size"] == QUICK_DEMO["img_size"]
    assert snaps[0].config["data"] is None  # the built-in synthetic set
    registry.stop(snaps[0].id, keep=False)


def test_stop_button_on_a_running_card(registry):
    from cxrviz.train import TrainConfig

    jid, = registry.submit([TrainConfig(arch="lenet5", img_size=32, epochs=500)])
    end = time.time() + 300  # a hang guard, not a speed requirement
    while time.time() < end and not registry.get(jid).history:
        time.sleep(0.05)
    assert registry.get(jid).status == RUNNING
    at = page("train")
    assert any("epoch" in str(p.proto) for p in at.get("progress"))
    at.toggle(key=f"keep_{jid}").set_value(False)
    at.button(key=f"stop_{jid}").click().run()
    assert not at.exception
    assert registry.wait(300)
    s = registry.get(jid)
    assert s.status == STOPPED and s.run_id is None  # discarded as chosen
    at.run()
    assert "discarded" in texts(at)


def test_cancel_button_for_the_queue_beyond_the_cards(registry):
    """Queued jobs beyond the page's cards are one line with one Cancel button; it cancels exactly those."""
    from cxrviz.train import TrainConfig

    ids = registry.submit([TrainConfig(arch="lenet5", img_size=32, epochs=500, seed=i) for i in range(12)])
    at = page("train")
    keys = {b.key for b in at.button}
    carded = [j for j in ids if {f"stop_{j}", f"cancel_{j}"} & keys]
    rest = [j for j in ids if j not in carded]
    assert carded and rest
    at.button(key="cancel_rest").click().run()
    assert not at.exception
    assert [registry.get(j).status for j in rest] == [CANCELLED] * len(rest)
    assert all(registry.get(j).status in (QUEUED, RUNNING) for j in carded)
