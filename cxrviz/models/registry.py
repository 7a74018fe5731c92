"""One registry for every architecture: builder, metadata and default training recipe."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Callable

import torch
from torch import nn

from ..errors import CxrvizError
from . import alexnet, googlenet, lenet, resnet, vgg


@dataclass(frozen=True)
class Recipe:
    """Default training settings that actually train this architecture from scratch."""

    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    batch_size: int = 32
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    img_size: int = 128
    epochs: int = 20
    augment: str = "light"  # none | light | standard (see cxrviz.data.augment)
    ema: float = 0.0  # weight averaging decay per step (0 = off)
    standardize: bool = False  # per-image intensity standardisation instead of the training set's mean/sd


@dataclass(frozen=True)
class DeckFigure:
    """The seminar deck's figures for one model: a single 20-epoch run on a Colab GPU, tested on the Kaggle
    set's 66-image test split."""

    acc: float  # test accuracy, fraction
    minutes: float  # training time


@dataclass(frozen=True)
class CamLayer:
    """Where Grad-CAM looks, named so that inserting a layer does not move it: the module ``parent`` itself,
    or the last module of type ``last`` inside it (resolved on the built model)."""

    parent: str
    last: type[nn.Module] | None = None

    def resolve(self, model: nn.Module) -> tuple[str, nn.Module]:
        """(dotted name, module) in ``model``; LookupError if there is no such layer."""
        root = model.get_submodule(self.parent)
        if self.last is None:
            return self.parent, root
        found = [(n, m) for n, m in root.named_modules() if n and isinstance(m, self.last)]
        if not found:
            raise LookupError(f"no {self.last.__name__} inside {self.parent!r}")
        name, module = found[-1]
        return f"{self.parent}.{name}", module

    def __str__(self) -> str:
        return self.parent if self.last is None else f"last {self.last.__name__} in {self.parent}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    display: str
    depth: int  # weight layers on the longest path, as the papers count them
    paper: str
    builder: Callable[..., nn.Module] = field(repr=False)
    cam_layer: CamLayer  # the Grad-CAM target
    min_size: int
    recipe: Recipe = Recipe()
    deck: DeckFigure | None = None  # the deck's figures, for the deck's four models

    @property
    def seed_model(self) -> bool:
        """One of the deck's four models."""
        return self.deck is not None

    @property
    def target_layer(self) -> str:
        """Dotted name of the Grad-CAM target module (resolved on a model built on the meta device)."""
        return _target_name(self.name)

    def build(self, num_classes: int = 3, in_channels: int = 1) -> nn.Module:
        return self.builder(num_classes=num_classes, in_channels=in_channels)

    def target_module(self, model: nn.Module) -> nn.Module:
        return self.cam_layer.resolve(model)[1]

    def meta(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("builder", "recipe", "cam_layer", "deck")}
        d.update(target_layer=self.target_layer, seed_model=self.seed_model, recipe=asdict(self.recipe),
                 deck=asdict(self.deck) if self.deck else None)
        return d


@lru_cache(maxsize=None)
def _target_name(name: str) -> str:
    spec = REGISTRY[name]
    with torch.device("meta"):
        return spec.cam_layer.resolve(spec.build())[0]


ALEXNET = "Krizhevsky, Sutskever & Hinton, ImageNet Classification with Deep CNNs, NIPS 2012"
VGG = "Simonyan & Zisserman, Very Deep Convolutional Networks, ICLR 2015 (BatchNorm variant)"
GOOGLENET = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"
RESNET = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
LENET = "LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998"

# Recipes: 20-epoch, 128 px runs on the Kaggle Covid19 set (README, "Accuracy"). Chosen on validation only (issue 11;
# benchmarks/recipe_sweep.py, 3 seeds, final-epoch accuracy on a 15 % stratified split, the test split scored once and
# reported): ResNet-18's recipe beat five shortcut-aimed options (the lung crop tied it); GoogLeNet's beat strong
# augmentation, CLAHE and per-image standardisation; AlexNet's tied variants were separated by 5-fold cross-validation
# (recipe_sweep.py --folds 5: no augmentation 92.4 % against CLAHE and standardisation 91.2 %, strong augmentation 87.3
# %). VGG-19 (3 seeds, bf16 on the CPU) chose SGD at 0.005 over the family's 0.01 and over 0.01 with weight averaging
# (EMA 0.99): validation 87.4 / 85.6 / 86.5 %, a margin under one of the 37 validation images per seed. VGG-11/13/16
# keep 0.01 (VGG-16 was run only with it). On top of 0.005, per-image standardisation scored 91.0 % on validation (CLAHE
# 88.3, strong augmentation 83.8): validation's pick, so VGG-19's recipe standardises each image. AlexNet has no
# normalisation layers: with SGD at 0.01 it predicts one class for six epochs and ends near 73 %; Adam at 1e-4 trains
# it. GoogLeNet and ResNet-18 take AdamW at 1e-3; VGG-19 with AdamW stalls (62 % after 8 epochs) but trains with SGD
# at 0.01 (0.02 diverges).
_ALEX = Recipe(optimizer="adam", lr=1e-4, weight_decay=0.0, batch_size=32, warmup_epochs=2, label_smoothing=0.0,
               augment="none")
_VGG = Recipe(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, batch_size=32, warmup_epochs=1,
              augment="none")
