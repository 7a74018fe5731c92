"""Preprocessing options (issue 11.5): each changes the model's input as intended, is recorded with the run,
and is applied again when the stored run is loaded for prediction."""
import torch

from cxrviz.data.augment import AUGMENT_LEVELS, augment_batch
from cxrviz.data.preprocess import clahe_uint8
from cxrviz.runs import list_runs, load_model, save_run
from cxrviz.train import Preprocess, TrainConfig, TrainSession, train


def _low_contrast(n=4, s=32):
    g = torch.Generator().manual_seed(0)
    base = torch.linspace(100, 140, s).view(1, 1, 1, s).expand(n, 1, s, s)
    return (base + torch.randint(0, 6, (n, 1, s, s), generator=g)).to(torch.uint8)


def test_clahe_spreads_a_low_contrast_image():
    x = _low_contrast()
    y = clahe_uint8(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert float(y.float().std()) > 2 * float(x.float().std())


def test_standardize_gives_each_image_zero_mean_unit_sd():
    x = _low_contrast()
    x[0] //= 2  # a darker image: per-image standardisation removes that difference
    out = Preprocess(0.5, 0.25, 1, standardize=True)(x)
    m, sd = out.mean(dim=(1, 2, 3)), out.std(dim=(1, 2, 3))
    assert torch.allclose(m, torch.zeros(4), atol=1e-5) and torch.allclose(sd, torch.ones(4), atol=1e-4)
    plain = Preprocess(0.5, 0.25, 1)(x)
    assert not torch.allclose(plain.mean(dim=(1, 2, 3)), torch.zeros(4), atol=0.1)


def test_strong_augmentation_crops_harder_than_standard():
    strong, std = AUGMENT_LEVELS["strong"], AUGMENT_LEVELS["standard"]
    assert strong.scale[0] < std.scale[0] and strong.ratio[0] < std.ratio[0]
    x = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(64, 1, 64, 64).contiguous()

    def spread(cfg):  # how much of the horizontal ramp survives the crop: smaller under a harder zoom
        y = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(0))
        return float((y[:, :, :, -1] - y[:, :, :, 0]).mean())

    assert spread(strong) < spread(std)


def test_options_are_recorded_used_in_training_and_reapplied_at_prediction(tmp_path):
    cfg = TrainConfig(arch="lenet5", img_size=32, epochs=1, seed=0, clahe=True, standardize=True, augment="strong",
                      precision="fp32")
    s = TrainSession(cfg)
    s.setup()
    from cxrviz.data.dataset import load_split, synthetic_source

    raw = load_split(synthetic_source(), "test", 32)
    assert torch.equal(s.test_set.images, clahe_uint8(raw.images)) and s.pre.standardize
    r = train(cfg)
    assert r.config["clahe"] and r.config["standardize"] and r.config["augment"] == "strong"
    assert r.norm["clahe"] and r.norm["standardize"]
    save_run(r, root=tmp_path)
    _, pre = load_model(list_runs(tmp_path)[0][0])
    assert pre.clahe and pre.standardize
    x = raw.images[:4]
    assert torch.allclose(pre(x), Preprocess(0, 1, 1, standardize=True)(clahe_uint8(x)))


def test_lung_crop_keeps_the_lung_fields_and_cuts_the_border():
    from cxrviz.data.preprocess import cropped_template, lung_crop, lung_crop_box
    from cxrviz.lungs import lung_mask

    s = 64
    x0, y0, x1, y1 = lung_crop_box(s)
    assert 0 < x0 and x1 < s and 0 < y0 and y1 < s  # a real crop ...
    ys, xs = lung_mask(s).nonzero()
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1  # ... around the whole template
    img = torch.full((1, 1, s, s), 100, dtype=torch.uint8)
    img[..., :, :x0] = 255  # a bright border (a marker, a label) outside the box
    out = lung_crop(img)
    assert out.shape == img.shape and out.dtype == torch.uint8 and int(out.max()) == 100
    # the template moved into the cropped frame covers more of it than the template covers of the full frame
    assert lung_mask(s, cropped_template(s)).mean() > lung_mask(s).mean()


def test_lung_crop_is_recorded_used_in_training_and_applied_at_prediction(synthetic_folder, tmp_path):
    import numpy as np

    from cxrviz.data.dataset import load_split, open_dataset
    from cxrviz.data.preprocess import lung_crop
    from cxrviz.predict import ImageInput, predict_runs

    cfg = TrainConfig(arch="lenet5", data=str(synthetic_folder), img_size=32, epochs=1, seed=0, lung_crop=True,
                      precision="fp32", val_fraction=0)
    s = TrainSession(cfg)
    s.setup()
    raw = load_split(open_dataset(str(synthetic_folder)), "test", 32)
    assert torch.equal(s.test_set.images, lung_crop(raw.images))  # the model trains and is tested on the crop
    r = train(cfg)
    assert r.config["lung_crop"] and r.norm["lung_crop"]
    save_run(r, root=tmp_path)
    run = list_runs(tmp_path)[0][0]
    model, pre = load_model(run)
    assert pre.lung_crop
    x = raw.images[:4]
    assert torch.allclose(pre(x), Preprocess(r.norm["mean"], r.norm["std"], 1)(lung_crop(x)))
    stored = np.asarray(run.predictions["probs"])
    with torch.no_grad():  # the evaluation path (the test split through the loaded run) ...
        again = torch.softmax(model(pre(raw.images)), 1).numpy()
    np.testing.assert_allclose(again, stored, atol=1e-4)
    for i in (0, 5, len(stored) - 1):  # ... and the prediction path (one image file, as the app and CLI read it)
        preds, errors = predict_runs(ImageInput(path=synthetic_folder / run.predictions["paths"][i]), [run])
        assert not errors
        np.testing.assert_allclose(preds[0].probs, stored[i], atol=1e-4)
    assert not torch.allclose(Preprocess(r.norm["mean"], r.norm["std"], 1)(x), pre(x))  # without it: no crop


