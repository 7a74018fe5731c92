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
