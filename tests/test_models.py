"""The model zoo: one parametrised test covers every registered architecture."""
from dataclasses import replace

import pytest
import torch

from cxrviz.models import REGISTRY, SEED_MODELS, build_model, count_params, get_spec, measure_gflops
from cxrviz.models.googlenet import GoogLeNet
from cxrviz.models.registry import UnknownArchitecture
from cxrviz.train import TrainConfig

# torchvision's reference parameter counts at 1000 classes, 3 input channels (same architectures)
REFERENCE_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "vgg11": 132_868_840, "vgg13": 133_053_736, "vgg16": 138_365_992,
    "vgg19": 143_678_248,
}
# published forward cost in G multiply-adds at 224 px (torchvision model cards / papers)
PUBLISHED_GFLOPS = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet152": 11.5, "vgg16": 15.47,
                    "vgg19": 19.6, "googlenet": 1.5}


@pytest.mark.parametrize("name,expected", sorted(REFERENCE_PARAMS.items()))
def test_param_counts_match_reference(name, expected):
    assert count_params(build_model(name, num_classes=1000, in_channels=3)) == expected


def test_googlenet_without_aux_matches_reference():
    assert count_params(GoogLeNet(num_classes=1000, in_channels=3, aux_logits=False)) == 6_624_904


def test_alexnet_is_the_2012_paper_layout():
    m = build_model("alexnet", num_classes=1000, in_channels=3)
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    lrn_after = [type(m.features[i - 2]).__name__ for i, x in enumerate(m.features)
                 if isinstance(x, torch.nn.LocalResponseNorm)]
    assert lrn_after == ["Conv2d", "Conv2d"]  # LRN after conv1 and conv2 (conv, ReLU, LRN)
    fcs = [x for x in m.classifier if isinstance(x, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [4096, 4096, 1000]
    assert [x.p for x in m.classifier if isinstance(x, torch.nn.Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("name,published", sorted(PUBLISHED_GFLOPS.items()))
def test_gflops_match_published(name, published):
    g = measure_gflops(build_model(name, num_classes=1000, in_channels=3), 224, in_channels=3)
    assert abs(g - published) / published < 0.05, g


def test_depths_as_papers_count():
    assert {n: get_spec(n).depth for n in SEED_MODELS} == {"alexnet": 8, "vgg19": 19, "googlenet": 22,
                                                          "resnet18": 18}
    assert get_spec("resnet152").depth == 152 and get_spec("vgg11").depth == 11


def test_every_family_present():
    names = set(REGISTRY)
    assert {"alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "googlenet", "resnet18", "resnet34", "resnet50",
            "resnet101", "resnet152", "lenet5"} <= names


@pytest.mark.parametrize("name", list(REGISTRY))
def test_forward_backward_at_min_size(name):
    spec = get_spec(name)
    torch.manual_seed(0)
    model = spec.build(num_classes=3, in_channels=1)
    x = torch.randn(2, 1, spec.min_size, spec.min_size)
    model.train()
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (2, 3)
    loss = sum(o.sum() for o in (out if isinstance(out, tuple) else (out,)) if o is not None)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3) and torch.isfinite(y).all()
    # the Grad-CAM target layer exists and produces a spatial map
    feats = []
    h = spec.target_module(model).register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        model(x)
    h.remove()
    assert feats and feats[0].dim() == 4


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "googlenet", "lenet5"])
def test_any_size_above_minimum(name):
    model = build_model(name).eval()
    for s in (get_spec(name).min_size + 7, 100, 160):
        with torch.no_grad():
            assert model(torch.zeros(1, 1, s, s)).shape == (1, 3)


def test_three_channel_input_and_class_count():
    m = build_model("resnet18", num_classes=5, in_channels=3).eval()
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 5)


def test_googlenet_aux_heads_only_in_training():
    m = build_model("googlenet").train()
    out = m(torch.randn(2, 1, 64, 64))
    assert isinstance(out, tuple) and len(out) == 3 and all(o.shape == (2, 3) for o in out)
    m.eval()
    assert isinstance(m(torch.randn(2, 1, 64, 64)), torch.Tensor)


