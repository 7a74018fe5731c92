"""End to end in a real browser: `streamlit run app.py`, open Train, launch a long run on the synthetic
set, watch its chart gain points, stop it from its card, run a tiny one to the end, reload and still see
both. Measures the delay between each epoch's end (the job's "wall" timestamp, carried in the chart's
customdata) and its point showing up in the browser's chart, and saves a screenshot to
test-artifacts/e2e_train.png.

Also: a fresh server opened first on /train or /compare lists app.py's named pages in its sidebar (it once
listed the files of pages/).

Skipped with a reason when Playwright or /usr/bin/chromium is missing; a failure instead in CI (the conftest's
``chromium`` fixture; .ci/run installs both)."""
import re
from pathlib import Path

import pytest

from conftest import streamlit_server
from cxrviz.runs import read_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOT = ARTIFACTS / "e2e_train.png"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

PAGE_TITLES = ["Overview", "Train", "Leaderboard", "External validation", "Seminar view", "Compare",
               "Explain"]  # app.py's order

# Records, in the page, when each epoch point (keyed by its wall timestamp) first appears in any chart's
# test-accuracy trace, how many points the busiest such trace had over time, and the most job-card Stop
# buttons ever on screen at once (a Streamlit race once showed a running job's card twice).
POLLER = """
() => {
  if (window.__cx) return;
  window.__cx = {seen: {}, counts: []};
  setInterval(() => {
    let most = 0;
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
      for (const tr of (gd.data || [])) {
        if (!tr.meta || (tr.meta.kind !== 'val_acc' && tr.meta.kind !== 'test_acc') || !tr.customdata) continue;
        most = Math.max(most, tr.x ? tr.x.length : 0);
        for (const cd of tr.customdata) {
          const w = cd && cd[0];
          if (w && !(String(w) in window.__cx.seen)) window.__cx.seen[String(w)] = Date.now() / 1000;
        }
      }
    }
    const stops = [...document.querySelectorAll('button')].filter(b => /Stop$/.test(b.innerText.trim())).length;
    window.__cx.maxStops = Math.max(window.__cx.maxStops || 0, stops);
    const c = window.__cx.counts;
    if (!c.length || c[c.length - 1][1] !== most) c.push([Date.now() / 1000, most]);
  }, 20);
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, chromium):
    tmp = tmp_path_factory.mktemp("e2e")
    with streamlit_server(tmp) as url:
        yield url, tmp / "checkpoints"


def _wait_idle(page) -> None:
    """Wait for the current script run to finish (Streamlit's running indicator disappears)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"] img, "
                           "[data-testid=\"stStatusWidgetRunningIcon\"]')", timeout=180_000)


def _checkbox(page, label: str):
    return page.locator('[data-testid="stCheckbox"]').filter(has=page.get_by_text(label, exact=True)).first