def test_a_lung_crop_runs_probes_and_grad_cam_are_in_the_cropped_frame(tmp_path):
    """Its Grad-CAMs cover the crop it saw: the probe measures them against the template moved into that frame,
    and the explanation is drawn on the same crop of the image."""
    from cxrviz.data.dataset import load_split, synthetic_source
    from cxrviz.data.preprocess import cropped_template, lung_crop_view
    from cxrviz.explain import display_image, explain_runs
    from cxrviz.lungs import lung_mask
    from cxrviz.probes import probe_run

    save_run(train(TrainConfig(arch="lenet5", img_size=32, epochs=1, lung_crop=True, precision="fp32")), root=tmp_path)
    run = list_runs(tmp_path)[0][0]
    rec = probe_run(run, store=False)
    assert rec["cam"]["area_share"] == float(lung_mask(32, cropped_template(32)).mean())
    assert rec["cam"]["area_share"] > float(lung_mask(32).mean())
    gray = load_split(synthetic_source(), "test", 96).images[0, 0].numpy()
    ex, = explain_runs(gray, [run])
    assert ex.ok and ex.overlay.shape[:2] == lung_crop_view(display_image(gray)).shape


def test_train_page_lung_crop_option_reaches_the_job(ckpt_root):
    """The Train page's Preprocessing choice "lung crop" launches a job whose config has lung_crop set; its
    Intensity scaling choice "per image" overrides LeNet-5's recipe (the set's mean/sd)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from conftest import tiny_train_settings
    from pages.common import job_registry

    reg = job_registry()
    reg.stop_all(keep=False)
    assert reg.wait(60)
    reg.clear_finished()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("pages/train.py").run()
        assert "lung crop" in at.multiselect(key="t_preprocess").options
        at.multiselect(key="t_preprocess").set_value(["lung_crop"])
        assert at.selectbox(key="t_intensity").value == "recipe"
        at.selectbox(key="t_intensity").set_value("per_image")
        tiny_train_settings(at).button(key="t_launch").click().run()
        assert not at.exception
        snap, = reg.snapshots()
        assert snap.config["lung_crop"] and not snap.config["clahe"] and snap.config["standardize"] is True
    finally:
        reg.stop_all(keep=False)
        reg.wait(60)
        reg.clear_finished()


def test_standardisation_follows_the_recipe_unless_the_user_chooses(ckpt_root):
    """VGG-19's recipe standardises each image, the others use the set's mean/sd: the CLI and the Train page
    leave it to the recipe unless told (--standardize / --no-standardize; the page's Intensity scaling)."""
    from cxrviz.cli import _configs, build_parser

    def configs(*flags):
        a = build_parser().parse_args(["train", "--arch", "vgg19", "--img-size", "32", *flags])
        return {c.arch: c.standardize for c in _configs(a, ["vgg19", "vgg16"])}

    assert configs() == {"vgg19": True, "vgg16": False}
    assert configs("--no-standardize") == {"vgg19": False, "vgg16": False}
    assert configs("--standardize") == {"vgg19": True, "vgg16": True}


def test_train_page_intensity_recipe_names_each_architectures_choice(ckpt_root):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/train.py").run()
    at.checkbox(key="t_arch_resnet18").uncheck()
    at.checkbox(key="t_arch_vgg19").check()
    at.checkbox(key="t_arch_vgg16").check().run()
    assert not at.exception
    assert at.selectbox(key="t_intensity").options[0] == "recipe: training set's mean/sd (VGG-16), per image (VGG-19)"
    assert not at.error  # both resolve: VGG-19 standardises each image, VGG-16 does not; the plan says so
    plan = at.dataframe[0].value
    assert dict(zip(plan["model"], plan["intensity"])) == {"VGG-16": "training set's mean/sd", "VGG-19": "per image"}


def test_cli_lung_crop_flag_is_recorded(ckpt_root, capsys):
    from cxrviz.cli import main

    assert main(["train", "--arch", "lenet5", "--img-size", "32", "--epochs", "1", "--quiet", "--lung-crop"]) == 0
    run, = list_runs(ckpt_root)[0]
    assert run.config["lung_crop"] and run.meta["norm"]["lung_crop"] and not run.config["clahe"]


def test_a_run_stored_before_the_preprocessing_options_shares_its_seed_group(tmp_path):
    from cxrviz.runs import Run

    cfg = TrainConfig(arch="lenet5").resolved().to_dict()
    old = {k: v for k, v in cfg.items() if k not in ("clahe", "standardize", "lung_crop")}
    meta = {"dataset": {"root": None}}

    def run(c, seed):
        return Run(f"r{seed}", tmp_path, {**meta, "config": {**c, "seed": seed}})

    assert run(cfg, 0).group_key == run(old, 1).group_key
    assert run({**cfg, "lung_crop": True}, 2).group_key != run(old, 1).group_key
