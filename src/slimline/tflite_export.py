"""Export to TensorFlow Lite / LiteRT (``model.tflite``) through ``litert-torch``; full-integer int8 through
``ai-edge-quantizer``. Both are the optional extra ``slimline[edge]`` (no TensorFlow needed) and are imported
only when used.

* :func:`convert_tflite`: ``litert_torch.convert`` on the PyTorch module with example inputs of the export
  plan. TFLite shapes are fixed: the model is converted for batch 1 (``batch``) and the other dims of the
  plan's example inputs; the :mod:`slimline.runtimes.litert` session runs larger batches as slices. The
  input stays NCHW unless ``nhwc`` asks for channels-last (``litert_torch.to_channel_last_io``), recorded as
  ``meta["layout"]``. An operator the converter cannot lower is one :class:`ExportError` naming it and
  where the model uses it.
* :func:`quantize_tflite`: ai-edge-quantizer's static recipe (int8 weights per channel, int8 activations,
  min/max calibration on the given inputs); the graph inputs and outputs stay float unless ``int8_io``
  (microcontroller-style deployment). Heavy operators left in float are listed (:func:`left_float_ops`).
* :func:`compact_tensor_names`: the converter names every tensor after its source location (80 kB for a
  ResNet-56); both fp32 and int8 files are written with short names ``t<i>``, as slimline's ONNX results.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter
from slimline.errors import ExportError, first_line
from slimline.onnx_export import (
    ExportPlan,
    check_outputs,
    classifier_plan,
    export_signature,
    find_op_module,
    int_high,
    no_mha_fastpath,
    signature_plan,
    torch_run,
)
from slimline.runtimes.litert import quiet_litert
from slimline.signature import BATCH, Signature, TensorSpec

TFLITE_FILE = "model.tflite"
HEAVY_TFL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D")


def import_litert_torch() -> Any:
    """``litert_torch`` with its C++ logging at errors (ExportError naming the extra when it is missing)."""
    quiet_litert()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import litert_torch
    except ImportError as e:
        raise ExportError(f"TFLite export needs litert-torch ({first_line(e)}); pip install 'slimline[edge]'") from e
    return litert_torch


def _quiet() -> contextlib.AbstractContextManager[Any]:
    """The converter prints a progress line per stage on stdout; slimline shows its own progress."""
    return contextlib.redirect_stdout(io.StringIO())


def tflite_plan(
    model: nn.Module,
    meta: Mapping[str, Any],
    signature: Signature | None,
    shapes: Mapping[str, Sequence[int]] | None,
    seed: int = 0,
) -> tuple[ExportPlan, Signature]:
    """The export plan for a fixed-shape ``.tflite`` (batch 1, other dims from ``shapes`` or the signature's
    defaults) and the signature to record (the batch axis stays named: the runtime slices batches)."""
    sig = export_signature(meta, signature)
    if sig is None:
        shape = tuple(int(s) for s in meta["input_shape"])
        plan = classifier_plan(shape)
        return plan, Signature.classifier(shape, meta.get("num_classes"))
    dims = {k: v for k, v in sig.named_dims(shapes or {}).items() if k != BATCH}
    fixed = sig.resolve(shapes, batch=1, dims=dims) if shapes else sig.resolve(batch=1, dims=dims)
    plan = signature_plan(model, sig, fixed, seed)
    outs = torch_run(model, {n: a.numpy() for n, a in zip(plan.input_names, plan.args, strict=True)})

    def keep_batch(name: str, dtype: str, shape: Sequence[int], axes: Mapping[int, str]) -> TensorSpec:
        return TensorSpec(name, dtype, tuple(BATCH if axes.get(i) == BATCH else int(s) for i, s in enumerate(shape)))

    inputs = tuple(keep_batch(t.name, t.dtype, fixed[t.name], t.dynamic) for t in sig.inputs)
    outputs = tuple(
        keep_batch(n, str(o.dtype), o.shape, plan.dynamic_axes.get(n, {}))
        for n, o in zip(plan.output_names, outs, strict=False)
    )
    return plan, Signature(inputs, outputs)


def convert_tflite(model: nn.Module, plan: ExportPlan, nhwc: bool = False) -> bytes:
    """The ``.tflite`` flatbuffer of ``model`` traced on ``plan.args`` (fixed shapes; NHWC first input when
    ``nhwc``). ExportError naming the operator when the converter has no lowering for one."""
    lt = import_litert_torch()
    args = plan.args
    module: nn.Module = model.eval()
    if nhwc:
        if args[0].dim() != 4:
            raise ExportError(
                f"NHWC needs a 4-D first input (N, C, H, W); {plan.input_names[0]!r} has {args[0].dim()} dimensions"
            )
        module = lt.to_channel_last_io(module, args=[0]).eval()
        args = (args[0].permute(0, 2, 3, 1).contiguous(), *args[1:])
    try:
        with torch.no_grad(), no_mha_fastpath(), _quiet():
            edge = lt.convert(module, args)
            return bytes(edge.model_content())
    except Exception as e:  # noqa: BLE001 - the converter raises many kinds
        raise ExportError(explain_conversion(e, model, plan)) from e


def explain_conversion(e: BaseException, model: nn.Module, plan: ExportPlan) -> str:
    """One line: the operator without a LiteRT lowering and where the model uses it, else the first line."""
    text = str(e)
    op = re.search(r"Lowering not found: ([\w.]+)", text)
    if not op:
        return f"TFLite conversion (litert-torch) failed: {first_line(e)}; export to ONNX instead (--format onnx)"
    name = op.group(1)
    where = ""
    aten = "aten::" + name.removeprefix("aten.").rsplit(".", 1)[0].lstrip("_")
    found = find_op_module(model, plan.args, aten)
    if found:
        where = f" in module {found[0]!r} ({found[1]})"
    else:
        src = re.search(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)', text)
        if src:
            where = f" at {Path(src.group(1)).name}:{src.group(2)} ({src.group(4).strip()})"
    return (
        f"TFLite conversion failed: operator {name} has no LiteRT lowering{where}; replace it with supported "
        "operations, or export to ONNX instead (--format onnx)"
    )


def tflite_io(plan: ExportPlan, n_outputs: int) -> dict[str, dict[str, str]]:
    """Slimline's input/output names -> the converted model's signature names (``args_<i>``, ``output_<i>``)."""
    return {
        "inputs": {n: f"args_{i}" for i, n in enumerate(plan.input_names)},
        "outputs": {n: f"output_{i}" for i, n in enumerate(plan.output_names[:n_outputs])},
    }


def compact_tensor_names(model: bytes) -> bytes:
    """The flatbuffer with every tensor renamed ``t<i>`` (signatures refer to tensors by index, so their
    names stay)."""
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for sg in obj.subgraphs or []:
        for i, t in enumerate(sg.tensors or []):
            t.name = f"t{i}".encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def left_float_ops(model: bytes) -> list[dict[str, str]]:
    """Heavy operators (convolutions, matmuls) whose input is still float32: name (output tensor) and op."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for sg in obj.subgraphs or []:
        for op in sg.operators or []:
            code = obj.operatorCodes[op.opcodeIndex]
            opname = names.get(flatbuffer_utils.get_builtin_code_from_operator_code(code), "?")
            if opname in HEAVY_TFL_OPS and op.inputs is not None and len(op.inputs):
                t = sg.tensors[op.inputs[0]]
                if t.type == schema.TensorType.FLOAT32:
                    out_t = sg.tensors[op.outputs[0]]
                    out.append(
                        {
                            "name": out_t.name.decode() if isinstance(out_t.name, bytes) else str(out_t.name),
                            "op": opname,
                        }
                    )
    return out


