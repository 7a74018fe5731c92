"""End to end in a real browser: `streamlit run app.py`, open External validation, type a folder and a class
map, score a stored run, and see the internal-vs-external table; the record lands in the run folder.
Saves a screenshot to test-artifacts/e2e_external.png. Skipped with a reason when Playwright or
/usr/bin/chromium is missing; a failure instead in CI (the conftest's ``chromium`` fixture; .ci/run installs
both)."""
import shutil
from pathlib import Path

import pytest

from conftest import streamlit_server

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, synthetic_folder, chromium):
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    tmp = tmp_path_factory.mktemp("e2e-ext")
    ckpt = tmp / "checkpoints"
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=ckpt)
    ext = tmp / "external"
    for cls, name in (("Covid", "COVID-19"), ("Normal", "Normal")):
        shutil.copytree(synthetic_folder / "test" / cls, ext / name)
    with streamlit_server(tmp, timeout=90) as url:
        yield url, list_runs(ckpt)[0][0], ext


def test_score_a_run_on_an_external_folder(server, chromium):
    from playwright import sync_api

    url, run, ext = server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
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
