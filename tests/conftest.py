import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "Covid19-dataset"  # the default for CXRVIZ_TEST_DATA when it exists
# the synthetic_folder fixture: images per class per split (its test split is what every tiny run is scored on)
SYNTHETIC_COUNTS = {"train": 24, "test": 8}
SYNTHETIC_FOLDER = "synthetic-cxr"  # the folder's name, i.e. the dataset label runs trained on it carry

# keep tests from touching the user's checkpoints/ and cache
_TMP = Path(os.environ.get("PYTEST_CXRVIZ_TMP", "/tmp/cxrviz-tests-%d" % os.getpid()))
os.environ.setdefault("CXRVIZ_CACHE", str(_TMP / "cache"))
os.environ.setdefault("CXRVIZ_CHECKPOINTS", str(_TMP / "checkpoints"))

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _strict() -> bool:
    """In CI (``CI`` set) or with ``CXRVIZ_REQUIRE_REAL_DATA=1``, a missing requirement fails instead of skipping."""
    return bool(os.environ.get("CI")) or os.environ.get("CXRVIZ_REQUIRE_REAL_DATA") == "1"


def _missing(reason: str):
    if _strict():
        pytest.fail(reason + " (required here: CI or CXRVIZ_REQUIRE_REAL_DATA=1 is set)", pytrace=False)
    pytest.skip(reason)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium for the browser tests (Playwright drives it). Skips with a reason where
    Chromium or Playwright is missing; fails instead in CI (.ci/run installs both)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements.txt)")
    if not os.path.exists(CHROMIUM):
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(tmp: Path, timeout: float | None = None):
    """A fresh `streamlit run app.py` on a free port, with its own checkpoints and cache (``tmp/checkpoints``,
    ``tmp/cache``) and its log at ``tmp/streamlit.log``; yields its URL once its health check answers, and
    stops it on exit (printing the log's tail: shown on failure). Without ``timeout`` the wait is bounded by the
    test timeout (pytest.ini), not by a clock here; a server that exits before answering is an error."""
    port = _free_port()
    env = {**os.environ, "CXRVIZ_CHECKPOINTS": str(tmp / "checkpoints"), "CXRVIZ_CACHE": str(tmp / "cache"),
           "PYTHONUNBUFFERED": "1"}
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = None if timeout is None else time.time() + timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or (end is not None and time.time() > end):
                raise RuntimeError("streamlit did not start:\n" + (tmp / "streamlit.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print("streamlit log (tail):\n" + (tmp / "streamlit.log").read_text()[-3000:])


def wait_for(pred, timeout: float = 300.0, poll: float = 0.02) -> bool:
    """Poll until ``pred()``; True if it came true within ``timeout`` seconds. The timeout only guards against a
    hang (shared machines are slow), it is not a speed requirement: timings belong to ``python -m cxrviz bench``."""
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(poll)
    return False


def real_data_path() -> Path:
    """Where the real Kaggle folder is looked for: ``CXRVIZ_TEST_DATA``, else ``../shared/data/Covid19-dataset``."""
    env = os.environ.get("CXRVIZ_TEST_DATA")
    return Path(env) if env else DATA


# tests/test_real_data.py is about the real dataset itself: without the folder it is not collected (a fresh clone
# runs the whole rest of the suite with nothing skipped), and the header says so; in CI its absence is a failure
collect_ignore = [] if (real_data_path() / "train").is_dir() or _strict() else ["test_real_data.py"]


def _real_data_line() -> str:
    where = real_data_path()
    if collect_ignore:
        return (f"real-data tests (tests/test_real_data.py) not collected: no dataset at {where} "
                "(set CXRVIZ_TEST_DATA; CI requires it)")
    return f"real-data tests ran on {where}"


def pytest_report_header(config):
    return _real_data_line()


def pytest_terminal_summary(terminalreporter):  # also under -q, which hides the header
    terminalreporter.write_line(_real_data_line())


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real Kaggle folder, for the few tests that are about that dataset itself (its counts, its
    duplicates, its JPEGs): ``CXRVIZ_TEST_DATA``, or ``../shared/data/Covid19-dataset`` when it exists.
    Skips with the reason where it is absent; fails instead in CI or with CXRVIZ_REQUIRE_REAL_DATA=1."""
    path = real_data_path()
    if not (path / "train").is_dir():
        _missing(f"real dataset not found at {path} (set CXRVIZ_TEST_DATA to the Kaggle Covid19-dataset folder)")
    return path


@pytest.fixture(scope="session")
def synthetic_folder(tmp_path_factory) -> Path:
    """The built-in synthetic set written to disk in the Kaggle layout (train/ and test/, one folder per class;
    PNG and JPEG, grayscale and RGB, a few non-square sizes): for every test that needs real image files but
    not the real dataset. Session-scoped and read-only: copy it before changing it."""
    from cxrviz.data.synthetic import write_folder

    return write_folder(tmp_path_factory.mktemp("synthetic-data") / SYNTHETIC_FOLDER, counts=dict(SYNTHETIC_COUNTS))


@pytest.fixture
def ckpt_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, synthetic_folder):
    """A few real (tiny) runs trained on the synthetic folder (real files on disk) and stored on disk, shared by
    read-only tests. Returns (root, [Run...]), newest first."""
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    for arch, seed in (("resnet18", 0), ("resnet18", 1), ("lenet5", 0), ("alexnet", 0)):
        # fp32: "auto" probes bf16 on a CPU with bf16 instructions, and that choice depends on the machine's load
        cfg = TrainConfig(arch=arch, data=str(synthetic_folder), img_size=64, epochs=2, seed=seed, batch_size=32,
                          precision="fp32")
        save_run(train(cfg), root=root)
    return root, list_runs(root)[0]


@pytest.fixture(scope="session")
def mixed_runs(tmp_path_factory, tiny_runs, synthetic_folder):
    """A runs folder mixing datasets and statuses, for leaderboard tests: copies of the 4 ``tiny_runs`` (the
    synthetic folder), one LeNet-5 run on that folder stopped after its first epoch, and one LeNet-5 run on the
    built-in synthetic set (another dataset: another test split).
    Returns (root, [Run...]). Shared: tests that delete runs must copy it first."""
    import shutil
    import threading

    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    src_root, runs = tiny_runs
    root = tmp_path_factory.mktemp("mixed-runs")
    for r in runs:
        shutil.copytree(r.path, root / r.id)
    stop = threading.Event()

    def stop_after_first_epoch(p):
        if p.kind == "epoch" and p.epoch >= 1:
            stop.set()

    cfg = TrainConfig(arch="lenet5", data=str(synthetic_folder), img_size=32, epochs=3, seed=7, batch_size=32)
    save_run(train(cfg, callback=stop_after_first_epoch, stop=stop), root=root)
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=root)
    return root, list_runs(root)[0]


def _bad_input_files() -> dict:
    """Each bad input of the issue as (file name, bytes, a fragment of the expected one-line message)."""
    import io
    import struct
    import zlib

    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    def chunk(t: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + t + payload + struct.pack(">I", zlib.crc32(t + payload) & 0xFFFFFFFF)

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    y, x = np.mgrid[0:64, 0:64]
    buf = io.BytesIO()
    Image.fromarray(((x * 4 + y) % 256).astype(np.uint8)).save(buf, "PNG")
    png = buf.getvalue()

    def dicom(tsyntax=ExplicitVRLittleEndian, pixels: bool = False) -> bytes:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = tsyntax
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "DX"
        if pixels:
            ds.Rows, ds.Columns, ds.SamplesPerPixel = 16, 16, 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = encapsulate([b"\x00garbage\xff" * 10])
            ds["PixelData"].VR = "OB"
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
        return out.getvalue()

    return {
        "non-image": ("notes.png", b"these are my notes, not a radiograph\n" * 20, "not an image"),
        "zero-byte": ("empty.jpg", b"", "empty file"),
        "truncated": ("cut.png", png[: len(png) // 2], "truncated"),
        "bomb": ("bomb.png", bomb, "decompression bomb"),
        "dicom-no-pixels": ("report.dcm", dicom(), "no pixel data"),
        "dicom-bad-syntax": ("odd.dcm", dicom(UID("1.2.3.4.5.6.7"), pixels=True),
                             "cannot decode DICOM transfer syntax"),
    }


@pytest.fixture(scope="session")
def bad_inputs() -> dict:
    """{case: (file name, bytes, expected message fragment)} for the issue's bad-input list."""
    return _bad_input_files()


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory):
    """One tiny real run (LeNet-5, 32 px, 1 epoch on the built-in synthetic set: a few seconds), for tests
    that need a stored run but not the real data. Returns (root, Run). Shared: copy before changing it."""
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    root = tmp_path_factory.mktemp("lenet-run")
    save_run(train(TrainConfig(arch="lenet5", img_size=32, epochs=1, seed=0, batch_size=32)), root=root)
    runs, problems = list_runs(root)
    assert len(runs) == 1 and not problems
    return root, runs[0]


def tiny_train_settings(at, seeds: str = "0"):
    """On the Train page (an AppTest): LeNet-5 only, 32 px, 1 epoch, the given seeds; no error shown."""
    at.checkbox(key="t_arch_resnet18").uncheck()
    at.checkbox(key="t_arch_lenet5").check()
    at.number_input(key="t_img_size").set_value(32)
    at.number_input(key="t_epochs").set_value(1)
    at.text_input(key="t_seeds").set_value(seeds).run()
    assert not at.exception and not at.error
    return at


_READING = (r"^(?P<a>.+) vs (?P<b>.+): (?:they agree on every image, (?P<p0>p [=<] [\d.]+) "
            r"— no evidence that either is "
            r"better|they disagree on (?P<d>\d+) images? \((?P=a) alone right on (?P<na>\d+), (?P=b) alone right on "
            r"(?P<nb>\d+)\), (?P<p>p [=<] [\d.]+) — (?P<verdict>evidence that (?P<better>.+) is better on these test "
            r"images|no evidence that either is better))$")


def check_reading(text: str, alpha: float = 0.05) -> dict:
    """Parse one plain-language McNemar reading and check it says what its own numbers mean: the counts add
    up, the p-value is the exact two-sided binomial test of those counts, and "evidence that X is better" is
    said exactly when p < alpha, naming the run that alone got more images right. Returns the parsed fields."""
    import re

    from scipy.stats import binomtest

    from cxrviz.metrics import fmt_p

    m = re.match(_READING, text.strip())
    assert m, f"not a McNemar reading: {text!r}"
    g = m.groupdict()
    if g["d"] is None:
        assert g["p0"] == "p = 1.00", text
        return g
    d, na, nb = int(g["d"]), int(g["na"]), int(g["nb"])
    assert d == na + nb > 0, text
    p = binomtest(min(na, nb), d, 0.5).pvalue
    assert g["p"] == fmt_p(p), (text, p)
    if p < alpha:
        assert g["better"] == (g["a"] if na > nb else g["b"]), text
    else:
        assert g["verdict"] == "no evidence that either is better", text
    return g


@pytest.fixture(scope="session")
def deck_runs(tmp_path_factory):
    """The deck's four models (AlexNet, VGG-19, GoogLeNet, ResNet-18), each a real stored run: 1 epoch at 64 px
    on a tiny synthetic folder (2 + 1 images per class). For tests about "every model". Returns (root, [Run...])."""
    from cxrviz.data.synthetic import write_folder
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    data = write_folder(tmp_path_factory.mktemp("deck-data") / "deck-mini", counts={"train": 2, "test": 1}, size=64)
    root = tmp_path_factory.mktemp("deck-runs")
    for arch in ("alexnet", "vgg19", "googlenet", "resnet18"):
        save_run(train(TrainConfig(arch=arch, data=str(data), img_size=64, epochs=1, seed=0, batch_size=6)), root=root)
    runs, problems = list_runs(root)
    assert len(runs) == 4 and not problems
    return root, runs