def test_train_page_end_to_end(server, chromium):
    from playwright import sync_api

    url, ckpt = server
    # First a run far longer than the test watches it: the chart must gain points epoch by epoch whatever
    # this machine's speed (a 6-epoch run once finished inside one refresh on a fast CI machine), then the
    # card's Stop button ends it and keeps the epochs so far. Then a 3-epoch run that finishes.
    size, epochs = 64, 1000
    label = f"LeNet-5 {size}px e{epochs} s0"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(180_000)  # generous: CI machines are shared and slow
            # a newcomer's path: the app opens on Overview (synthetic set), then Train from the sidebar
            page.goto(url)
            page.get_by_text("SYNTHETIC DATA").first.wait_for()
            page.locator(".js-plotly-plot").first.wait_for()  # plotly's bundle is loaded from here on
            page.locator('[data-testid="stSidebarNav"]').get_by_text("Train", exact=True).click()
            page.get_by_role("button", name=re.compile("Quick demo")).wait_for()
            _wait_idle(page)
            page.evaluate(POLLER)

            # LeNet-5 only, 64 px, seed 0
            _checkbox(page, "ResNet-18").locator("label").click()
            _wait_idle(page)
            _checkbox(page, "LeNet-5").locator("label").click()
            _wait_idle(page)
            for name, value in (("Image size (px)", str(size)), ("Epochs", str(epochs))):
                box = page.get_by_label(name, exact=True)
                box.fill(value)
                box.press("Enter")
                _wait_idle(page)
            page.get_by_text(f"per image at {size} px").wait_for()
            launch = page.get_by_role("button", name=re.compile(r"Launch 1 job"))
            launch.click()

            card = page.get_by_text(label).first
            card.wait_for(timeout=180_000)
            # watch until the chart has shown at least three different partial counts
            page.wait_for_function(
                "() => window.__cx && new Set(window.__cx.counts.map(c => c[1]).filter(n => n > 0)).size >= 3",
                timeout=180_000)
            # one card per job, at every moment watched (sampled every 20 ms in the page)
            stops = page.get_by_role("button", name=re.compile("Stop$"))
            most = page.evaluate("() => window.__cx.maxStops")
            print(f"\njob cards with a Stop button: {stops.count()} now, at most {most} at once since the launch")
            assert stops.count() == 1 and most == 1, "a job showed more than one card"
            stops.first.click()
            page.get_by_text(re.compile(r"Stopped after \d+ epoch")).first.wait_for(timeout=180_000)
            page.wait_for_timeout(1500)  # let the stopped card's chart render
            cx = page.evaluate("() => window.__cx")

            counts = [n for _, n in cx["counts"]]
            t0 = cx["counts"][0][0]
            print("\ntest-accuracy points in the chart over time: "
                  + ", ".join(f"{n} at +{t - t0:.1f} s" for t, n in cx["counts"]))
            partial = [n for n in counts if 0 < n < epochs]
            # (a redraw of the whole page briefly shows no chart: 0 points; the chart itself only grows)
            assert len(set(partial)) >= 3 and partial == sorted(partial), "the chart did not gain points epoch by epoch"
            delays = [seen - float(w) for w, seen in sorted(cx["seen"].items())]
            print("epoch end -> point in the browser's chart: " + ", ".join(f"{d:.2f} s" for d in delays)
                  + f" (mean {sum(delays) / len(delays):.2f} s, max {max(delays):.2f} s)")
            # every point shown was seen after its epoch ended (timings are reported, not asserted: `bench`)
            assert len(delays) == max(counts) and all(d > -0.5 for d in delays)

            # the stopped run is on disk, with the epochs it finished, marked stopped
            runs = [p for p in ckpt.iterdir() if (p / "run.json").exists()] if ckpt.is_dir() else []
            assert len(runs) == 1 and runs[0].name.startswith(f"lenet5-{size}px-s0-")
            run = read_run(runs[0])
            assert run.status == "stopped" and 3 <= len(run.history["history"]) < epochs

            # then a tiny run that finishes: 3 epochs
            _wait_idle(page)
            box = page.get_by_label("Epochs", exact=True)
            box.fill("3")
            box.press("Enter")
            _wait_idle(page)
            short = f"LeNet-5 {size}px e3 s0"
            page.get_by_role("button", name=re.compile(r"Launch 1 job")).click()
            page.get_by_text(re.compile(r"done: test acc")).first.wait_for(timeout=180_000)
            page.get_by_text(short).first.wait_for()
            runs = {read_run(p).status: read_run(p) for p in ckpt.iterdir() if (p / "run.json").exists()}
            assert set(runs) == {"stopped", "done"} and len(runs["done"].history["history"]) == 3

            # jobs live in the server, not the tab: a reload shows the same stopped and finished runs
            page.reload()
            page.get_by_text(label).first.wait_for()
            page.get_by_text(short).first.wait_for()
            page.get_by_text(re.compile(r"Stopped after \d+ epoch")).first.wait_for()
            page.get_by_text(re.compile(r"done: test acc")).first.wait_for()
            page.locator(".js-plotly-plot").first.wait_for()
            _wait_idle(page)
            assert page.get_by_text(label).count() >= 1 and page.get_by_text(short).count() >= 1
            ARTIFACTS.mkdir(exist_ok=True)
            page.set_viewport_size({"width": 1400, "height": 2600})  # Streamlit scrolls inside the page
            page.wait_for_timeout(1000)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            print(f"screenshot: {SCREENSHOT}")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "e2e_failure.png"), full_page=True)
            print(f"failure screenshot: {ARTIFACTS / 'e2e_failure.png'}")
            raise
        finally:
            browser.close()


@pytest.mark.parametrize("first_path", ["/train", "/compare"])
def test_first_url_of_a_fresh_server_shows_the_named_pages(first_path, chromium, tmp_path):
    """Opening a page other than the first one, on a server no one has opened yet (a bookmark, a browser
    reopening its tabs after a restart), must show app.py's named pages, not the files of pages/."""
    from playwright import sync_api

    title = {"/train": "Train", "/compare": "Compare"}[first_path]
    with streamlit_server(tmp_path) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(180_000)
            page.goto(url + first_path)
            # the page itself has run (its title is drawn) and the script is idle
            page.locator("h1").filter(has_text=title).first.wait_for()
            _wait_idle(page)
            links = page.locator('[data-testid="stSidebarNav"] a')
            names = [" ".join(t.split()[1:]) if len(t.split()) > 1 else t for t in links.all_inner_texts()]
            assert names == PAGE_TITLES, f"sidebar after opening {first_path} first: {names}"
            assert "common" not in " ".join(links.all_inner_texts())
            assert page.url.rstrip("/").endswith(first_path)
            # and a second visitor, after that, gets the same sidebar
            other = browser.new_page()
            other.goto(url + "/leaderboard")
            other.locator("h1").filter(has_text="Leaderboard").first.wait_for()
            _wait_idle(other)
            texts = other.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert [" ".join(t.split()[1:]) for t in texts] == PAGE_TITLES
        finally:
            browser.close()