_VGG19 = replace(_VGG, lr=0.005, standardize=True)
_INCEPTION = Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=32, augment="none")
_RES = Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=32, augment="none")
_LENET = Recipe(optimizer="adamw", lr=2e-3, weight_decay=1e-4, batch_size=32, label_smoothing=0.0, augment="light")

# Grad-CAM looks at the activation after the last convolution of ``features`` (LeNet, AlexNet, VGG), the last
# inception block (GoogLeNet) or the last residual stage (ResNet).
_AFTER_LAST_CONV = CamLayer("features", last=nn.ReLU)


def _vgg(name: str, depth: int, builder: Callable[..., nn.Module], deck: DeckFigure | None = None,
         recipe: Recipe = _VGG) -> ModelSpec:
    return ModelSpec(name=name, family="VGG", display=f"VGG-{depth}", depth=depth, paper=VGG, builder=builder,
                     cam_layer=_AFTER_LAST_CONV, min_size=32, recipe=recipe, deck=deck)


def _resnet(name: str, depth: int, builder: Callable[..., nn.Module], deck: DeckFigure | None = None) -> ModelSpec:
    return ModelSpec(name=name, family="ResNet", display=f"ResNet-{depth}", depth=depth, paper=RESNET,
                     builder=builder, cam_layer=CamLayer("layer4"), min_size=32, recipe=_RES, deck=deck)


_SPECS = [
    ModelSpec(name="lenet5", family="LeNet", display="LeNet-5", depth=5, paper=LENET, builder=lenet.lenet5,
              cam_layer=_AFTER_LAST_CONV, min_size=32, recipe=_LENET),
    ModelSpec(name="alexnet", family="AlexNet", display="AlexNet", depth=8, paper=ALEXNET, builder=alexnet.alexnet,
              cam_layer=_AFTER_LAST_CONV, min_size=63, recipe=_ALEX, deck=DeckFigure(acc=0.803, minutes=4.71)),
    _vgg("vgg11", 11, vgg.vgg11),
    _vgg("vgg13", 13, vgg.vgg13),
    _vgg("vgg16", 16, vgg.vgg16),
    _vgg("vgg19", 19, vgg.vgg19, deck=DeckFigure(acc=0.833, minutes=5.61), recipe=_VGG19),
    ModelSpec(name="googlenet", family="GoogLeNet", display="GoogLeNet", depth=22, paper=GOOGLENET,
              builder=googlenet.googlenet, cam_layer=CamLayer("inception5b"), min_size=32, recipe=_INCEPTION,
              deck=DeckFigure(acc=0.894, minutes=4.61)),
    _resnet("resnet18", 18, resnet.resnet18, deck=DeckFigure(acc=0.909, minutes=4.79)),
    _resnet("resnet34", 34, resnet.resnet34),
    _resnet("resnet50", 50, resnet.resnet50),
    _resnet("resnet101", 101, resnet.resnet101),
    _resnet("resnet152", 152, resnet.resnet152),
]
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
SEED_MODELS = [s.name for s in _SPECS if s.seed_model]  # the deck's four: alexnet, vgg19, googlenet, resnet18
FAMILIES = list(dict.fromkeys(s.family for s in _SPECS))


class UnknownArchitecture(CxrvizError, KeyError):
    """A name that is not in the registry; still a KeyError for lookups (``str()`` is not quoted)."""


def get_spec(name: str) -> ModelSpec:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in REGISTRY:
        raise UnknownArchitecture(f"unknown architecture {name!r}; choose from: {', '.join(REGISTRY)}")
    return REGISTRY[key]


def build_model(name: str, num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    return get_spec(name).build(num_classes=num_classes, in_channels=in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_gflops(model: nn.Module, img_size: int, in_channels: int = 1) -> float:
    """Forward cost of one image in G multiply-adds (the unit papers call "GFLOPs"), measured with
    torch.utils.flop_counter (which counts a multiply-add as 2 FLOPs) on the eval-mode graph."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, img_size, img_size))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


@lru_cache(maxsize=512)
def model_stats(name: str, img_size: int = 224, num_classes: int = 3, in_channels: int = 1) -> dict:
    """Parameters, forward GFLOPs (as :func:`measure_gflops`) and whether it has BatchNorm, of one
    architecture at one image size (raised to its ``min_size``). Built on the meta device: no weights are
    allocated or initialised, so the whole zoo takes a second instead of a minute."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = get_spec(name)
    size = max(int(img_size), spec.min_size)
    with torch.device("meta"):
        model = spec.build(num_classes=num_classes, in_channels=in_channels).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, size, size))
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return {"params": count_params(model), "gflops": counter.get_total_flops() / 2e9, "has_bn": has_bn}


def model_table(img_size: int = 224, num_classes: int = 3, in_channels: int = 1) -> list[dict]:
    """Every registered architecture (registry order, grouped by family) with its metadata, default recipe
    and :func:`model_stats` at ``img_size``."""
    rows = []
    for s in _SPECS:
        st = model_stats(s.name, img_size, num_classes, in_channels)
        r = s.recipe
        rows.append({
            "name": s.name, "display": s.display, "family": s.family, "depth": s.depth,
            "params": st["params"], "gflops": st["gflops"], f"gflops@{img_size}": round(st["gflops"], 3),
            "min_size": s.min_size, "target_layer": s.target_layer, "optimizer": r.optimizer, "lr": r.lr,
            "batch_size": r.batch_size, "img_size": r.img_size, "epochs": r.epochs, "seed_model": s.seed_model,
            "paper": s.paper,
        })
    return rows
