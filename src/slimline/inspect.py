"""What a model is, without running a pipeline: signature, operators, size, MACs and the runtimes that load it.

:func:`inspect_model` takes a ``.onnx`` file, an artifact folder, or a zoo name / ``package.module:factory``
(with optional weights). Reading an artifact folder never imports code named inside it: a torch artifact is
rebuilt only when its architecture comes from the zoo.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from slimline.artifact import ARTIFACT_JSON, Artifact
from slimline.errors import ModelError

# ------------------------------------------------------------------ ONNX


def _onnx_dtype(elem_type: int) -> str:
    import onnx

    try:
        return str(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError, TypeError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _onnx_value(vi: Any) -> dict[str, Any]:
    t = vi.type.tensor_type
    dims: list[int | str] | None = None
    if t.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": vi.name, "dtype": _onnx_dtype(t.elem_type), "shape": dims}


_WEIGHT_DTYPES = frozenset({"float32", "float16", "float64", "bfloat16", "int8", "uint8", "int4", "uint4"})


def _onnx_params(model: Any) -> int:
    """Elements of the float and 8/4-bit initializers and Constant tensors (int64 shapes and indices left out)."""
    import math

    import onnx

    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return sum(
        math.prod(t.dims)
        for t in tensors
        if _onnx_dtype(t.data_type) in _WEIGHT_DTYPES
        or (t.data_type in (onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2))
    )


def inspect_onnx(path: Path, input_shapes: dict[str, tuple[int, ...]], top: int) -> dict[str, Any]:
    import onnx

    from slimline.bench.macs import graph_inputs, onnx_graph_macs

    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the signature is still readable without inferred outputs
        inferred = model
    ops = Counter(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node)
    counted = onnx_graph_macs(model, input_shapes)
    return {
        "format": "onnx",
        "inputs": [_onnx_value(i) for i in graph_inputs(inferred)],
        "outputs": [_onnx_value(o) for o in inferred.graph.output],
        "opset": {(d.domain or "ai.onnx"): int(d.version) for d in model.opset_import},
        "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p) or None,
        "nodes": len(model.graph.node),
        "operators": dict(ops.most_common(top)),
        "operator_types": len(ops),
        "params": _onnx_params(model),
        "macs": counted.macs,
        "macs_per_op": counted.per_op,
        "macs_shapes": counted.shapes,
        "assumed_dims": counted.assumed,
        "macs_unknown_nodes": counted.unknown,
    }


def _try_load(artifact: Artifact, runtimes: list[str]) -> dict[str, dict[str, Any]]:
    """Open a session on each runtime: {"loads": bool, "why": reason when not}."""
    from slimline.runtimes import availability, open_session

    avail = availability()
    out: dict[str, dict[str, Any]] = {}
    for rt in runtimes:
        ok, why = avail.get(rt, (False, "not registered"))
        if not ok:
            out[rt] = {"loads": False, "why": f"not usable here: {why}"}
            continue
        try:
            session = open_session(artifact, rt)
        except Exception as e:  # noqa: BLE001 - report why this runtime refuses the model
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            out[rt] = {"loads": False, "why": f"{type(e).__name__}: {first[:300]}"}
            continue
        out[rt] = {"loads": True, "why": ""}
        close = getattr(session, "close", None)
        if callable(close):
            close()
    return out


# ------------------------------------------------------------------ PyTorch


def _torch_summary(model: Any, input_shape: tuple[int, ...] | None, top: int) -> dict[str, Any]:
    import torch

    from slimline.models import count_macs, count_params

    leaves = Counter(type(m).__name__ for m in model.modules() if not list(m.children()))
    out: dict[str, Any] = {
        "format": "torch",
        "inputs": [],
        "outputs": [],
        "opset": None,
        "operators": dict(leaves.most_common(top)),
        "operator_types": len(leaves),
        "params": count_params(model),
        "macs": None,
        "assumed_dims": {},
    }
    if input_shape is None:
        out["macs_note"] = "input shape unknown: pass --input-shape input=CxHxW (without the batch)"
        return out
    out["inputs"] = [{"name": "input", "dtype": "float32", "shape": ["batch", *input_shape]}]
    out["assumed_dims"] = {"batch": 1}
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, *input_shape))
    ys = y if isinstance(y, (tuple, list)) else [y]
    out["outputs"] = [
        {
            "name": f"output{i}" if len(ys) > 1 else "output",
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": ["batch", *t.shape[1:]],
        }
        for i, t in enumerate(ys)
        if isinstance(t, torch.Tensor)
    ]
    out["macs"] = count_macs(model, tuple(input_shape))
    return out


def _torch_shape(input_shapes: dict[str, tuple[int, ...]], default: Any) -> tuple[int, ...] | None:
    if len(input_shapes) > 1:
        raise ModelError("a PyTorch model here takes one input: give one --input-shape NAME=CxHxW")
    if input_shapes:
        return next(iter(input_shapes.values()))
    return tuple(default) if default else None


def inspect_torch_artifact(artifact: Artifact, input_shapes: dict[str, tuple[int, ...]], top: int) -> dict[str, Any]:
    from slimline.artifact import load_torch

    arch = json.loads((artifact.path / artifact.files["architecture"]).read_text())
    source = arch.get("source", {})
    shape = _torch_shape(input_shapes, artifact.meta.get("input_shape"))
    if "zoo" not in source:  # never import code named inside a folder
        factory = source.get("factory", "?")
        return {
            "format": "torch",
            "source": source,
            "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", *shape]}] if shape else [],
            "outputs": [],
            "opset": None,
            "operators": {},
            "params": None,
            "macs": None,
            "assumed_dims": {},
            "note": f"architecture from factory {factory} not built: pass --model {factory} to inspect it",
            "runtimes": {"torch": {"loads": None, "why": "the architecture is user code, not built from a folder"}},
        }
    out = _torch_summary(load_torch(artifact), shape, top)
    out["source"] = source
    out["runtimes"] = _try_load(artifact, ["torch"])
    return out


# ------------------------------------------------------------------ entry point


def _onnx_artifact(path: Path) -> Artifact:
    return Artifact(kind="onnx", path=path.parent, files={"model": path.name})


def inspect_model(
    model: str,
    weights: str | Path | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """Signature, operator counts, opset, parameters, MACs and loading runtimes of ``model``.

    ``model``: a ``.onnx`` file, an artifact folder, or a zoo name / ``package.module:factory`` (built
    with ``weights``). ``input_shapes`` fixes dynamic dims per input (else 1, listed in ``assumed_dims``).
    """
    shapes = dict(input_shapes or {})
    path = Path(model)
    if path.is_file() and path.suffix.lower() == ".onnx":
        out = inspect_onnx(path, shapes, top)
        out["runtimes"] = _try_load(_onnx_artifact(path), ["onnxruntime", "openvino"])
    elif path.is_dir() or path.name == ARTIFACT_JSON:
        artifact = Artifact.load(path)
        if artifact.kind == "onnx":
            out = inspect_onnx(artifact.model_file, shapes, top)
            out["runtimes"] = _try_load(artifact, ["onnxruntime", "openvino"])
        elif artifact.kind == "torch":
            out = inspect_torch_artifact(artifact, shapes, top)
        else:
            raise ModelError(
                f"{artifact.path} is an {artifact.kind} artifact; inspect reads onnx and torch ones: "
                "inspect the ONNX artifact it was made from"
            )
        out["artifact"] = {"kind": artifact.kind, "path": str(artifact.path), "steps": len(artifact.lineage)}
    elif path.suffix.lower() == ".onnx" or path.exists():
        raise ModelError(f"{model} is not an ONNX file or artifact folder; give a .onnx file, a folder or a zoo name")
    else:
        from slimline.models import load_model, model_entry

        entry = model_entry(model) if ":" not in model else None
        net = load_model(model, weights)
        out = _torch_summary(net, _torch_shape(shapes, entry.input_shape if entry else None), top)
        out["source"] = {"zoo": model} if entry else {"factory": model}
        out["runtimes"] = {"torch": {"loads": True, "why": ""}}
    out["model"] = str(model)
    return out


def format_inspection(info: dict[str, Any]) -> list[str]:
    """The lines ``slimline inspect`` prints."""

    def shape(s: list[Any] | None) -> str:
        return "?" if s is None else "[" + ", ".join(str(d) for d in s) + "]"

    lines = [f"{info['model']} ({info['format']})"]
    if info.get("note"):
        lines.append(f"  note: {info['note']}")
    for title, key in (("inputs", "inputs"), ("outputs", "outputs")):
        lines.append(f"{title}:")
        lines += [f"  {v['name']}: {v['dtype']} {shape(v['shape'])}" for v in info.get(key) or []] or ["  (unknown)"]
    if info.get("opset"):
        lines.append("opset: " + ", ".join(f"{d} {v}" for d, v in info["opset"].items()))
    ops = info.get("operators") or {}
    if ops:
        lines.append(f"operators (top {len(ops)} of {info.get('operator_types', len(ops))} types by count):")
        lines += [f"  {op}: {n}" for op, n in ops.items()]
    params = info.get("params")
    lines.append(f"params: {params:,}" if params is not None else "params: unknown")
    macs = info.get("macs")
    if macs is not None:
        text = f"MACs: {macs:,}"
        if info.get("macs_shapes"):
            text += " at " + ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in info["macs_shapes"].items())
        lines.append(text)
    else:
        why = info.get("macs_note") or (
            "shapes unknown at " + ", ".join(info["macs_unknown_nodes"][:5]) if info.get("macs_unknown_nodes") else ""
        )
        lines.append(f"MACs: unknown{f' ({why})' if why else ''}")
    if info.get("assumed_dims"):
        lines.append(
            "assumed dims: "
            + ", ".join(f"{k}={v}" for k, v in info["assumed_dims"].items())
            + " (set them with --input-shape NAME=DxD...)"
        )
    lines.append("runtimes:")
    for rt, r in (info.get("runtimes") or {}).items():
        state = "loads" if r["loads"] else ("not tried" if r["loads"] is None else "fails")
        why = f" ({r['why']})" if r["why"] else ""
        lines.append(f"  {rt}: {state}{why}")
    return lines


__all__ = ["format_inspection", "inspect_model"]
