"""AppTest of the External validation page: a real stored run, a real external folder, real scoring and probes."""
import shutil

import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 300


@pytest.fixture
def env(tmp_path, monkeypatch, synthetic_folder):
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    root = tmp_path / "checkpoints"
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=root)
    ext = tmp_path / "external"
    for cls, name in (("Covid", "COVID-19"), ("Normal", "Normal")):
        shutil.copytree(synthetic_folder / "test" / cls, ext / name)
    return list_runs(root)[0][0], ext


def no_exception(at):
    assert not at.exception, [e.message for e in at.exception]


def test_external_page_scores_a_run_and_probes_it(env):
    run, ext = env
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/external.py").run()
    no_exception(at)
    assert at.multiselect(key="ext_runs").value == [run.id]
    assert any("Enter an external folder" in i.value for i in at.info)

    at.text_input(key="ext_folder").set_value(str(ext)).run()
    no_exception(at)
    assert any("'COVID-19' is not a class of the run" in e.value for e in at.error)  # one line, no traceback

    at.text_input(key="ext_map").set_value("COVID-19=Covid").run()
    no_exception(at)
    assert not at.error
    assert any("Not scored on this folder yet" in i.value for i in at.info)
    at.button(key="ext_score").click().run()
    no_exception(at)
    table = at.dataframe[0].value  # the first table: internal vs external
    assert list(table["run"]) == [run.id] and int(table["n"].iloc[0]) == 16
    assert "external acc" in table.columns and "internal acc" in table.columns
    assert (run.path / "external").is_dir()

    at.checkbox(key="ext_probe_cam").uncheck().run()
    at.button(key="ext_probe").click().run()
    no_exception(at)
    probes = next(d.value for d in at.dataframe if "lungs hidden acc" in d.value.columns)
    assert {"lungs hidden acc", "only lungs acc", "majority baseline"} <= set(probes.columns)

    at.text_input(key="ext_folder").set_value(str(ext / "nope")).run()
    no_exception(at)
    assert any("not found" in e.value for e in at.error)


def test_external_page_without_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(tmp_path / "empty"))
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/external.py").run()
    no_exception(at)
    assert any("No stored runs yet" in i.value for i in at.info)


def test_leaderboard_and_seminar_show_internal_vs_external(env):
    from cxrviz.external import score_run

    run, ext = env
    score_run(run, ext, "COVID-19=Covid")
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/leaderboard.py").run()
    no_exception(at)
    tables = [d.value for d in at.dataframe if "external acc" in d.value.columns]
    assert len(tables) == 1 and list(tables[0]["run"]) == [run.id]
    assert {"internal acc", "internal 95 % CI", "external 95 % CI", "drop (points)"} <= set(tables[0].columns)
    at.switch_page("pages/seminar.py").run()
    no_exception(at)
    assert any("Does it generalise?" in m.value for m in at.markdown)


def test_compare_warns_on_a_black_strip(env):
    import io

    import numpy as np
    from PIL import Image

    run, _ = env
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20000, 10), np.uint8)).save(buf, "PNG")
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.file_uploader(key="compare_upload").set_value(("strip.png", buf.getvalue(), "image/png")).run()
    no_exception(at)
    assert any("unlike the images these models were trained on" in w.value for w in at.warning)
    assert not any("model says" in s.value for s in at.subheader)  # no confident-looking verdict
