"""ONNX graph passes: a graph simplifier (onnxslim, else onnxsim), ONNX Runtime's offline graph
optimization (the optimized model saved to a file), and what each runtime's compiled graph fused.

- ``simplify(src, dst)``: constant folding, dead-node removal, Conv+BN / Pad+Conv / Gemm fusions;
  the output is plain ONNX that every runtime reads.
- ``ort_optimize(src, dst, level)``: ONNX Runtime applies its graph transformers once and writes the
  result (``SessionOptions.optimized_model_filepath``). "basic" keeps standard ONNX ops; "extended"
  adds ONNX Runtime's contrib ops (FusedConv = Conv+activation, ...), so only ONNX Runtime can run
  it; "all" also adds CPU-specific NCHWc layouts (not portable between machines).
- ``openvino_fusions(path, batch)``: compiles the model for OpenVINO's CPU plugin at a static batch
  and reads back the executed graph: which original layers each kernel covers, and how many
  depthwise convolutions were fused into the preceding 1x1 convolution (primitive ``*_dw_1x1_*``).
- ``dw_pw_pairs(model)``: the pointwise->depthwise and depthwise->pointwise convolution pairs in a graph.
- ``compact_names(src, dst)``: short tensor names, no node names (a smaller file, the same graph).
- ``safe_int_high(model)``: an exclusive upper bound for example integer inputs (token ids) that every
  embedding table (``Gather`` on an initializer) indexed by a graph input can take.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from slimline.errors import ExportError, RuntimeUnavailable
from slimline.fileio import atomic_path


def _load(model: Any) -> Any:
    import onnx

    return onnx.load(str(model)) if isinstance(model, str | Path) else model


def graph_stats(model: Any) -> dict[str, Any]:
    """Node count, op-type counts and initializer count of an ONNX model (path or ModelProto)."""
    proto = _load(model)
    ops = Counter(f"{n.domain + '.' if n.domain not in ('', 'ai.onnx') else ''}{n.op_type}" for n in proto.graph.node)
    return {
        "nodes": len(proto.graph.node),
        "ops": dict(sorted(ops.items())),
        "initializers": len(proto.graph.initializer),
    }


def op_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Per op type, how many nodes a pass added (+) or removed (-)."""
    a, b = before["ops"], after["ops"]
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}


def simplifier() -> str | None:
    """The installed graph simplifier: "onnxslim", "onnxsim", or None."""
    for name in ("onnxslim", "onnxsim"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    return None


def _save(proto: Any, dst: str | Path) -> None:
    import onnx

    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))


