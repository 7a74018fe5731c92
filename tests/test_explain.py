"""Grad-CAM through the grad-cam package (cxrviz.explain), predictions of stored runs on one image
(cxrviz.predict), and clean one-line errors of ``python -m cxrviz predict``. Real radiographs, real models,
real stored runs (the tiny_runs fixture), the real library."""
import copy
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cxrviz.cli import main as cli_main
from cxrviz.data import decode_image, open_dataset
from cxrviz.explain import (
    CAM_METHODS,
    CLASS_AGNOSTIC,
    SLOW_METHODS,
    ExplainError,
    compute_cam,
    display_image,
    explain_runs,
    misclassified,
    overlay,
)
from cxrviz.models import REGISTRY, get_spec
from cxrviz.plots.explain import side_by_side_png
from cxrviz.predict import (
    ImageInput,
    ModelCache,
    agreement,
    best_runs,
    get_test_image,
    list_test_images,
    predict_image,
    predict_runs,
    stored_test_image,
)
from cxrviz.runs import load_model
from cxrviz.train import Preprocess


@pytest.fixture(scope="module")
def radiograph(tmp_path_factory) -> np.ndarray:
    """One chest radiograph at a radiograph's resolution (a built-in phantom rendered at 480 px, written as a
    PNG file), decoded by the real decoder."""
    from PIL import Image

    from cxrviz.data import synthetic

    imgs, labels = synthetic.make_split("test", 480, n_per_class=1)
    path = tmp_path_factory.mktemp("radiograph") / "covid.png"
    Image.fromarray(imgs[int(np.flatnonzero(labels == 0)[0])]).save(path)
    return decode_image(path)


def _input(gray: np.ndarray, size: int) -> torch.Tensor:
    from cxrviz.data import resize_square

    return Preprocess(0.5, 0.25, 1)(torch.from_numpy(resize_square(gray, size)).view(1, 1, size, size))


def _check_map(cam: np.ndarray, size: int) -> None:
    assert cam.shape == (size, size)
    assert cam.dtype == np.float32
    assert np.isfinite(cam).all()
    assert cam.min() >= 0.0 and cam.max() <= 1.0
    assert cam.std() > 1e-3, "the map is (nearly) constant"


# ------------------------------------------------------------------------------------------ every architecture
@pytest.mark.parametrize("arch", list(REGISTRY))
def test_cam_of_every_architecture_on_a_real_radiograph(arch, radiograph):
    """Untrained (seeded) model of every registered architecture, at max(min_size, 64) px: every fast method
    gives a finite map of the input's size with non-zero variance, at the registry's target layer."""
    spec = get_spec(arch)
    size = max(spec.min_size, 64)
    torch.manual_seed(0)
    model = spec.build(num_classes=3, in_channels=1).eval()
    x = _input(radiograph, size)
    for method in CAM_METHODS:
        if method in SLOW_METHODS and arch != "lenet5":  # ScoreCAM: checked on LeNet here, on tiny runs below
            continue
        _check_map(compute_cam(model, spec, x, None, method), size)
    # a fixed target class: every class gives a valid map; an untrained model's map for one class can be all
    # zero (ReLU of negative evidence), so non-constant is required of at least one class, not of each
    fixed = [compute_cam(model, spec, x, k, "GradCAM") for k in range(3)]
    for cam in fixed:
        assert cam.shape == (size, size) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
    assert max(cam.std() for cam in fixed) > 1e-3


