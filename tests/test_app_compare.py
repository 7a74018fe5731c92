"""AppTest of the Compare and Explain pages: real uploads (AppTest drives st.file_uploader since Streamlit
1.5x: ``at.file_uploader(key=...).set_value((name, bytes, mime))``), real stored runs (tiny_runs), real
models and the real grad-cam library; every bad input gives one st.error line and no exception."""
import io
import shutil

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cxrviz.predict import best_runs

TIMEOUT = 300  # the machine is shared: generous, the tests assert behaviour, not speed


@pytest.fixture
def runs_env(tiny_runs, monkeypatch):
    root, runs = tiny_runs
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    return root, runs


@pytest.fixture(scope="module")
def jpeg_bytes(synthetic_folder) -> tuple[str, bytes]:
    p = next(p for p in sorted((synthetic_folder / "test" / "Viral Pneumonia").iterdir()) if p.suffix == ".jpg")
    return p.name, p.read_bytes()


def app(page: str) -> AppTest:
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.switch_page(page).run()
    return at


def upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "application/octet-stream")).run()
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


# ------------------------------------------------------------------------------------------ no runs
@pytest.mark.parametrize("page", ["pages/compare.py", "pages/explain.py"])
def test_no_stored_runs_is_a_clear_message(page, ckpt_root):
    at = app(page)
    no_exception(at)
    assert any("No stored runs yet" in i.value for i in at.info)
    assert not at.file_uploader  # nothing to upload into before a run exists


# ------------------------------------------------------------------------------------------ Compare
def test_compare_upload_predicts_with_every_best_run(runs_env, jpeg_bytes):
    _, runs = runs_env
    best = best_runs(runs)
    at = app("pages/compare.py")
    no_exception(at)
    assert at.multiselect(key="compare_runs").value == [r.id for r in best]
    upload(at, "compare_upload", *jpeg_bytes)
    no_exception(at)
    assert not at.error
    assert len(at.metric) == len(best)  # one column per run: predicted class + confidence
    assert len(at.get("plotly_chart")) == len(best)  # class probabilities
    verdict = at.subheader[0].value
    assert "model" in verdict and "say" in verdict, verdict
    assert all(m.label == "Prediction" and "confidence" in m.delta for m in at.metric)
    assert sum("ms ·" in c.value and "px" in c.value for c in at.caption) == len(best)  # latency, size

    # one click away: Grad-CAM overlays right here
    at.toggle(key="compare_explain").set_value(True).run()
    no_exception(at)
    assert not at.error
    assert len(at.get("image")) == 1 + len(best)  # the input + one overlay per run


def test_compare_every_selected_run_and_dicom_upload(runs_env, radiograph_dicom):
    _, runs = runs_env
    at = app("pages/compare.py")
    at.multiselect(key="compare_runs").set_value([r.id for r in runs]).run()
    upload(at, "compare_upload", "chest.dcm", radiograph_dicom)
    no_exception(at)
    assert not at.error
    assert len(at.metric) == len(runs)
    assert "4 models say" in at.subheader[0].value


@pytest.mark.parametrize("case", ["non-image", "zero-byte", "truncated", "bomb", "dicom-no-pixels",
                                  "dicom-bad-syntax"])
def test_compare_bad_upload_is_one_clear_line(case, runs_env, bad_inputs):
    name, data, fragment = bad_inputs[case]
    at = app("pages/compare.py")
    upload(at, "compare_upload", name, data)
    no_exception(at)
    assert len(at.error) == 1
    msg = at.error[0].value
    assert msg.startswith(f"{name}: ") and "\n" not in msg and fragment.lower() in msg.lower(), msg
    assert not at.metric and not at.get("plotly_chart")


def test_compare_pick_from_the_test_split(runs_env, synthetic_folder):
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.session_state["data_path"] = str(synthetic_folder)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.radio(key="compare_how").set_value("Pick from the test split").run()
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="compare_pick").value == 0
    assert any(c.value.startswith("True class:") for c in at.caption)
    assert len(at.metric) == len(best_runs(runs_env[1]))


def test_compare_to_explain_hands_over_image_and_runs(runs_env, jpeg_bytes):
    at = app("pages/compare.py")
    upload(at, "compare_upload", *jpeg_bytes)
    at.button(key="compare_to_explain").click().run()
    no_exception(at)
    assert at.radio(key="explain_how").value == "From Compare"
    assert [b.label for b in at.get("download_button")] == ["Download the side-by-side figure (PNG)"]
    assert len(at.get("image")) == 1 + len(best_runs(runs_env[1]))