def quantize_tflite(
    model: bytes, feeds: Iterable[Mapping[str, np.ndarray]], int8_io: bool = False, threads: int = 1
) -> bytes:
    """Full-integer int8 of the fp32 ``model`` with ai-edge-quantizer's static recipe (int8 per-channel
    weights, int8 activations from min/max over ``feeds``, each a dict of the model's signature input names
    at its fixed shape). Inputs and outputs stay float with QUANTIZE/DEQUANTIZE at the edges unless
    ``int8_io``."""
    quiet_litert()
    try:
        from ai_edge_quantizer import quantizer, recipe
    except ImportError as e:
        raise ExportError(f"TFLite int8 needs ai-edge-quantizer ({first_line(e)}); pip install 'slimline[edge]'") from e
    rc = recipe.static_wi8_ai8()
    if not int8_io:
        rc += [{"regex": ".*", "operation": op, "algorithm_key": "no_quantize"} for op in ("INPUT", "OUTPUT")]
    q = quantizer.Quantizer(bytearray(model), rc)
    data = [dict(f) for f in feeds]
    if not data:
        raise ExportError("TFLite int8 needs calibration samples; none were given")
    key = "serving_default"
    import tqdm  # the calibrator's per-tensor progress bar is noise in slimline's output

    with _quiet(), contextlib.redirect_stderr(io.StringIO()), _tqdm_off(tqdm), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")  # its calibrator's own
        cal = q.calibrate({key: data}, num_threads=max(1, threads))
        res = q.quantize(cal, enable_progress_bar=False, enable_progress_report=False)
    if res.quantized_model is None:
        raise ExportError("ai-edge-quantizer wrote no model; check that the fp32 .tflite has quantizable operators")
    return bytes(res.quantized_model)