@pytest.mark.parametrize("arch", ["alexnet", "vgg11", "lenet5", "resnet18", "googlenet"])
def test_gradcam_equals_a_hand_computation(arch, radiograph):
    """AlexNet, VGG and LeNet target in-place ReLU modules. (1) The activations and gradients the library's
    hooks record on the original in-place model equal those of full autograd on a copy without in-place ops.
    (2) The map from compute_cam (graph cut at the target layer, channels-last) equals GradCAM computed by
    hand. In float64: a random-init CAM is a small difference of large terms, float32 rounding would
    dominate it."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    spec = get_spec(arch)
    size = max(spec.min_size, 64)
    torch.manual_seed(1)
    model = spec.build(3, 1).eval().double()
    plain, ref = copy.deepcopy(model), copy.deepcopy(model)
    for m in ref.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    x = _input(radiograph, size).double()
    k = 1
    acts = {}
    h = spec.target_module(ref).register_forward_hook(lambda mod, i, o: acts.__setitem__("a", o))
    out = ref(x)
    h.remove()
    (g,) = torch.autograd.grad(out[0, k], acts["a"])
    a = acts["a"].detach()

    lib = GradCAM(plain, [spec.target_module(plain)])
    try:
        library = lib(x, [ClassifierOutputTarget(k)])[0]
        rec_a = lib.activations_and_grads.activations[0]
        rec_g = lib.activations_and_grads.gradients[0]
    finally:
        lib.activations_and_grads.release()
    assert torch.allclose(rec_a, a, rtol=1e-9, atol=1e-12)
    assert torch.allclose(rec_g, g, rtol=1e-9, atol=1e-15)

    raw = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)).numpy()
    # the library scales to [0, 1] per layer (with the upsampling) and again after averaging the layers
    expected = scale_cam_image(scale_cam_image(raw, (size, size)))[0]
    ours = compute_cam(model, spec, x, k, "GradCAM")
    assert np.abs(library - expected).max() < 1e-4
    assert np.abs(ours - expected).max() < 1e-4
    assert all(not p.requires_grad for p in model.parameters())  # no weight gradients were needed


def test_compute_cam_errors(radiograph):
    spec = get_spec("lenet5")
    model = spec.build(3, 1).eval()
    x = _input(radiograph, 32)
    with pytest.raises(ExplainError, match="unknown CAM method"):
        compute_cam(model, spec, x, None, "MagicCAM")
    with pytest.raises(ExplainError, match="no layer"):
        compute_cam(model, "features.99", x)
    with pytest.raises(ExplainError, match=r"\[1, C, H, W\]"):
        compute_cam(model, spec, x[0])
    with pytest.raises(ExplainError, match="GradCAM failed"):
        compute_cam(model, spec, x, 7)  # no class 7 among 3 outputs
    # hooks are gone after errors: a plain forward works and gives the same logits as before
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
    assert not model._forward_hooks and not spec.target_module(model)._forward_hooks


# ------------------------------------------------------------------------------------------ stored runs
def test_explain_runs_every_method_on_tiny_runs(tiny_runs, synthetic_folder):
    root, runs = tiny_runs
    import io

    from PIL import Image

    small = Image.open(sorted((synthetic_folder / "test" / "Normal").iterdir())[0]).convert("L")
    buf = io.BytesIO()
    small.resize((1000, 800), Image.BILINEAR).save(buf, "PNG")  # larger than the display size, not square
    img = ImageInput(data=buf.getvalue(), name="n.png")
    cache = ModelCache()
    preds, errors = predict_runs(img, runs, cache.get)
    assert not errors and len(preds) == len(runs)
    by_run = {p.run_id: p for p in preds}
    h, w = display_image(img.gray()).shape  # overlays come at the display size (longest side 448)
    assert (h, w) == (358, 448)
    for method in CAM_METHODS:
        use = [r for r in runs if r.arch == "lenet5"] if method in SLOW_METHODS else runs
        calls = []
        exs = explain_runs(img, use, cache.get, method, progress=lambda i, d, t: calls.append((i, d, t)))
        assert len(exs) == len(use)
        for r, ex in zip(use, exs):
            assert ex.ok, ex.error
            size = int(r.config["img_size"])
            _check_map(ex.cam, size)
            assert ex.overlay.shape == (h, w, 3) and ex.overlay.dtype == np.uint8
            # the CAM's forward pass is the prediction: same probabilities as the predict path
            assert ex.prediction.predicted == by_run[r.id].predicted
            assert np.allclose(ex.prediction.probs, by_run[r.id].probs, atol=1e-4)
            assert ex.target == (None if method in CLASS_AGNOSTIC else ex.prediction.predicted)
        if method in SLOW_METHODS:
            assert calls and calls[-1][1] == calls[-1][2]  # progress reached total


def test_fixed_target_class_for_all_models(tiny_runs, radiograph):
    _, runs = tiny_runs
    cache = ModelCache()
    for cls in ("Covid", "Viral Pneumonia"):
        exs = explain_runs(radiograph, runs, cache.get, "GradCAM", target=cls)
        assert all(e.ok and e.target == cls for e in exs)
    a = explain_runs(radiograph, runs[:1], cache.get, "GradCAM", target="Covid")[0].cam
    b = explain_runs(radiograph, runs[:1], cache.get, "GradCAM", target="Normal")[0].cam
    assert not np.allclose(a, b)  # different classes, different evidence
    bad = explain_runs(radiograph, runs, cache.get, "GradCAM", target="Cat")
    assert all(not e.ok and "not trained on class 'Cat'" in e.error and "\n" not in e.error for e in bad)
    assert all(e.prediction is not None for e in bad)  # the prediction still comes back


def test_each_run_gets_its_training_preprocessing(tiny_runs, radiograph):
    """predict_image == the model applied to the run's own resize + normalisation, by hand."""
    from cxrviz.data import resize_square

    _, runs = tiny_runs
    for r in runs:
        model, pre = load_model(r)
        s = int(r.config["img_size"])
        n = r.meta["norm"]
        x = (torch.from_numpy(resize_square(radiograph, s)).float().view(1, 1, s, s) / 255 - n["mean"]) / n["std"]
        with torch.no_grad():
            want = torch.softmax(model(x), 1)[0].numpy()
        got = predict_image(radiograph, [r])[0]
        assert np.allclose(got.probs, want, atol=1e-4)
        assert got.latency_ms > 0


