"""Quantization backends, one file each, registered by name in ``BACKENDS``.

``onnxruntime`` (static QDQ or dynamic), ``openvino`` (NNCF post-training quantization) and
``torch`` (PyTorch FX graph mode, x86 backend).
"""

from __future__ import annotations

from slimline.quant.backends.base import FloatModel, QuantBackend, QuantConfig, QuantResult, QuantWarning
from slimline.registry import Registry

BACKENDS: Registry[type[QuantBackend]] = Registry(
    "quantization backend",
    [f"slimline.quant.backends.{m}" for m in ("ort", "openvino", "torch_fx", "litert")],
    group="slimline.quant_backends",
)


def _import_backends() -> None:
    BACKENDS.load()


def get_backend(name: str) -> QuantBackend:
    """The registered quantization backend called ``name`` (e.g. ``onnxruntime``, ``openvino``, ``torch``)."""
    _import_backends()
    return BACKENDS.get(name)()


def backend_names() -> list[str]:
    _import_backends()
    return BACKENDS.names()


__all__ = [
    "BACKENDS",
    "FloatModel",
    "QuantBackend",
    "QuantConfig",
    "QuantResult",
    "QuantWarning",
    "backend_names",
    "get_backend",
]
