"""GoogLeNet / Inception v1 (Szegedy et al., CVPR 2015) with two auxiliary classifiers.

Inception blocks with 1x1 reductions before the 3x3 and "5x5" branches and a 1x1 projection after the
pool branch. Like torchvision's reference (and unlike the paper) every conv is followed by BatchNorm and
the "5x5" branch uses a 3x3 kernel; keeping that layout makes the parameter count (6,624,904 at 1000
classes, no aux heads) and FLOPs (1.5 G multiply-adds) directly comparable with published figures.

Auxiliary classifiers sit after inception 4a and 4d. In training mode ``forward`` returns
``GoogLeNetOutputs(logits, aux1, aux2)``; the trainer adds their losses with weight 0.3. In eval mode it
returns plain logits, so evaluation and Grad-CAM see an ordinary classifier.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ._common import init_weights

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "googlenet"]


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux1: torch.Tensor | None
    aux2: torch.Tensor | None


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, **kw) -> None:
        super().__init__(nn.Conv2d(cin, cout, bias=False, **kw), nn.BatchNorm2d(cout, eps=0.001), nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = ConvBN(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(ConvBN(cin, c3r, kernel_size=1), ConvBN(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(ConvBN(cin, c5r, kernel_size=1), ConvBN(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), ConvBN(cin, pool_proj, kernel_size=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = ConvBN(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 3, in_channels: int = 1, aux_logits: bool = True,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBN(64, 64, kernel_size=1)
        self.conv3 = ConvBN(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        init_weights(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux1 is not None:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits


def googlenet(num_classes: int = 3, in_channels: int = 1, aux_logits: bool = True) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes, in_channels=in_channels, aux_logits=aux_logits)