def test_overlay_and_side_by_side_png(tiny_runs, radiograph):
    _, runs = tiny_runs
    cam = np.zeros((64, 64), np.float32)
    cam[16:48, 16:48] = 1.0
    g = radiograph[:300, :400]
    o = overlay(g, cam, 0.0)
    assert o.shape == (300, 400, 3) and o.dtype == np.uint8
    assert np.array_equal(o[..., 0], g) and np.array_equal(o[..., 2], g)  # alpha 0: the image itself
    o1 = overlay(g, cam, 1.0)
    assert not np.array_equal(o1[150, 200], o1[5, 5])  # hot centre, cold corner
    exs = explain_runs(radiograph, runs, None, "GradCAM")
    png = side_by_side_png(radiograph, exs, 0.5, title="test")
    im = Image.open(io.BytesIO(png))
    assert im.format == "PNG" and im.width > im.height


def test_misclassified_gallery(tiny_runs):
    _, runs = tiny_runs
    for r in runs:
        pr = r.predictions
        wrong = misclassified(r)
        n_wrong = sum(int(np.argmax(p)) != y for p, y in zip(pr["probs"], pr["labels"]))
        assert len(wrong) == n_wrong
        assert [w["confidence"] for w in wrong] == sorted((w["confidence"] for w in wrong), reverse=True)
        for w in wrong[:2]:
            assert w["true"] != w["predicted"]
            img = stored_test_image(w["path"], w["true"])
            ex = explain_runs(img, [r], None, "GradCAM")[0]
            assert ex.ok and ex.prediction.predicted == w["predicted"]


def test_test_split_helpers(synthetic_folder):
    src = open_dataset(synthetic_folder)
    items = list_test_images(src)
    assert len(items) == len(src.files["test"]) and items[0][1] in src.classes
    img = get_test_image(src, 0)
    assert img.true_class == items[0][1] and img.gray().ndim == 2
    syn = open_dataset(None)
    sitems = list_test_images(syn)
    simg = get_test_image(syn, 3)
    assert simg.true_class == sitems[3][1]
    again = stored_test_image(sitems[3][0], sitems[3][1])  # gallery path of a synthetic run
    assert np.array_equal(again.gray(), simg.gray())


def test_image_input_decodes_like_training(synthetic_folder):
    """A JPEG is decoded per run size with draft_size=size, exactly as the training cache does."""
    p = max((synthetic_folder / "test").rglob("*.jp*g"), key=lambda f: f.stat().st_size)
    img = ImageInput(data=p.read_bytes(), name=p.name)
    assert np.array_equal(img.gray(64), decode_image(p, draft_size=64))
    assert np.array_equal(img.gray(), decode_image(p, draft_size=448))


