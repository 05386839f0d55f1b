"""Multiply-accumulates of one sample's forward pass, from whatever form the model is in.

* PyTorch: ``torch.utils.flop_counter`` (via :func:`slimline.models.count_macs`);
* ONNX: shape inference at batch 1, then Conv / ConvInteger / QLinearConv / ConvTranspose, Gemm,
  MatMul / MatMulInteger / QLinearMatMul from their input and output shapes;
* OpenVINO IR: the model reshaped to batch 1, then Convolution, GroupConvolution and MatMul.

Element-wise work (activations, additions, normalisation) is not counted by any of the three.
``None`` means unknown (a shape that inference could not resolve).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slimline.artifact import Artifact, load_torch


def artifact_macs(artifact: Artifact, input_shape: tuple[int, ...] | None = None) -> tuple[int | None, str]:
    """(MACs per sample or None, how they were counted) for any artifact kind."""
    shape = tuple(input_shape or artifact.meta.get("input_shape") or ())
    try:
        if artifact.kind == "torch":
            from slimline.models import count_macs

            return count_macs(load_torch(artifact), shape), "torch.utils.flop_counter"
        if artifact.kind == "onnx":
            return onnx_macs(artifact.model_file), "onnx graph (conv, gemm, matmul)"
        if artifact.kind == "openvino":
            return openvino_macs(artifact.model_file), "openvino graph (conv, matmul)"
    except Exception as e:  # noqa: BLE001 - counting is best effort; say why it failed
        return None, f"unknown ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None, "unknown"


def _prod(dims: Any) -> int:
    return int(math.prod(int(d) for d in dims))


def onnx_macs(path: str | Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    init_names = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in init_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].Clear()
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = list(vi.type.tensor_type.shape.dim)
        # the batch axis may stay symbolic through reshapes; the input's batch is 1
        known = dims and all(d.HasField("dim_value") for d in dims[1:])
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims] if known else None
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    def shape(name: str) -> list[int] | None:
        return shapes.get(name)

    total = 0
    for node in inferred.graph.node:
        op = node.op_type
        weight_idx = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}.get(op)
        if weight_idx is not None:
            w, y, x = shape(node.input[weight_idx]), shape(node.output[0]), shape(node.input[0])
            if w is None or y is None or x is None:
                return None
            if op == "ConvTranspose":  # weight [C_in, C_out / group, k...]: every input element feeds it
                total += _prod(x) * _prod(w[1:])
            else:
                total += _prod(y) * _prod(w[1:])
        elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a, y = shape(node.input[0]), shape(node.output[0])
            if a is None or y is None:
                return None
            trans_a = op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if trans_a else a[-1]
            total += _prod(y) * k
    return total


def openvino_macs(xml_path: str | Path) -> int | None:
    from slimline.runtimes.openvino import import_openvino

    ov = import_openvino()
    model = ov.Core().read_model(str(xml_path))
    inp = model.inputs[0]
    ps = inp.get_partial_shape()
    if ps.rank.is_static and ps.rank.get_length() >= 1 and ps[0].is_dynamic:
        dims = [1, *[d.get_length() for d in list(ps)[1:]]]
        model.reshape({inp: ov.PartialShape(dims)})
    total = 0
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out, w = op.get_output_partial_shape(0), op.input(1).get_partial_shape()
        a = op.input(0).get_partial_shape()
        if out.is_dynamic or w.is_dynamic or a.is_dynamic:
            return None
        out_n, w_n, a_n = ([int(d) for d in s.to_shape()] for s in (out, w, a))
        if t == "Convolution":
            total += _prod(out_n) * _prod(w_n[1:])
        elif t == "GroupConvolution":
            total += _prod(out_n) * _prod(w_n[2:])
        else:
            trans_a = bool(op.get_attributes().get("transpose_a", False))
            total += _prod(out_n) * (a_n[-2] if trans_a and len(a_n) >= 2 else a_n[-1])
    return total
