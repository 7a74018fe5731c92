"""End to end in a real browser: `streamlit run app.py`, open External validation, type a folder and a class
map, score a stored run, and see the internal-vs-external table; the record lands in the run folder.
Saves a screenshot to test-artifacts/e2e_external.png. Skipped when Playwright or /usr/bin/chromium is
missing (CI installs both)."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not found", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_folder):
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("e2e-ext")
    ckpt = tmp / "checkpoints"
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=ckpt)
    ext = tmp / "external"
    for cls, name in (("Covid", "COVID-19"), ("Normal", "Normal")):
        shutil.copytree(synthetic_folder / "test" / cls, ext / name)
    port = _free_port()
    env = {**os.environ, "CXRVIZ_CHECKPOINTS": str(ckpt), "CXRVIZ_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1"}
    log = open(tmp / "streamlit.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError("streamlit did not start:\n" + (tmp / "streamlit.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url, list_runs(ckpt)[0][0], ext
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print("streamlit log (tail):\n" + (tmp / "streamlit.log").read_text()[-3000:])


def test_score_a_run_on_an_external_folder(server):
    url, run, ext = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{url}/external", wait_until="domcontentloaded")
            page.get_by_text("Enter an external folder").wait_for(timeout=120_000)
            folder = page.get_by_label("External folder")
            folder.fill(str(ext))
            folder.press("Enter")
            page.get_by_text("is not a class of the run").first.wait_for(timeout=120_000)  # COVID-19 unmapped
            cmap = page.get_by_role("textbox", name="Class map (folder=class, comma-separated)")
            cmap.fill("COVID-19=Covid")
            cmap.press("Enter")
            page.get_by_text("Not scored on this folder yet").wait_for(timeout=120_000)
            page.get_by_role("button", name="Score the selected runs").click()
            page.get_by_text("Internal vs external").first.wait_for(timeout=180_000)
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            page.wait_for_timeout(1000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "e2e_external.png"), full_page=True)
        finally:
            browser.close()
    recs = [f for f in (run.path / "external").glob("*.json") if not f.name.startswith(".")]
    assert len(recs) == 1  # the score is stored with the run
