"""Inference optimization passes: BatchNorm folding, torch.fx Conv+BN+activation fusion, ONNX graph
simplification and ONNX Runtime offline optimization, thread/batch tuning, and batch prediction.

Heavy imports stay inside the submodules: ``from slimline.optimize.fold_bn import fold_batchnorm``.
"""

from __future__ import annotations

__all__ = ["fold_bn", "fx_fuse", "onnx_graph", "predict", "tune"]
