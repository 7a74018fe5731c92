"""``bench --scale`` end to end on a tiny configuration: the generated datasets are real files, every size is
measured in its own process, and the report says how each cost grows. Checks the report, never timings."""
import json
from pathlib import Path

from PIL import Image

from cxrviz.bench_scale import format_scale, run_scale, write_scale_dataset


def test_generated_dataset_is_real_files_in_the_kaggle_layout(tmp_path):
    root = write_scale_dataset(tmp_path / "d", 20, workers=1, px=96, log=lambda s: None)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".jpg"))
    assert len(files) == 20 and {p.suffix for p in files} == {".png", ".jpg"}
    assert {p.parent.parent.name for p in files} == {"train", "test"}
    with Image.open(files[0]) as im:
        assert 85 <= im.width <= 110 and 85 <= im.height <= 110


def test_bench_scale_report(tmp_path):
    out = tmp_path / "scale.json"
    r = run_scale(scales=(24, 48), workdir=str(tmp_path / "w"), out=str(out), log=lambda s: None, px=96, size=32,
                  steps=1, runs=(2, 4))
    saved = json.loads(out.read_text())
    a, b = saved["results"]["24"], saved["results"]["48"]
    assert a["images"] == 24 and b["images"] == 48 and b["train_n"] == 48 - 48 // 5  # every fifth is test
    for k in ("first_decode_s", "reload_s", "overview_first_s", "overview_reopen_s", "duplicates_s",
              "near_duplicates_s", "epoch_projected_s", "peak_rss", "peak_rss_training"):
        assert a[k] > 0 and b[k] > 0, k
    assert a["mapped_equal"] and b["mapped_equal"]  # the memory-mapped cache reads the same batches
    assert saved["speedup"]["workers1_s"] > 0 and saved["speedup"]["workers2_s"] > 0
    assert len(list(Path(saved["workdir"], "runs-4").iterdir())) == 4
    text = format_scale(r)
    assert "first decode (s)" in text and "growth per step" in text and "Leaderboard" in text
