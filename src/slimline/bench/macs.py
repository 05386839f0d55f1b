"""Multiply-accumulates of one sample's forward pass, from whatever form the model is in.

* PyTorch: ``torch.utils.flop_counter`` (via :func:`slimline.models.count_macs`);
* ONNX: shape inference with dynamic dims given or at 1, then Conv / ConvInteger / QLinearConv / ConvTranspose,
  Gemm, MatMul / MatMulInteger / QLinearMatMul, LSTM / GRU / RNN and Attention from their shapes;
* OpenVINO IR: the model reshaped to batch 1, then Convolution, GroupConvolution and MatMul.

Element-wise work (activations, additions, normalisation) is not counted by any of the three.
``None`` means unknown (a shape that inference could not resolve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimline.artifact import Artifact, load_torch
from slimline.errors import ModelError


def artifact_macs(artifact: Artifact, input_shape: tuple[int, ...] | None = None) -> tuple[int | None, str]:
    """(MACs per sample or None, how they were counted) for any artifact kind."""
    shape = tuple(input_shape or artifact.meta.get("input_shape") or ())
    try:
        if artifact.kind == "torch":
            from slimline.models import count_macs

            return count_macs(load_torch(artifact), shape), "torch.utils.flop_counter"
        if artifact.kind == "onnx":
            counted = onnx_graph_macs(artifact.model_file)
            how = "onnx graph (conv, gemm, matmul, lstm/gru/rnn, attention)"
            if counted.assumed:
                how += "; assumed " + ", ".join(f"{k}={v}" for k, v in counted.assumed.items())
            return counted.macs, how
        if artifact.kind == "openvino":
            return openvino_macs(artifact.model_file), "openvino graph (conv, matmul)"
    except Exception as e:  # noqa: BLE001 - counting is best effort; say why it failed
        return None, f"unknown ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None, "unknown"


def _prod(dims: Any) -> int:
    return int(math.prod(int(d) for d in dims))


@dataclass
class OnnxMacs:
    """MACs of an ONNX graph at resolved input shapes.

    ``shapes``: every graph input's shape as counted; ``assumed``: the dynamic dims that were set to 1
    (``input[axis]`` or the dim's name); ``per_op``: MACs by operator type; ``unknown``: nodes whose
    shapes shape inference could not resolve (then ``macs`` is None).
    """

    macs: int | None
    shapes: dict[str, list[int]] = field(default_factory=dict)
    assumed: dict[str, int] = field(default_factory=dict)
    per_op: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def graph_inputs(model: Any) -> list[Any]:
    """The graph's real inputs (initializers listed as inputs by old exporters left out)."""
    init_names = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def _resolve_inputs(
    model: Any, input_shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Fix every graph input's dims in place: the given shapes, then named dims shared with them, else 1."""
    inputs = graph_inputs(model)
    unknown = set(input_shapes) - {i.name for i in inputs}
    if unknown:
        raise ModelError(
            f"--input-shape names {', '.join(sorted(unknown))}, which the model has not; "
            f"its inputs are {', '.join(i.name for i in inputs)}"
        )
    named: dict[str, int] = {}  # dim_param -> value, from the given shapes
    for inp in inputs:
        if inp.name in input_shapes:
            dims, given = inp.type.tensor_type.shape.dim, input_shapes[inp.name]
            if len(dims) != len(given):
                raise ModelError(
                    f"input {inp.name!r} has {len(dims)} dims, but --input-shape gives {len(given)} "
                    f"({'x'.join(map(str, given))}); give one size per dim"
                )
            for d, v in zip(dims, given, strict=True):
                if d.dim_param:
                    named[d.dim_param] = int(v)
    shapes: dict[str, list[int]] = {}
    assumed: dict[str, int] = {}
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        shape_given = input_shapes.get(inp.name)
        for i, d in enumerate(dims):
            if shape_given is not None:
                value = int(shape_given[i])
            elif d.HasField("dim_value"):
                continue
            elif d.dim_param and d.dim_param in named:
                value = named[d.dim_param]
            else:
                value = 1
                assumed[d.dim_param or f"{inp.name}[{i}]"] = 1
            d.Clear()
            d.dim_value = value
        shapes[inp.name] = [int(d.dim_value) for d in dims]
    return shapes, assumed


def _attr(node: Any, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def onnx_graph_macs(model: str | Path | Any, input_shapes: dict[str, tuple[int, ...]] | None = None) -> OnnxMacs:
    """MACs of an ONNX model (a path or a ``ModelProto``, which is not changed) after shape inference.

    Dynamic input dims come from ``input_shapes`` (per input; a dim name given there, such as
    ``sequence``, applies to every input that has it), else 1, recorded in ``assumed``.
    Counted: Conv / ConvInteger / QLinearConv / ConvTranspose, Gemm / MatMul / MatMulInteger /
    QLinearMatMul (attention's Q·Kᵀ and P·V included), LSTM / GRU / RNN, and Attention.
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: the dims are fixed in place
    shapes_in, assumed = _resolve_inputs(model, dict(input_shapes or {}))
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = list(vi.type.tensor_type.shape.dim)
        # a leading (batch) axis may stay symbolic through reshapes; the inputs' dims are fixed, so it is 1
        known = dims and all(d.HasField("dim_value") for d in dims[1:])
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims] if known else None
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    def shape(node: Any, idx: int, output: bool = False) -> list[int] | None:
        names = node.output if output else node.input
        return shapes.get(names[idx]) if idx < len(names) and names[idx] else None

    per_op: dict[str, int] = {}
    unknown: list[str] = []
    for node in inferred.graph.node:
        op = node.op_type
        macs: int | None = None
        weight_idx = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}.get(op)
        if weight_idx is not None:
            w, y, x = shape(node, weight_idx), shape(node, 0, output=True), shape(node, 0)
            if w is not None and y is not None and x is not None:
                # ConvTranspose: weight [C_in, C_out / group, k...], every input element feeds it
                macs = _prod(x) * _prod(w[1:]) if op == "ConvTranspose" else _prod(y) * _prod(w[1:])
        elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a, y = shape(node, 0), shape(node, 0, output=True)
            if a is not None and y is not None:
                k = a[0] if op == "Gemm" and _attr(node, "transA") else a[-1]
                macs = _prod(y) * k
        elif op in ("LSTM", "GRU", "RNN"):
            # X [seq, batch, in] or [batch, seq, in]; W [dirs, gates*hidden, in]; R [dirs, gates*hidden, hidden]
            x, w, r = shape(node, 0), shape(node, 1), shape(node, 2)
            if x is not None and w is not None and r is not None:
                macs = x[0] * x[1] * (_prod(w) + _prod(r))
        elif op == "Attention":  # Q [.., S, D], K [.., L, D], V [.., L, Dv]: Q·Kᵀ and P·V
            q, keys, vs = shape(node, 0), shape(node, 1), shape(node, 2)
            if q is not None and keys is not None and vs is not None:
                macs = _prod(q[:-1]) * keys[-2] * (q[-1] + vs[-1])
        else:
            continue
        if macs is None:
            unknown.append(node.name or f"{op}->{node.output[0]}")
        else:
            per_op[op] = per_op.get(op, 0) + macs
    total = None if unknown else sum(per_op.values())
    return OnnxMacs(total, shapes_in, assumed, per_op, unknown)


def onnx_macs(path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> int | None:
    """MACs of an ONNX file, dynamic dims at 1 unless ``input_shapes`` gives them (see :func:`onnx_graph_macs`)."""
    return onnx_graph_macs(path, input_shapes).macs


# ------------------------------------------------------------------ PyTorch layers flop_counter misses


def rnn_macs(module: nn.RNNBase, args: tuple[Any, ...]) -> int:
    """Per time step and sample: every ``weight_*`` matrix once (gates x (input + hidden) x hidden, per layer and
    direction, plus the projection of LSTM(proj_size)); times the steps and the batch."""
    x = args[0]
    if isinstance(x, nn.utils.rnn.PackedSequence):
        tokens = int(x.data.shape[0])
    elif x.dim() == 2:  # unbatched: (T, input)
        tokens = int(x.shape[0])
    else:
        tokens = int(x.shape[0] * x.shape[1])
    per_token = sum(p.numel() for n, p in module.named_parameters(recurse=False) if n.startswith("weight_"))
    return tokens * per_token


def attention_macs(module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Q/K/V and output projections plus Q·Kᵀ and P·V for every head."""
    query = args[0] if args else kwargs["query"]
    key = args[1] if len(args) > 1 else kwargs.get("key", query)
    if query.dim() == 2:  # unbatched: (L, E)
        n, length, src = 1, int(query.shape[0]), int(key.shape[0])
    elif module.batch_first:
        n, length, src = int(query.shape[0]), int(query.shape[1]), int(key.shape[1])
    else:
        n, length, src = int(query.shape[1]), int(query.shape[0]), int(key.shape[0])
    e = module.embed_dim
    projections = length * e * e + src * (module.kdim + module.vdim) * e + length * e * e
    return n * (projections + 2 * length * src * e)


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