def test_deleted_run_is_released_from_the_model_cache(tiny_runs, ckpt_root, jpeg_bytes):
    from pages.common import model_cache

    _, runs = tiny_runs
    ckpt_root.mkdir(parents=True, exist_ok=True)
    src = next(r for r in runs if r.arch == "lenet5")
    shutil.copytree(src.path, ckpt_root / src.id)
    at = app("pages/compare.py")
    upload(at, "compare_upload", *jpeg_bytes)
    no_exception(at)
    assert src.id in model_cache().ids()  # loaded once, kept by the process-wide cache
    shutil.rmtree(ckpt_root / src.id)  # deleted elsewhere (another tab, the CLI)
    at.run()
    no_exception(at)
    assert src.id not in model_cache().ids()
    assert any("No stored runs yet" in i.value for i in at.info)


# ------------------------------------------------------------------------------------------ Explain
def test_explain_methods_fixed_target_and_download(runs_env, jpeg_bytes):
    _, runs = runs_env
    at = app("pages/explain.py")
    at.radio(key="explain_how").set_value("Upload a radiograph").run()
    upload(at, "explain_upload", *jpeg_bytes)
    no_exception(at)
    n = len(best_runs(runs))
    assert len(at.get("image")) == 1 + n and at.get("download_button")
    at.selectbox(key="explain_method").set_value("LayerCAM").run()
    at.radio(key="explain_tmode").set_value("One class for all models").run()
    at.selectbox(key="explain_class").set_value("Normal").run()
    at.slider(key="explain_alpha").set_value(0.8).run()
    no_exception(at)
    assert not at.error
    caps = [c.value for c in at.caption if "CAM for" in c.value]
    assert len(caps) == n and all("CAM for **Normal**" in c for c in caps)
    at.selectbox(key="explain_method").set_value("EigenCAM").run()
    no_exception(at)
    assert sum("class-agnostic map" in c.value for c in at.caption) == n


def test_explain_scorecam_warns_and_waits_for_a_click(runs_env, jpeg_bytes):
    _, runs = runs_env
    lenet = [r.id for r in runs if r.arch == "lenet5"]
    at = app("pages/explain.py")
    at.multiselect(key="explain_runs").set_value(lenet).run()
    at.radio(key="explain_how").set_value("Upload a radiograph").run()
    upload(at, "explain_upload", *jpeg_bytes)
    at.selectbox(key="explain_method").set_value("ScoreCAM").run()
    no_exception(at)
    assert any("slow" in w.value for w in at.warning)
    assert len(at.get("image")) == 0  # nothing computed before the click
    at.button(key="explain_go_slow").click().run()
    no_exception(at)
    assert not at.error
    assert len(at.get("image")) == 2


def test_explain_bad_upload(runs_env, bad_inputs):
    name, data, fragment = bad_inputs["dicom-no-pixels"]
    at = app("pages/explain.py")
    at.radio(key="explain_how").set_value("Upload a radiograph").run()
    upload(at, "explain_upload", name, data)
    no_exception(at)
    assert len(at.error) == 1 and fragment in at.error[0].value


def test_misclassified_gallery(runs_env):
    from cxrviz.explain import misclassified

    _, runs = runs_env
    at = AppTest.from_file("../app.py", default_timeout=TIMEOUT)
    at.run()
    at.session_state["explain_tab"] = "Misclassified test images"
    at.switch_page("pages/explain.py").run()
    no_exception(at)
    run = next(r for r in runs if r.id == at.selectbox(key="gallery_run").value)
    wrong = misclassified(run)
    assert wrong, "a 2-epoch tiny run gets some test images wrong"
    shown = min(8, len(wrong))
    assert len(at.get("image")) == shown
    assert sum("→ predicted" in c.value for c in at.caption) == shown
    assert not at.error


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def radiograph_dicom(synthetic_folder) -> bytes:
    """A real radiograph as an uncompressed 16-bit MONOCHROME2 DICOM file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from cxrviz.data import decode_image

    g = decode_image(sorted((synthetic_folder / "test" / "Normal").iterdir())[0])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data(g.astype(np.uint16) * 16, "MONOCHROME2", 12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
