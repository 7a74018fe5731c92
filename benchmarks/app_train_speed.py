"""Training speed from the Train page, with Streamlit's post-script garbage collection on and off.

    python benchmarks/app_train_speed.py [--epochs 8] [--rounds 2] [--port 8597]

Each round starts a fresh ``streamlit run app.py`` twice, with ``STREAMLIT_RUNNER_POST_SCRIPT_GC=true`` and
``false`` (on and off alternate, so a noisy machine slows both alike), with its own checkpoint folder; opens the
Train page in chromium (``/usr/bin/chromium``, Playwright), waits 20 s for the page's speed probes, sets Epochs,
launches the default job (ResNet-18 at its recipe on the built-in synthetic set) and waits for "done: test acc"
with the live view open; then prints the stored run's own ``timings``. README, "Performance".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(gc_on: bool, epochs: int, port: int, ckpt: Path) -> dict:
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "CXRVIZ_CHECKPOINTS": str(ckpt),
           "STREAMLIT_RUNNER_POST_SCRIPT_GC": "true" if gc_on else "false"}
    srv = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    time.sleep(6)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            pg = b.new_page(viewport={"width": 1400, "height": 1800})
            pg.goto(f"http://localhost:{port}/train", wait_until="networkidle")
            pg.wait_for_timeout(20000)
            box = pg.get_by_label("Epochs", exact=True)
            box.fill(str(epochs))
            box.press("Enter")
            pg.wait_for_timeout(3000)
            pg.get_by_role("button", name=re.compile(r"Launch 1 job")).click()
            pg.get_by_text(re.compile(r"done: test acc")).first.wait_for(timeout=600_000)
            b.close()
    finally:
        srv.terminate()
        srv.wait()
    run, = [d for d in ckpt.iterdir() if (d / "run.json").exists()]
    t = json.loads((run / "run.json").read_text())["timings"]
    return {"post_script_gc": gc_on, **{k: round(t[k], 1) for k in ("train_s", "eval_s", "total_s")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--port", type=int, default=8597)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for gc_on in (True, False):
                print(json.dumps(one(gc_on, args.epochs, args.port, Path(tmp) / f"r{r}-{gc_on}")), flush=True)


if __name__ == "__main__":
    main()
