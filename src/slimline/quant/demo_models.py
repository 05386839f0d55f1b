"""A model built to show where post-training quantization fails and quantization-aware training does not.

:func:`outlier_resnet` takes a pretrained CIFAR ResNet and gives it a few *outlier weight channels*
without changing what it computes. Weight decay has switched off some channels of the pretrained
blocks' first BatchNorm (``|gamma| < 1e-3`` and ``beta < 0``: their ReLU output is 0 on every
training image). Such channels make it exact (gamma = 0, so the ReLU output is always 0) and the
block's second convolution's weights on those *input* channels are set to +-``magnitude`` x the
layer's largest weight. Nothing reaches the network's output through them, so float accuracy is
unchanged, but every output channel of those convolutions now has a weight range ``magnitude``
times too wide: min-max weight ranges (what ONNX Runtime uses for weights) spend the int8 grid on
weights that do nothing, and activation calibration cannot help; with the 7-bit weights ONNX
Runtime needs on x86 CPUs without VNNI, what is left is about 3-4 bits for the weights that matter.
Quantization-aware training lets the other weights adapt to that coarse grid (and learns the steps).
``benchmarks/quant_numerics/run.sh qat`` measures PTQ against QAT on it (OpenVINO/NNCF's 8-bit
weights cope with this model without QAT).

Such weights arise when nothing pulls them back: no gradient reaches weights whose inputs are
dead, and without weight decay (or with a schedule that ends early) they keep whatever value they
had. Use it as a slimline model::

    model: {name: "slimline.quant.demo_models:outlier_resnet",
            kwargs: {depth: 20, checkpoint: ".../resnet20-12fca82f.th", magnitude: 10}}
"""

from __future__ import annotations

import torch
from torch import nn


def dead_channels(bn: nn.BatchNorm2d, gamma_eps: float = 1e-3) -> list[int]:
    """Channels weight decay has switched off: ``|gamma| < gamma_eps`` and ``beta < 0``."""
    return ((bn.weight.detach().abs() < gamma_eps) & (bn.bias.detach() < 0)).nonzero().flatten().tolist()


def plant_outlier_weights(model: nn.Module, magnitude: float = 10.0, seed: int = 0) -> dict[str, list[int]]:
    """Make near-dead ``bn1`` channels exactly dead and give ``conv2``'s weights on them outlier values.

    Works on any model whose residual blocks have ``bn1`` feeding (through a ReLU) ``conv2``.
    Returns {block name: input channels given outlier weights}.
    """
    g = torch.Generator().manual_seed(seed)
    planted: dict[str, list[int]] = {}
    with torch.no_grad():
        for name, block in model.named_modules():
            bn1, conv2 = getattr(block, "bn1", None), getattr(block, "conv2", None)
            if not isinstance(bn1, nn.BatchNorm2d) or not isinstance(conv2, nn.Conv2d) or not name:
                continue
            chans = dead_channels(bn1)
            if not chans:
                continue
            bn1.weight[chans] = 0.0  # output = beta < 0 everywhere: the ReLU gives exactly 0
            big = magnitude * float(conv2.weight.abs().max())
            for c in chans:
                signs = torch.where(torch.rand(conv2.weight[:, c].shape, generator=g) < 0.5, -1.0, 1.0)
                conv2.weight[:, c] = big * signs
            planted[name] = chans
    return planted


def outlier_resnet(
    depth: int = 20, checkpoint: str | None = None, magnitude: float = 10.0, seed: int = 0, num_classes: int = 10
) -> nn.Module:
    """A pretrained CIFAR ResNet (``checkpoint``: its weights) with outlier weights on its dead channels."""
    from slimline.models import load_model

    model = load_model(f"cifar_resnet{depth}", checkpoint, num_classes=num_classes)
    plant_outlier_weights(model, magnitude, seed)
    return model
