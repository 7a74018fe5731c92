"""Reliability: one bad-input corpus (generated here, nothing binary is committed) sent through every channel a
user has: the engine (decode + predict with a real stored run; open + load a dataset), the CLI (in process for
the whole corpus, as a real subprocess for a few cases) and the app (AppTest uploads on Compare, the dataset
folder input on Overview). Valid-but-odd files must give predictions; broken ones one clear line; never a
traceback. Also the security settings: bounded uploads and a localhost-only server by default.

The malicious-pickle refusal lives in tests/test_runs.py (test_malicious_pickle_is_refused_and_never_executed);
faults (exceptions, OOM, stops, SIGKILL, concurrent sessions) in tests/test_faults.py."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import _bad_input_files
from cxrviz.cli import main as cli_main
from cxrviz.data import (
    MAX_UPLOAD_BYTES,
    DatasetError,
    ImageDecodeError,
    decode_image,
    load_split,
    open_dataset,
    synthetic,
)
from cxrviz.predict import ImageInput, predict_image, predict_runs

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 300  # shared machine: generous; the tests assert behaviour, not speed


# ================================================================================= the image corpus
def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 255 // max(1, w - 1) + (y * 7) % 40) % 256).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _dicom(pixels: np.ndarray | None = None, jpeg: bool = False) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DX"
    if jpeg:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([_encode(Image.fromarray(pixels), "JPEG", quality=95)])
        ds["PixelData"].VR = "OB"
    else:  # 12-bit stored values in 16-bit words, as a detector writes them
        ds.set_pixel_data(pixels.astype(np.uint16) * 16, "MONOCHROME2", 12)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def build_corpus() -> dict[str, tuple[str, bytes, tuple[int, int] | str]]:
    """{case: (file name, bytes, expected)}: expected is the decoded (height, width) for a valid-but-odd file
    (it must be predicted), or a fragment of the one-line message for a broken one."""
    g = _gradient(96, 80)
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    rgba[:10, :10, 3] = 0  # a transparent corner
    cmyk = Image.fromarray(np.dstack([g, g, g])).convert("CMYK")
    jpeg = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160), dtype=np.uint8)),
                   "JPEG", quality=90)
    big = np.zeros((8000, 8000), np.uint8)
    big[::16] = 200  # compresses to a few hundred KB, decodes to 64 M pixels (our limit, below Pillow's)
    bad = _bad_input_files()  # the conftest's shared bad files (non-image, zero-byte, bomb, DICOMs...)
    corpus = {
        "png-16bit": ("deep.png", _encode(Image.fromarray(g.astype(np.uint16) * 16 + 7), "PNG"), (96, 80)),
        "png-rgba": ("alpha.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), (96, 80)),
        "jpeg-cmyk": ("print.jpg", _encode(cmyk, "JPEG", quality=95), (96, 80)),
        "png-palette": ("palette.png", _encode(Image.fromarray(g).convert("P"), "PNG"), (96, 80)),
        "png-1x1": ("dot.png", _encode(Image.new("L", (1, 1), 77), "PNG"), (1, 1)),
        "png-8000x8000": ("huge.png", _encode(Image.fromarray(big), "PNG", compress_level=1), (8000, 8000)),
        "dicom-uncompressed": ("chest.dcm", _dicom(g), (96, 80)),
        "dicom-no-extension": ("IM000001", _dicom(g), (96, 80)),
        "dicom-jpeg": ("chest-jpeg.dcm", _dicom(g, jpeg=True), (96, 80)),
        "truncated-jpeg": ("cut.jpg", jpeg[: len(jpeg) // 2], "truncated or corrupt"),
    }
    for case in ("non-image", "zero-byte", "truncated", "bomb", "dicom-no-pixels", "dicom-bad-syntax"):
        name, data, fragment = bad[case]
        corpus["truncated-png" if case == "truncated" else case] = (name, data, fragment)
    return corpus


CASES = ["png-16bit", "png-rgba", "jpeg-cmyk", "png-palette", "png-1x1", "png-8000x8000", "dicom-uncompressed",
         "dicom-no-extension", "dicom-jpeg", "non-image", "zero-byte", "truncated-jpeg", "truncated-png", "bomb",
         "dicom-no-pixels", "dicom-bad-syntax"]


@pytest.fixture(scope="module")
def corpus() -> dict:
    c = build_corpus()
    assert sorted(c) == sorted(CASES)
    return c


def one_line(msg: str, name: str, fragment: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert msg.startswith(f"{name}: "), msg
    assert fragment.lower() in msg.lower(), msg


# ------------------------------------------------------------------------------------------ engine
@pytest.mark.parametrize("case", CASES)
def test_engine_decode_and_predict(case, corpus, lenet_run, deck_runs, tmp_path):
    name, data, expected = corpus[case]
    _, run = lenet_run
    _, deck = deck_runs
    path = tmp_path / name
    path.write_bytes(data)
    if isinstance(expected, str):
        for src in (path, data):  # a file on disk (CLI, dataset) and uploaded bytes (app)
            with pytest.raises(ImageDecodeError) as ei:
                decode_image(src, name=name)
            one_line(str(ei.value), name, expected)
        with pytest.raises(ImageDecodeError):
            ImageInput(data=data, name=name)
        return
    for src in (path, data):
        gray = decode_image(src, name=name)
        assert gray.dtype == np.uint8 and gray.shape == expected
        if gray.size > 1:
            assert gray.max() > gray.min()  # real content, not a blank from a failed conversion
        pred, = predict_image(gray, [run])
        assert pred.predicted in run.classes and abs(sum(pred.probs) - 1) < 1e-4
        assert all(np.isfinite(pred.probs))
    # "predicted by every model": the deck's four (AlexNet, VGG-19, GoogLeNet, ResNet-18) and LeNet-5
    preds, failures = predict_runs(ImageInput(data=data, name=name), [run] + deck)  # the app's path
    assert not failures and sorted(p.arch for p in preds) == ["alexnet", "googlenet", "lenet5", "resnet18", "vgg19"]
    assert all(abs(sum(p.probs) - 1) < 1e-4 and np.all(np.isfinite(p.probs)) for p in preds)
    if case == "png-8000x8000":  # shown and explained at the display size: longest side 448 px
        from cxrviz.explain import display_image, explain_runs

        assert display_image(decode_image(data, name=name)).shape == (448, 448)
        ex, = explain_runs(ImageInput(data=data, name=name), [run], None, "GradCAM")
        assert ex.ok and ex.overlay.shape == (448, 448, 3)


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("case", CASES)
def test_cli_predict(case, corpus, lenet_run, tmp_path, monkeypatch, capsys):
    name, data, expected = corpus[case]
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(lenet_run[0]))
    path = tmp_path / name
    path.write_bytes(data)
    rc = cli_main(["predict", str(path), "--format", "json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if isinstance(expected, str):
        assert rc == 2 and out.out == ""
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.err
        one_line(lines[0][len("error: "):], name, expected)
    else:
        assert rc == 0, out.err
        pred, = json.loads(out.out)
        assert pred["run_id"] == lenet_run[1].id and pred["predicted"] in pred["classes"]


def _cli(*args: str, checkpoints: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CXRVIZ_CHECKPOINTS": str(checkpoints)}
    return subprocess.run([sys.executable, "-m", "cxrviz", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("case", ["png-16bit", "truncated-jpeg", "bomb"])
def test_cli_predict_subprocess(case, corpus, lenet_run, tmp_path):
    """The real command line, as a user types it: exit 0 with a table, or exit 2 with one stderr line."""
    name, data, expected = corpus[case]
    path = tmp_path / name
    path.write_bytes(data)
    p = _cli("predict", str(path), checkpoints=lenet_run[0])
    assert "Traceback" not in p.stderr + p.stdout
    if isinstance(expected, str):
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        one_line(p.stderr.strip()[len("error: "):], name, expected)
    else:
        assert p.returncode == 0, p.stderr
        assert "model says" in p.stdout


# ------------------------------------------------------------------------------------------ app
def _app(page: str, checkpoints: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(checkpoints))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_app_compare_upload_whole_corpus(corpus, lenet_run, monkeypatch):
    """One browser session uploads every file in turn: a prediction or one st.error line each, the app
    keeps working after every broken file."""
    at = _app("pages/compare.py", lenet_run[0], monkeypatch)
    outcomes = {}
    for case in CASES:
        name, data, expected = corpus[case]
        at.file_uploader(key="compare_upload").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, (case, [e.message for e in at.exception])
        errors = [e.value for e in at.error]
        if isinstance(expected, str):
            assert len(errors) == 1, (case, errors)
            one_line(errors[0], name, expected)
            assert not at.metric
        else:
            assert not errors, (case, errors)
            assert len(at.metric) == 1 and at.metric[0].label == "Prediction", case
            h, w = expected
            assert any(f"{name} · {w}×{h}" in str(i.proto) for i in at.get("image")), case
        outcomes[case] = errors[0] if errors else at.metric[0].value
    print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))


def test_app_explain_upload_odd_and_broken(corpus, lenet_run, monkeypatch):
    """Explain draws overlays at display size: the 8000x8000 image must not blow up memory or time."""
    at = _app("pages/explain.py", lenet_run[0], monkeypatch)
    at.radio(key="explain_how").set_value("Upload a radiograph").run()
    for case in ("png-8000x8000", "dicom-jpeg", "png-1x1", "truncated-jpeg"):
        name, data, expected = corpus[case]
        at.file_uploader(key="explain_upload").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, (case, [e.message for e in at.exception])
        if isinstance(expected, str):
            assert len(at.error) == 1, case
            one_line(at.error[0].value, name, expected)
        else:
            assert not at.error, (case, [e.value for e in at.error])
            assert len(at.get("image")) == 2 and at.get("download_button"), case  # input + one overlay


# ================================================================================= the dataset corpus
def _write_dataset(root: Path, per_class: int = 4, classes=("Covid", "Normal", "Viral Pneumonia")) -> Path:
    """A small ImageFolder tree of real PNG files (synthetic phantoms), train/ and test/."""
    for split in ("train", "test"):
        imgs, labels = synthetic.make_split(split, 48, n_per_class=per_class)
        for i, (img, y) in enumerate(zip(imgs, labels.tolist())):
            d = root / split / classes[y]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"img{i:03d}.png")
    return root


def build_datasets(base: Path, corpus: dict) -> dict[str, tuple[Path, str | None]]:
    """{case: (folder, expected)}: expected None = usable (trains), else a fragment of the one-line message."""
    import shutil

    out: dict[str, tuple[Path, str | None]] = {"missing": (base / "no-such-folder", "dataset folder not found")}
    (base / "a-file.txt").write_text("not a folder")
    out["a-file"] = (base / "a-file.txt", "not a folder")
    (base / "empty").mkdir()
    out["empty"] = (base / "empty", "no train/ folder")

    d = _write_dataset(base / "class-empty")
    for f in (d / "test" / "Normal").iterdir():
        f.unlink()
    out["class-empty"] = (d, "class 'Normal' has no images in test/")

    d = _write_dataset(base / "class-mismatch")
    (d / "test" / "Normal").rename(d / "test" / "Healthy")
    out["class-mismatch"] = (d, "different classes")

    d = _write_dataset(base / "no-test")
    shutil.rmtree(d / "test")
    out["no-test"] = (d, "no test/")

    d = base / "all-unreadable"
    for split in ("train", "test"):
        for c in ("Covid", "Normal"):
            (d / split / c).mkdir(parents=True)
            (d / split / c / "scan.png").write_text("not a picture")
    out["all-unreadable"] = (d, "no readable image in train/")

    d = _write_dataset(base / "junk")
    for split in ("train", "test"):
        for c in ("Covid", "Normal", "Viral Pneumonia"):
            (d / split / c / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
            (d / split / c / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 64)
        (d / split / "Covid" / "notes").mkdir()
        (d / split / "Covid" / "notes" / "todo.txt").write_text("ask about patient 7")
    (d / ".DS_Store").write_bytes(b"\x00" * 16)
    (d / "train" / "__MACOSX").mkdir()
    out["junk"] = (d, None)

    d = _write_dataset(base / "with-corpus")  # every corpus file dropped into the training folders
    for i, case in enumerate(CASES):
        name, data, _ = corpus[case]
        if case == "png-8000x8000":
            continue  # decoding it is covered above; here it would only slow the cache
        (d / "train" / ("Covid", "Normal", "Viral Pneumonia")[i % 3] / f"{case}-{name}").write_bytes(data)
    out["with-corpus"] = (d, None)
    return out


DATASET_CASES = ["missing", "a-file", "empty", "class-empty", "class-mismatch", "no-test", "all-unreadable",
                 "junk", "with-corpus"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, corpus) -> dict:
    d = build_datasets(tmp_path_factory.mktemp("datasets"), corpus)
    assert sorted(d) == sorted(DATASET_CASES)
    return d


def _broken_corpus_files(c: dict) -> set[str]:
    return {f"{k}-{c[k][0]}" for k in CASES if isinstance(c[k][2], str)}


@pytest.mark.parametrize("case", DATASET_CASES)
def test_engine_datasets(case, datasets, corpus):
    folder, expected = datasets[case]
    if expected is not None:
        with pytest.raises(DatasetError) as ei:
            src = open_dataset(folder)
            load_split(src, "train", 32)
        assert expected in str(ei.value) and "\n" not in str(ei.value)
        return
    src = open_dataset(folder)
    train, test = load_split(src, "train", 32), load_split(src, "test", 32)
    assert src.classes == ["Covid", "Normal", "Viral Pneumonia"] and len(test) == 12
    if case == "junk":
        assert len(train) == 12 and not train.errors
        ignored = " ".join(src.ignored)
        assert ".DS_Store" in ignored and "Thumbs.db" in ignored and "notes" in ignored
        assert not any("__MACOSX" in c for c in src.classes)
    else:  # the odd-but-valid files are used, each broken one is skipped and named with its reason
        broken = _broken_corpus_files(corpus)
        valid = [c for c in CASES if c not in ("png-8000x8000", "dicom-no-extension") and f"{c}-{corpus[c][0]}"
                 not in broken]
        assert len(train) == 12 + len(valid)
        # a file without an extension is not taken for an image in a dataset folder: listed as ignored
        assert any(i.endswith("dicom-no-extension-IM000001") for i in src.ignored)
        assert sorted(e.split(": ", 1)[0].rsplit("/", 1)[-1] for e in train.errors) == sorted(broken)
        assert all(e.count(": ") >= 1 and "\n" not in e for e in train.errors)


@pytest.mark.parametrize("case", DATASET_CASES)
def test_cli_train_datasets(case, datasets, corpus, ckpt_root, capsys):
    folder, expected = datasets[case]
    rc = cli_main(["train", "--arch", "lenet5", "--data", str(folder), "--epochs", "1", "--img-size", "32",
                   "--quiet"])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if expected is not None:
        assert rc == 2
        lines = out.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.err
        assert not ckpt_root.exists() or not any(ckpt_root.iterdir())  # nothing half-written
        return
    assert rc == 0, out.err
    assert "test acc" in out.out
    run, = [p for p in ckpt_root.iterdir()]
    meta = json.loads((run / "run.json").read_text())
    if case == "with-corpus":  # the skipped files are named, in the run and on stderr
        n = len(_broken_corpus_files(corpus))
        assert len(meta["dataset"]["skipped"]) == n
        assert f"skipped {n} unreadable" in out.err
    else:
        assert meta["dataset"]["skipped"] == []


def test_cli_train_subprocess_bad_and_junk_dataset(datasets, ckpt_root):
    p = _cli("train", "--arch", "lenet5", "--data", str(datasets["class-mismatch"][0]), "--epochs", "1",
             "--img-size", "32", checkpoints=ckpt_root)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "different classes" in p.stderr
    p = _cli("train", "--arch", "lenet5", "--data", str(datasets["junk"][0]), "--epochs", "1", "--img-size", "32",
             "--quiet", checkpoints=ckpt_root)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "test acc" in p.stdout


def test_app_overview_dataset_inputs(datasets, ckpt_root, monkeypatch):
    """The Overview folder input, one session trying every folder in turn: one st.error for each bad one,
    the usable ones are taken (with ignored files counted), never an exception."""
    at = _app("pages/overview.py", ckpt_root, monkeypatch)
    for case in DATASET_CASES:
        folder, expected = datasets[case]
        at.text_input(key="ov_path").set_value(str(folder)).run()
        assert not at.exception, (case, [e.message for e in at.exception])
        errors = [e.value for e in at.error]
        if expected is not None and case != "all-unreadable":
            assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], (case, errors)
            continue
        assert not errors, (case, errors)
        assert any(f"Using **{folder.name}**" in s.value for s in at.success), case
        metrics = {m.label: m.value for m in at.metric}
        if case == "junk":
            assert metrics["Training images"] == "12" and int(metrics["Ignored files"]) >= 8
        if case == "all-unreadable":  # opens (the files look like images); nothing decodes, so no samples
            assert len(at.get("image")) == 0
            assert any("no readable image" in c.value for c in at.caption)


def test_app_train_job_on_an_unreadable_dataset_fails_with_a_message(datasets, ckpt_root):
    """The same folder launched as a training job: the job fails with the one-line reason, the worker lives."""
    from cxrviz.jobs import DONE, FAILED, JobRegistry
    from cxrviz.train import TrainConfig

    reg = JobRegistry(root=ckpt_root)
    bad, good = reg.submit([
        TrainConfig(arch="lenet5", data=str(datasets["all-unreadable"][0]), img_size=32, epochs=1),
        TrainConfig(arch="lenet5", data=str(datasets["junk"][0]), img_size=32, epochs=1)])
    assert reg.wait(120)
    assert reg.get(bad).status == FAILED and "no readable image in train/" in reg.get(bad).error
    assert reg.get(good).status == DONE and reg.get(good).run_id


# ================================================================================= security
def test_upload_over_the_limit_is_refused(lenet_run, tmp_path, monkeypatch, capsys):
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_UPLOAD_BYTES  # one limit plus 8 bytes
    with pytest.raises(ImageDecodeError) as ei:
        decode_image(big, name="huge-upload.png")
    one_line(str(ei.value), "huge-upload.png", "file too large")
    path = tmp_path / "huge-upload.png"
    path.write_bytes(big)
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(lenet_run[0]))
    assert cli_main(["predict", str(path)]) == 2
    assert "file too large" in capsys.readouterr().err
    for page, key in (("pages/compare.py", "compare_upload"), ("pages/explain.py", "explain_upload")):
        at = _app(page, lenet_run[0], monkeypatch)
        if page.endswith("explain.py"):
            at.radio(key="explain_how").set_value("Upload a radiograph").run()
        at.file_uploader(key=key).set_value(("huge-upload.png", big, "image/png")).run()
        assert not at.exception
        assert len(at.error) == 1 and at.error[0].value.startswith("huge-upload.png: file too large"), page
        assert f"limit {MAX_UPLOAD_BYTES // 2**20}" in at.error[0].value  # says what the limit is


def test_server_config_is_local_and_bounded():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = cfg["server"]
    assert server["address"] == "localhost"  # nobody else on the network reaches the app unless asked
    assert server["maxUploadSize"] * 2**20 == MAX_UPLOAD_BYTES  # the server and the decoder agree
    assert server["headless"] is True and cfg["browser"]["gatherUsageStats"] is False


def test_streamlit_does_not_collect_garbage_after_every_fragment_rerun():
    """Streamlit reads the repository's config: no full gc.collect after each script run. With it, the Train page's
    self-refreshing fragments (every 0.5-1 s) held the GIL for most of each second: a ResNet-18 job launched from
    the page trained in 38.7 s instead of 27.8 s (README, "Performance")."""
    r = subprocess.run([sys.executable, "-c", "import streamlit.config as c; c.get_config_options(force_reparse=True); "
                        "print(c.get_option('runner.postScriptGC'))"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")})
    assert r.returncode == 0, r.stderr[-1000:]
    assert r.stdout.strip() == "False"