@contextlib.contextmanager
def _tqdm_off(tqdm: Any) -> Any:
    from functools import partialmethod

    old = tqdm.tqdm.__init__
    tqdm.tqdm.__init__ = partialmethod(old, disable=True)  # type: ignore[method-assign]
    try:
        yield
    finally:
        tqdm.tqdm.__init__ = old  # type: ignore[method-assign]


def model_feeds(
    plan: ExportPlan, io_names: Mapping[str, str], samples: Mapping[str, np.ndarray], nhwc: bool = False
) -> list[dict[str, np.ndarray]]:
    """Calibration feeds at the model's fixed batch (the plan's example batch): ``samples`` by slimline input
    name, split into slices, keyed by the converted model's input names (int64 cast to int32, NCHW moved to
    NHWC when the model takes it)."""
    b = int(plan.args[0].shape[0])
    n = len(next(iter(samples.values())))
    out = []
    for start in range(0, n - b + 1, b):
        feed = {}
        for name in plan.input_names:
            a = np.asarray(samples[name][start : start + b])
            if a.dtype == np.int64:
                a = a.astype(np.int32)
            if nhwc and name == plan.input_names[0]:
                a = a.transpose(0, 2, 3, 1)
            feed[io_names[name]] = np.ascontiguousarray(a)
        out.append(feed)
    return out


def export_tflite_artifact(
    model: nn.Module,
    dest: str | Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
    rtol: float = 1e-4,
    parity_batch: int = 4,
    seed: int = 0,
    signature: Signature | None = None,
    shapes: dict[str, list[int]] | None = None,
    nhwc: bool = False,
) -> tuple[Artifact, dict[str, Any]]:
    """Write a ``tflite`` artifact (``model.tflite``, fp32) to ``dest`` and check it against PyTorch on a
    seeded random batch of ``parity_batch`` samples run through the litert runtime.

    Record: ``format``, ``parity`` {max_abs_diff, max_rel_diff, tolerance, passed, against, batch, runtime},
    ``file_bytes``, ``layout``, ``model_batch``, ``litert_torch_version``."""
    from slimline.runtimes.litert import LiteRTSession

    lt = import_litert_torch()
    plan, sig = tflite_plan(model, meta, signature, shapes, seed)
    flat = compact_tensor_names(convert_tflite(model, plan, nhwc))
    io_names = tflite_io(plan, len(sig.outputs))
    layout = "NHWC" if nhwc else "NCHW"
    if nhwc:
        first = sig.inputs[0]
        n, c, h, width = first.shape
        sig = Signature((TensorSpec(first.name, first.dtype, (n, h, width, c)), *sig.inputs[1:]), sig.outputs)
    high = int_high(model)
    fixed = {t.name: tuple(1 if d == BATCH else int(d) for d in t.shape) for t in sig.inputs}
    rng_feeds = sig.example_feeds({k: (parity_batch, *v[1:]) for k, v in fixed.items()}, seed, int_high=high)
    torch_feeds = {
        k: (v.transpose(0, 3, 1, 2) if nhwc and k == sig.inputs[0].name else v) for k, v in rng_feeds.items()
    }
    reference = torch_run(model, {k: np.ascontiguousarray(v) for k, v in torch_feeds.items()})
    out_meta = {**meta, "signature": sig.to_dict(), "tflite_io": io_names, "layout": layout}
    with ArtifactWriter(dest, "tflite", out_meta, list(lineage)) as w:
        w.add("model", TFLITE_FILE).write_bytes(flat)
        session = LiteRTSession(Artifact("tflite", w.tmp, dict(w.files), out_meta), None, "xnnpack")
        got_named = session.run_named(rng_feeds)
        got = [got_named[n] for n in io_names["outputs"]]
        par = check_outputs(
            reference[: len(got)], got, list(io_names["outputs"]), rtol, "the TFLite export (LiteRT, XNNPACK)"
        )
    art = w.artifact
    assert art is not None
    record = {
        "format": "tflite",
        "source": "torch",
        "litert_torch_version": getattr(lt, "__version__", "unknown"),
        "layout": layout,
        "model_batch": session.model_batch,
        "parity": par | {"batch": parity_batch, "runtime": "litert"},
        "file_bytes": art.size_bytes(),
    }
    return art, record
