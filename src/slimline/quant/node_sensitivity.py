"""Accuracy-aware quantization of any ONNX model fed named arrays (a text encoder, a detector, a speech model).

Without a PyTorch model to simulate, the ranking is measured on the ONNX graph itself: each node the quantizer
changes (MatMul, Gemm, Conv, Gather, LayerNormalization, and for ONNX Runtime's static mode element-wise Add, Mul,
...) is quantized alone, every other one kept in float, and the candidate is scored on held-out training samples.
The score is top-1 (percent) when the samples have labels and the model one
[batch, classes] output, else fidelity to the float model: 100 x mean cosine of the outputs, so ``max_drop 1.0``
asks for a mean cosine of at least 0.99. :func:`slimline.quant.accuracy_aware.accuracy_aware_quantize` then returns
the most sensitive nodes to float until the drop fits the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from slimline.progress import console

T = TypeVar("T")

WEIGHTED_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "EmbedLayerNormalization")
# operators whose quantization changes values (data movement such as Reshape or Transpose only passes a
# neighbour's quantization on, so it is not ranked on its own)
VALUE_OPS = (*WEIGHTED_OPS, "Gather", "LayerNormalization", "InstanceNormalization", "BatchNormalization", "Where")
_MOVEMENT = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten", "Slice", "Split", "Pad", "Resize", "TopK"}


_STRUCTURAL = {"Constant", "Shape", "Identity", "Cast", "ConstantOfShape", "Range", "Expand", "Concat", "Size"}
_STRUCTURAL |= {"Equal", "And", "Or", "Not", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "NonZero"}


def ranked_op_types(backend: str, mode: str) -> tuple[str, ...] | None:
    """The operator types whose nodes are ranked: for ONNX Runtime's static (QDQ) mode every operator that is not
    data movement or shape arithmetic (its quantizer puts Q/DQ pairs around element-wise operators too), for its
    dynamic mode what it registers (weighted operators), else the weighted and normalising operators. None: all
    but those."""
    if backend == "onnxruntime":
        if mode == "static":
            return None
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        return tuple(sorted(set(IntegerOpsRegistry) - _MOVEMENT))
    return VALUE_OPS


def ranked_nodes(onnx_path: str | Path, op_types: tuple[str, ...] | None = VALUE_OPS) -> list[str]:
    """Names of the nodes of an ONNX model of ``op_types`` (the ones quantization changes; None: every node but
    data movement and shape arithmetic), in graph order."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    skip = _MOVEMENT | _STRUCTURAL
    return [
        n.name
        for n in graph.node
        if n.name and (n.op_type in op_types if op_types is not None else n.op_type not in skip)
    ]


def rank_nodes(
    make: Callable[[list[str]], T], score: Callable[[T], float], nodes: list[str], float_metric: float
) -> list[dict[str, Any]]:
    """Each node quantized alone (``make(keep_float)`` with every other node kept float): its drop of ``score``
    against ``float_metric``, most sensitive first."""
    from slimline.quant.backends.base import QuantizationError

    rows = []
    for i, node in enumerate(nodes, 1):
        try:
            metric = score(make([n for n in nodes if n != node]))
        except QuantizationError:  # nothing of this node alone is quantized (a dynamic quantizer's Where)
            metric = float_metric
        rows.append({"node": node, "metric": metric, "drop": float_metric - metric})
        if i % 10 == 0 or i == len(nodes):
            console.print(f"  sensitivity: {i}/{len(nodes)} nodes quantized alone", highlight=False)
    return sorted(rows, key=lambda r: -r["drop"])
