"""The model registry: architectures by name, with the input they expect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from slimline.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str
    description: str = ""


MODELS: Registry[ModelEntry] = Registry(
    "model",
    [f"slimline.models.{m}" for m in ("cifar_resnet", "resnet", "small_cnn", "efficientnet_lite")],
    group="slimline.models",
    optional=["slimline.models.efficientnet_lite"],
)