def test_dicom_and_png_of_the_same_pixels_predict_the_same(tiny_runs, radiograph, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    _, runs = tiny_runs
    g = radiograph[:512, :512].copy()
    g[0, 0], g[-1, -1] = 0, 255  # full range: the DICOM path rescales min..max to 0..255
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "PNG")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.set_pixel_data((4095 - g.astype(np.uint16) * 16).astype(np.uint16), "MONOCHROME1", 12)  # inverted, 12-bit
    dcm = io.BytesIO()
    ds.save_as(dcm, enforce_file_format=True)
    a = predict_image(ImageInput(data=buf.getvalue(), name="a.png").gray(), runs)
    b = predict_image(ImageInput(data=dcm.getvalue(), name="b.dcm").gray(), runs)
    for pa, pb in zip(a, b):
        assert np.allclose(pa.probs, pb.probs, atol=2e-3)
    assert agreement(a) == agreement(b)


def test_model_cache_loads_once_and_releases(tiny_runs):
    _, runs = tiny_runs
    cache = ModelCache()
    m1, _ = cache.get(runs[0])
    m2, _ = cache.get(runs[0])
    assert m1 is m2 and runs[0].id in cache.ids()
    cache.release(runs[0].id)
    assert runs[0].id not in cache.ids()
    assert cache.get(runs[0])[0] is not m1


def test_app_model_cache_keeps_the_16_last_used(lenet_run, tmp_path):
    """The README's "model cache of 16": the app's cache holds at most 16 loaded models, least recently used
    out first (17 copies of one stored run, each its own run id)."""
    import shutil

    from cxrviz.runs import read_run
    from pages.common import model_cache

    cache = model_cache()
    assert cache.max_items == 16
    cache = ModelCache(max_items=cache.max_items)  # the app's settings, a private instance for the test
    _, run = lenet_run
    runs = []
    for i in range(17):
        shutil.copytree(run.path, tmp_path / f"copy{i:02d}")
        runs.append(read_run(tmp_path / f"copy{i:02d}"))
    first = {r.id: cache.get(r)[0] for r in runs[:16]}
    assert cache.ids() == [r.id for r in runs[:16]]
    assert cache.get(runs[0])[0] is first[runs[0].id]  # a hit: now the most recently used
    cache.get(runs[16])  # the 17th evicts the least recently used: copy01, not copy00
    assert len(cache.ids()) == 16 and runs[1].id not in cache.ids() and runs[0].id in cache.ids()
    assert cache.ids()[-2:] == [runs[0].id, runs[16].id]
    assert cache.get(runs[1])[0] is not first[runs[1].id]  # loaded again


def test_best_runs_picks_one_per_architecture(tiny_runs):
    _, runs = tiny_runs
    best = best_runs(runs)
    assert sorted(r.arch for r in best) == sorted({r.arch for r in runs})


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("case", ["non-image", "zero-byte", "truncated", "bomb", "dicom-no-pixels",
                                  "dicom-bad-syntax"])
def test_cli_predict_bad_input_is_one_line(case, bad_inputs, tmp_path, ckpt_root, capsys):
    name, data, fragment = bad_inputs[case]
    p = tmp_path / name
    p.write_bytes(data)
    rc = cli_main(["predict", str(p)])
    out = capsys.readouterr()
    assert rc == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}: ")
    assert fragment.lower() in lines[0].lower()
    assert "Traceback" not in out.err + out.out


def test_cli_predict_no_runs_and_missing_file(radiograph, tmp_path, ckpt_root, capsys):
    p = tmp_path / "x.png"
    Image.fromarray(radiograph).save(p)
    assert cli_main(["predict", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no stored runs yet") and "\n" not in err
    assert cli_main(["predict", str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: missing.png: cannot read file") and "\n" not in err


def test_cli_predict_subprocess(tiny_runs, synthetic_folder, monkeypatch):
    root, runs = tiny_runs
    img = sorted((synthetic_folder / "test" / "Viral Pneumonia").iterdir())[0]
    env = {**__import__("os").environ, "CXRVIZ_CHECKPOINTS": str(root)}
    r = subprocess.run([sys.executable, "-m", "cxrviz", "predict", str(img)], capture_output=True, text=True,
                       env=env, cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "models say" in r.stdout
    assert len(best_runs(runs)) == r.stdout.count("px-s")  # one row per best run
