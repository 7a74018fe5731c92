"""VGG-11/13/16/19 with BatchNorm (Simonyan & Zisserman, ICLR 2015; BN variant as in torchvision).

Built from the channel / 'M' configuration lists of the paper's table 1 (configs A, B, D, E).
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import init_weights

__all__ = ["VGG", "CFGS", "vgg11", "vgg13", "vgg16", "vgg19"]

CFGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: list[int | str], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, cfg: str, num_classes: int = 3, in_channels: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_layers(CFGS[cfg], in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(cfg: str, num_classes: int, in_channels: int) -> VGG:
    return VGG(cfg, num_classes=num_classes, in_channels=in_channels)


def vgg11(num_classes: int = 3, in_channels: int = 1) -> VGG:
    return _vgg("A", num_classes, in_channels)


def vgg13(num_classes: int = 3, in_channels: int = 1) -> VGG:
    return _vgg("B", num_classes, in_channels)


def vgg16(num_classes: int = 3, in_channels: int = 1) -> VGG:
    return _vgg("D", num_classes, in_channels)


def vgg19(num_classes: int = 3, in_channels: int = 1) -> VGG:
    return _vgg("E", num_classes, in_channels)
