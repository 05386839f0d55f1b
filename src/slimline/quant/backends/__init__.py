"""Quantization backends, one file each, registered by name in ``BACKENDS``.

``onnxruntime`` (static QDQ or dynamic), ``openvino`` (NNCF post-training quantization) and
``torch`` (PyTorch FX graph mode, x86 backend).
"""

from __future__ import annotations

import importlib

from slimline.quant.backends.base import FloatModel, QuantBackend, QuantConfig, QuantResult, QuantWarning
from slimline.registry import Registry

BACKENDS: Registry[type[QuantBackend]] = Registry("quantization backend")

_BACKEND_MODULES = ("ort", "openvino", "torch_fx")


def _import_backends() -> None:
    for mod in _BACKEND_MODULES:
        try:
            importlib.import_module(f"slimline.quant.backends.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"slimline.quant.backends.{mod}":
                raise


def get_backend(name: str) -> QuantBackend:
    _import_backends()
    return BACKENDS.get(name)()


def backend_names() -> list[str]:
    _import_backends()
    return BACKENDS.names()


__all__ = ["BACKENDS", "FloatModel", "QuantBackend", "QuantConfig", "QuantResult", "QuantWarning", "backend_names",
           "get_backend"]
