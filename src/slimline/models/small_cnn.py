"""A small CNN for 28x28 grey images (the demo's Fashion-MNIST baseline)."""

from __future__ import annotations

import torch
from torch import nn

from slimline.models.zoo import MODELS, ModelEntry


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four Conv+BN+ReLU layers (two stride-2 pools), global pooling and a linear classifier.

    ``width`` scales every layer, so ``SmallCNN(width=16)`` is a student with ~1/4 of the MACs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(in_channels, w),
            nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            *_conv_bn(2 * w, 4 * w),
            *_conv_bn(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


for _name, _w, _desc in (
    ("small_cnn", 32, "demo baseline"),
    ("small_cnn_half", 15, "a student with under 1/4 of the MACs"),
):
    MODELS.register(_name)(
        ModelEntry(
            factory=lambda num_classes=10, in_channels=1, _w=_w: SmallCNN(in_channels, num_classes, _w),
            input_shape=(1, 28, 28),
            num_classes=10,
            dataset="fashion-mnist",
            description=f"small CNN for 28x28 grey images, width {_w} ({_desc})",
        )
    )