def simplify(src: str | Path, dst: str | Path, tool: str | None = None) -> dict[str, Any]:
    """Simplify ``src`` into ``dst`` with onnxslim (or onnxsim); returns counts before/after and op changes."""
    import onnx

    tool = tool or simplifier()
    if tool is None:
        raise RuntimeUnavailable("no ONNX graph simplifier is installed: pip install onnxslim (or onnxsim)")
    proto = onnx.load(str(src))
    before = graph_stats(proto)
    try:
        if tool == "onnxslim":
            import onnxslim

            out = onnxslim.slim(proto)
        elif tool == "onnxsim":
            import onnxsim

            out, ok = onnxsim.simplify(proto)
            if not ok:
                raise ExportError("onnxsim could not validate the simplified model")
        else:
            raise RuntimeUnavailable(f"unknown ONNX simplifier {tool!r}; use onnxslim or onnxsim")
    except (ExportError, RuntimeUnavailable):
        raise
    except Exception as e:  # noqa: BLE001 - simplifiers raise many kinds
        raise ExportError(f"{tool} failed on {src}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if out is None:
        raise ExportError(f"{tool} returned no model for {src}")
    onnx.checker.check_model(out)
    _save(out, dst)
    after = graph_stats(out)
    return {
        "tool": tool,
        "version": _version(tool),
        "before": before,
        "after": after,
        "op_changes": op_changes(before, after),
    }


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001
        return "unknown"


_ORT_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def ort_optimize(src: str | Path, dst: str | Path, level: str = "extended") -> dict[str, Any]:
    """Run ONNX Runtime's graph optimizations at ``level`` on ``src`` and save the optimized model to ``dst``."""
    import onnxruntime as ort

    if level not in _ORT_LEVELS:
        raise ValueError(f"ONNX Runtime optimization level must be one of {sorted(_ORT_LEVELS)}, not {level!r}")
    before = graph_stats(src)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".ort-opt.") as tmp:
        out = Path(tmp) / dst.name
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        out.replace(dst)
    after = graph_stats(dst)
    fused = {k: v for k, v in after["ops"].items() if k.startswith("com.microsoft")}
    return {
        "level": level,
        "onnxruntime": ort.__version__,
        "before": before,
        "after": after,
        "op_changes": op_changes(before, after),
        "contrib_ops": fused,
        "portable": level == "basic",
    }


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def dw_pw_pairs(model: Any) -> dict[str, int]:
    """Adjacent depthwise/pointwise Conv pairs (through at most one elementwise activation node)."""
    proto = _load(model)
    inits = {i.name: i for i in proto.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def kind(n: Any) -> str | None:
        if n.op_type not in ("Conv", "FusedConv") or len(n.input) < 2 or n.input[1] not in inits:
            return None
        dims = list(inits[n.input[1]].dims)
        group = int(_attr(n, "group", 1))
        if len(dims) == 4 and group > 1 and group == dims[0] and dims[1] == 1:
            return "dw"
        if len(dims) == 4 and group == 1 and dims[2] == 1 and dims[3] == 1:
            return "pw"
        return None

    pairs: Counter[str] = Counter()
    for n in proto.graph.node:
        k = kind(n)
        if k is None or len(n.output) != 1:
            continue
        nxt = consumers.get(n.output[0], [])
        if (
            len(nxt) == 1
            and nxt[0].op_type in ("Relu", "Clip", "Sigmoid", "HardSwish", "LeakyRelu")
            and len(nxt[0].output) == 1
        ):
            nxt = consumers.get(nxt[0].output[0], [])
        if len(nxt) == 1:
            k2 = kind(nxt[0])
            if (k, k2) == ("pw", "dw"):
                pairs["pw->dw"] += 1
            elif (k, k2) == ("dw", "pw"):
                pairs["dw->pw"] += 1
    return {"pw->dw": pairs["pw->dw"], "dw->pw": pairs["dw->pw"]}


def openvino_fusions(path: str | Path, batch: int, input_shape: list[int] | tuple[int, ...]) -> dict[str, Any]:
    """Compile ``path`` on OpenVINO's CPU plugin at a static ``batch`` and summarise what it fused.

    ``dw_fused_into_1x1`` counts depthwise convolutions executed inside the preceding 1x1 convolution
    (oneDNN's fused depthwise post-op; the CPU plugin does this on AVX2 machines without AVX-512, for
    static shapes whose depthwise activations exceed half the L3 cache).
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise RuntimeUnavailable(f"openvino is not installed ({e}); pip install openvino") from e
    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape([batch, *input_shape])
    compiled = core.compile_model(model, "CPU")
    kernels: Counter[str] = Counter()
    layer_types: Counter[str] = Counter()
    fused_layers = 0
    dw_fused = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        ltype = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if ltype in ("Const", "Input", "Output", "Parameter", "Result"):
            continue
        layer_types[ltype] += 1
        prim = info["primitiveType"].astype(str) if "primitiveType" in info else ""
        if ltype == "Convolution":
            kernels[prim] += 1
            if "dw_1x1" in prim:
                dw_fused += 1
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        if len([n for n in names.split(",") if n]) > 1:
            fused_layers += 1
    return {
        "openvino": ov.__version__,
        "batch": batch,
        "executed_layers": dict(sorted(layer_types.items())),
        "convolution_kernels": dict(sorted(kernels.items())),
        "layers_with_fused_ops": fused_layers,
        "dw_fused_into_1x1": dw_fused,
    }


INT_HIGH = 100  # example integer inputs are drawn from [0, INT_HIGH) unless a table is smaller


def safe_int_high(model: Any, default: int = INT_HIGH) -> int:
    """``default``, or fewer when a graph input indexes a smaller embedding table: the rows of the smallest
    initializer that a ``Gather`` (along its axis) reads with a graph input as indices."""
    proto = _load(model)
    inits = {i.name: list(i.dims) for i in proto.graph.initializer}
    inputs = {v.name for v in proto.graph.input} - set(inits)
    high = default
    for n in proto.graph.node:
        if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] in inputs and n.input[0] in inits:
            dims = inits[n.input[0]]
            axis = int(_attr(n, "axis", 0))
            if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
                high = min(high, int(dims[axis]))
    return high


def compact_names(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Rewrite ``src`` with short tensor names and no node names; same graph, same numbers.

    Exporters and quantizers name every tensor after its module path (``/layer1/layer1.0/conv2/
    Conv_output_0_scale``); in a small int8 model those strings are several percent of the file. The
    graph's input and output names are kept, node names (optional in ONNX) are cleared, value_info
    (shape annotations, recomputed by runtimes) is dropped. Models with subgraphs (If/Loop/Scan) or
    sparse initializers are copied unchanged. Returns the sizes before and after.
    """
    import onnx

    proto = onnx.load(str(src))
    before = Path(src).stat().st_size
    g = proto.graph
    has_subgraphs = len(g.sparse_initializer) > 0 or any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute
    )
    if not has_subgraphs:
        keep = {v.name for v in g.input} | {v.name for v in g.output}
        names: dict[str, str] = {}

        def short(name: str) -> str:
            if not name or name in keep:
                return name
            if name not in names:
                names[name] = f"t{len(names):x}"
            return names[name]

        for t in g.initializer:
            t.name = short(t.name)
        for n in g.node:
            n.name = ""
            n.input[:] = [short(i) for i in n.input]
            n.output[:] = [short(o) for o in n.output]
        del g.value_info[:]
    with atomic_path(dst) as tmp:
        onnx.save(proto, str(tmp))
    after = Path(dst).stat().st_size
    return {"bytes_before": before, "bytes_after": after, "renamed": not has_subgraphs}
