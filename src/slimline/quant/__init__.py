"""int8 quantization: numerics and observers, a simulated (fake-quant) pass, backends, accuracy-aware mode, QAT.

* :mod:`slimline.quant.numerics`: affine schemes (int8/uint8, symmetric/asymmetric, per-tensor/per-channel)
  and range observers (minmax, percentile, entropy, mse); ``observer_table`` for the SQNR comparison.
* :mod:`slimline.quant.fakequant`: :class:`QuantSim`, per-layer SQNR and sensitivity in PyTorch.
* :mod:`slimline.quant.backends`: ``onnxruntime`` (static QDQ / dynamic), ``openvino`` (NNCF), ``torch`` (FX).
* :mod:`slimline.quant.accuracy_aware`: keep the most sensitive layers float until the drop fits ``max_drop``.
* :mod:`slimline.quant.qat`: fake-quantized fine-tuning through ``slimline.train.fit`` and QDQ ONNX export.

The recipe steps are ``quantize`` and ``qat``; the CLI commands ``slimline quantize`` and
``slimline quant-numerics``.
"""

from __future__ import annotations

from slimline.quant.numerics import (
    ACTIVATION_SCHEME,
    OBSERVERS,
    WEIGHT_SCHEME,
    QScheme,
    dequantize,
    fake_quantize,
    make_observer,
    observer_table,
    qparams,
    quantize,
    sqnr_db,
)

__all__ = [
    "ACTIVATION_SCHEME",
    "OBSERVERS",
    "WEIGHT_SCHEME",
    "QScheme",
    "dequantize",
    "fake_quantize",
    "make_observer",
    "observer_table",
    "qparams",
    "quantize",
    "sqnr_db",
]