def test_unknown_architecture_message():
    with pytest.raises(UnknownArchitecture, match="unknown architecture 'resnet19'"):
        get_spec("resnet19")
    assert get_spec("ResNet-18").name == "resnet18"


def test_recipes_differ_where_they_must():
    # AlexNet has no normalisation layers: its recipe is not ResNet's
    assert get_spec("alexnet").recipe != get_spec("resnet18").recipe
    assert get_spec("alexnet").recipe.optimizer == "adam" and get_spec("alexnet").recipe.lr < 1e-3
    # VGG-19 chose SGD at 0.005 and then per-image standardisation on validation (README, "Accuracy"); the rest
    # of the family keeps 0.01 and the set's mean/sd, the same recipe otherwise, and a run of VGG-19 gets its own
    v19, v16 = get_spec("vgg19").recipe, get_spec("vgg16").recipe
    assert (v19.optimizer, v19.lr, v16.lr) == ("sgd", 0.005, 0.01) and v19.standardize and not v16.standardize
    assert replace(v19, lr=v16.lr, standardize=False) == v16
    c = TrainConfig(arch="vgg19").resolved()
    assert c.lr == 0.005 and c.standardize is True
    assert TrainConfig(arch="vgg19", standardize=False).resolved().standardize is False  # an explicit choice wins
    assert TrainConfig(arch="resnet18").resolved().standardize is False
    assert TrainConfig(arch="resnet18", standardize=True).resolved().standardize is True


# the Grad-CAM layers as they were hand-counted before they were named by rule (CamLayer)
CAM_LAYERS_BEFORE = {"lenet5": "features.4", "alexnet": "features.13", "vgg11": "features.27", "vgg13": "features.33",
                     "vgg16": "features.42", "vgg19": "features.51", "googlenet": "inception5b", "resnet18": "layer4",
                     "resnet34": "layer4", "resnet50": "layer4", "resnet101": "layer4", "resnet152": "layer4"}


@pytest.mark.parametrize("name", list(REGISTRY))
def test_cam_layer_rule_resolves_to_a_spatial_block(name):
    """Every architecture's CAM layer, resolved on the model, is today's layer and a conv stage (the
    activation after the last convolution, an inception block or a residual stage) with a spatial output."""
    from torch import nn

    from cxrviz.models.googlenet import Inception
    from cxrviz.models.resnet import BasicBlock, Bottleneck

    spec = get_spec(name)
    model = build_model(name).eval()
    resolved, layer = spec.cam_layer.resolve(model)
    assert resolved == spec.target_layer == CAM_LAYERS_BEFORE[name]
    assert layer is model.get_submodule(CAM_LAYERS_BEFORE[name])
    modules = dict(model.named_modules())
    if isinstance(layer, nn.ReLU):  # the activation of the last convolution (through its BatchNorm)
        parent, idx = resolved.rsplit(".", 1)
        before = [modules[f"{parent}.{i}"] for i in range(int(idx) - 1, -1, -1)]
        before = [m for m in before if not isinstance(m, nn.BatchNorm2d)]
        assert isinstance(before[0], nn.Conv2d)
        assert not any(isinstance(m, nn.Conv2d) for n, m in modules.items()
                       if n.startswith(parent + ".") and int(n.split(".")[1]) > int(idx))
    elif isinstance(layer, nn.Sequential):  # the last residual stage
        assert all(isinstance(b, (BasicBlock, Bottleneck)) for b in layer)
    else:
        assert isinstance(layer, Inception)
    out = []
    h = layer.register_forward_hook(lambda m, i, o: out.append(o))
    size = max(64, spec.min_size)
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    h.remove()
    assert out and out[0].dim() == 4 and out[0].shape[-1] > 1 and out[0].shape[-2] > 1


def test_cam_layer_rule_survives_an_inserted_layer():
    """Inserting a layer into ``features`` moves every index, not the rule's layer."""
    from torch import nn

    spec = get_spec("vgg11")
    model = build_model("vgg11")
    old = spec.target_module(model)
    layers = list(model.features.children())
    model.features = nn.Sequential(nn.Identity(), *layers)
    name, layer = spec.cam_layer.resolve(model)
    assert layer is old and name == "features.28"
