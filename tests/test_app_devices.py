"""AppTest of the Train page's device parts: each job's device on its card, the per-device queue and the
jobs-per-device setting; with CXRVIZ_RAY_ADDRESS set, "Run on the cluster" queues cluster jobs."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import tiny_train_settings
from cxrviz.jobs import CLUSTER, DONE

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def train_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def fresh_registry(ckpt_root, monkeypatch):
    """A new app registry for this test (built from the environment the test sets), dropped afterwards."""
    from pages.common import job_registry

    def make():
        job_registry.clear()
        return job_registry()

    yield make
    reg = job_registry()
    reg.stop_all(keep=False)
    reg.wait(120)
    job_registry.clear()


def test_cards_show_the_device_and_the_device_panel_sets_jobs_per_device(fresh_registry):
    reg = fresh_registry()
    at = train_page()
    assert at.selectbox(key="t_device").options[:2] == ["auto", *reg.devices][:2]
    assert "Run on the cluster" not in [t.label for t in at.toggle]  # no CXRVIZ_RAY_ADDRESS: no cluster
    tiny_train_settings(at)
    at.button(key="t_launch").click().run()
    assert reg.wait(180)
    at.run()
    (snap,) = reg.snapshots()
    assert snap.status == DONE and snap.device == reg.devices[0]
    assert any(f"on **{snap.device}**" in c.value for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table["device"]) == reg.devices and "queued work" in str(at.dataframe[-1].proto)
    at.selectbox(key="t_jobs_per_device").set_value(2).run()
    assert not at.exception and reg.jobs_per_device == 2


def test_cluster_toggle_queues_cluster_jobs(fresh_registry, monkeypatch):
    monkeypatch.setenv("CXRVIZ_RAY_ADDRESS", "203.0.113.1:1")  # unreachable (TEST-NET): the job fails, one line
    monkeypatch.setattr("cxrviz.cluster.START_TIMEOUT_S", 5)
    reg = fresh_registry()
    at = train_page()
    tiny_train_settings(at)
    at.toggle(key="t_cluster").set_value(True).run()
    at.button(key="t_launch").click().run()
    assert not at.exception
    (snap,) = reg.snapshots()
    assert snap.device == CLUSTER
    assert reg.wait(300)
    at.run()
    snap = reg.get(snap.id)
    assert snap.status == "failed" and "203.0.113.1:1" in snap.error and "\n" not in snap.error
    assert any(f"Failed: {snap.error}" in e.value for e in at.error)
