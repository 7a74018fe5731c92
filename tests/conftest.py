import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "Covid19-dataset"

# keep tests from touching the user's checkpoints/ and cache
_TMP = Path(os.environ.get("PYTEST_CXRVIZ_TMP", "/tmp/cxrviz-tests-%d" % os.getpid()))
os.environ.setdefault("CXRVIZ_CACHE", str(_TMP / "cache"))
os.environ.setdefault("CXRVIZ_CHECKPOINTS", str(_TMP / "checkpoints"))

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real dataset not found at {DATA}")
    return DATA


@pytest.fixture
def ckpt_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "checkpoints"
    monkeypatch.setenv("CXRVIZ_CHECKPOINTS", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, real_data):
    """A few real (tiny) runs trained on the real data and stored on disk, shared by read-only tests."""
    from cxrviz.runs import list_runs, save_run
    from cxrviz.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    for arch, seed in (("resnet18", 0), ("resnet18", 1), ("lenet5", 0), ("alexnet", 0)):
        cfg = TrainConfig(arch=arch, data=str(real_data), img_size=64, epochs=2, seed=seed, batch_size=32)
        save_run(train(cfg), root=root)
    return root, list_runs(root)[0]


@pytest.fixture(scope="session")
def mixed_runs(tmp_path_factory, tiny_runs, real_data):
    """A runs folder mixing datasets and statuses, for leaderboard tests: copies of the 4 ``tiny_runs`` (real
    data), one real LeNet-5 run stopped after its first epoch, and one LeNet-5 run on the synthetic set.
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

    cfg = TrainConfig(arch="lenet5", data=str(real_data), img_size=32, epochs=3, seed=7, batch_size=32)
    save_run(train(cfg, callback=stop_after_first_epoch, stop=stop), root=root)
    save_run(train(TrainConfig(arch="lenet5", data=None, img_size=32, epochs=1, seed=0, batch_size=32)), root=root)
    return root, list_runs(root)[0]
