"""Export to OpenVINO IR (``model.xml`` + ``model.bin``) from a PyTorch module or an ONNX file.

``openvino.convert_model`` reads the PyTorch module (traced with an example batch; the batch axis
is left dynamic) or the ONNX file; ``openvino.save_model(..., compress_to_fp16=False)`` keeps fp32
weights. The result is checked on a seeded random batch, on the CPU in f32, against PyTorch (or
against ONNX Runtime when the source is an ONNX file). Telemetry is switched off before
``openvino`` is imported (see :func:`slimline.runtimes.openvino.disable_telemetry`).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter
from slimline.errors import ExportError, RuntimeUnavailable
from slimline.onnx_export import (
    ExportPlan,
    by_input,
    check_outputs,
    classifier_plan,
    export_onnx,
    export_signature,
    find_op_module,
    no_mha_fastpath,
    ort_run,
    parity_plan,
    torch_run,
)
from slimline.runtimes.openvino import import_openvino
from slimline.signature import Signature, TensorSpec, artifact_signature

IR_FILES = {"model": "model.xml", "weights": "model.bin"}


def _ov() -> Any:
    try:
        return import_openvino()
    except RuntimeUnavailable as e:
        raise ExportError(str(e)) from e


def _plan(input_shape: tuple[int, ...] | ExportPlan) -> ExportPlan:
    return input_shape if isinstance(input_shape, ExportPlan) else classifier_plan(input_shape)


def convert_openvino(
    source: nn.Module | str | Path, input_shape: tuple[int, ...] | ExportPlan, signature: Signature | None = None
) -> Any:
    """An ``openvino.Model`` from a PyTorch module or an ONNX file. A classifier (``input_shape``: one sample's
    shape) gets a dynamic batch; with a plan and ``signature``, every input gets its dtype and dynamic axes
    and the inputs and outputs the plan's names."""
    ov = _ov()
    plan = _plan(input_shape)
    try:
        if not isinstance(source, nn.Module):
            return ov.convert_model(str(source))
        with torch.no_grad(), no_mha_fastpath():
            if signature is None:
                example = plan.args[0]
                return ov.convert_model(
                    source.eval(), example_input=example, input=[ov.PartialShape([-1, *example.shape[1:]])]
                )
            inputs = [
                (ov.PartialShape([-1 if isinstance(d, str) else d for d in t.shape]), ov.Type(np.dtype(t.dtype)))
                for t in signature.inputs
            ]
            model = ov.convert_model(source.eval(), example_input=plan.args, input=inputs)
        for ports, names in ((model.inputs, plan.input_names), (model.outputs, plan.output_names)):
            for port, name in zip(ports, names, strict=False):
                port.get_tensor().set_names({name})
        return model
    except Exception as e:  # noqa: BLE001 - the converters raise many kinds
        raise ExportError(_explain(e, source, plan)) from e


def _explain(e: Exception, source: nn.Module | str | Path, plan: ExportPlan) -> str:
    text = str(e)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    msg = f"OpenVINO conversion failed: {first}"
    op = re.search(r"\b(aten::\w+|prim::\w+)", text)
    if op:
        msg += f". Operator {op.group(1)}"
        if isinstance(source, nn.Module):
            where = find_op_module(source, plan.args, op.group(1))
            if where:
                msg += f" is used in module {where[0]!r} ({where[1]})"
        msg += ": replace it with supported operations or convert from ONNX (--via onnx)"
    return msg


def export_openvino(
    source: nn.Module | str | Path,
    input_shape: tuple[int, ...] | ExportPlan,
    xml_path: str | Path,
    signature: Signature | None = None,
) -> Path:
    """Convert ``source`` and write ``xml_path`` plus its ``.bin`` (fp32 weights)."""
    ov = _ov()
    model = convert_openvino(source, input_shape, signature)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def _compile_f32(xml_path: str | Path, device: str = "CPU") -> Any:
    ov = _ov()
    core = ov.Core()
    return core.compile_model(core.read_model(str(xml_path)), device, {"INFERENCE_PRECISION_HINT": "f32"})


def openvino_outputs(xml_path: str | Path, x: np.ndarray, device: str = "CPU") -> np.ndarray:
    """Outputs of the IR on ``x``, compiled in f32 (no bf16/f16 shortcuts) for a fair comparison."""
    return np.asarray(_compile_f32(xml_path, device)(x)[0])


def openvino_run(xml_path: str | Path, feeds: dict[str, np.ndarray], device: str = "CPU") -> list[np.ndarray]:
    """Every output of the IR on ``feeds`` (by input name, else in order), compiled in f32."""
    compiled = _compile_f32(xml_path, device)
    names = [sorted(p.get_names())[0] if p.get_names() else str(i) for i, p in enumerate(compiled.inputs)]
    ordered = by_input(names, feeds)
    result = compiled([np.ascontiguousarray(ordered[n]) for n in names])
    return [np.asarray(result[p]) for p in compiled.outputs]


def plan_signature(plan: ExportPlan, outputs: list[np.ndarray]) -> Signature:
    """The plan's tensor and dynamic-dim names (fixed dims left 0), for naming the dims of an IR, which has none."""

    def spec(name: str, ndim: int) -> TensorSpec:
        axes = plan.dynamic_axes.get(name, {})
        return TensorSpec(name, shape=tuple(axes.get(i, 0) for i in range(ndim)))

    return Signature(
        tuple(spec(n, a.dim()) for n, a in zip(plan.input_names, plan.args, strict=True)),
        tuple(spec(n, o.ndim) for n, o in zip(plan.output_names, outputs, strict=False)),
    )


def export_openvino_artifact(
    source: nn.Module | Artifact,
    dest: str | Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
    rtol: float = 1e-4,
    parity_batch: int = 4,
    seed: int = 0,
    via: str = "direct",
    signature: Signature | None = None,
    shapes: dict[str, list[int]] | None = None,
) -> tuple[Artifact, dict[str, Any]]:
    """Write an ``openvino`` artifact (``model.xml`` + ``model.bin``) to ``dest`` and check it.

    ``source`` is a PyTorch module (compared with PyTorch) or an ONNX artifact (compared with ONNX
    Runtime on the same file). ``via="onnx"`` converts a PyTorch module through a temporary ONNX
    export (OpenVINO's ONNX reader is faster and covers other operators than its PyTorch one). Inputs as for
    :func:`slimline.onnx_export.export_onnx_artifact`; an ONNX source's own signature serves when ``meta`` gives
    none. The IR's signature (dim names from the source's) goes to ``meta["signature"]``.
    """
    if via not in ("direct", "onnx"):
        raise ExportError(f"via must be 'direct' or 'onnx', not {via!r}")
    if isinstance(source, Artifact):
        if source.kind != "onnx":
            raise ExportError(f"OpenVINO export reads PyTorch modules or ONNX artifacts, not {source.kind}")
        if signature is None and "input_shape" not in meta:
            signature = artifact_signature(source)
    model = source if isinstance(source, nn.Module) else None
    plan, feeds = parity_plan(model, meta, signature, shapes, parity_batch, seed)
    if isinstance(source, Artifact):
        reference, against, origin = ort_run(source.model_file, feeds), "ONNX Runtime", "onnx"
    else:
        reference, against, origin = torch_run(source, feeds), "PyTorch", "torch" if via == "direct" else "torch->onnx"
    with ArtifactWriter(dest, "openvino", dict(meta), list(lineage)) as w:
        xml = w.add("model", IR_FILES["model"])
        w.add("weights", IR_FILES["weights"])
        if isinstance(source, Artifact):
            export_openvino(source.model_file, plan, xml)
        elif via == "onnx":
            with tempfile.TemporaryDirectory(prefix="slimline-ov-") as tmp:
                export_openvino(export_onnx(source, plan, Path(tmp) / "model.onnx"), plan, xml)
        else:
            export_openvino(source, plan, xml, export_signature(meta, signature))
        ir_sig = Signature.from_openvino(_ov().Core().read_model(str(xml)))
        w.meta["signature"] = ir_sig.with_dim_names(plan_signature(plan, reference)).to_dict()
        try:
            got = openvino_run(xml, feeds)
        except Exception as e:  # noqa: BLE001 - openvino raises RuntimeError with long texts
            raise ExportError(f"OpenVINO cannot run the IR it wrote: {str(e).strip().splitlines()[0]}") from e
        par = check_outputs(
            reference, got, plan.output_names, rtol, "the OpenVINO export (run on CPU in f32)", against=against
        )
    art = w.artifact
    assert art is not None
    ov = _ov()
    record = {
        "format": "openvino",
        "source": origin,
        "openvino_version": ov.__version__.split("-")[0],
        "parity": par | {"batch": parity_batch, "runtime": "openvino"},
        "file_bytes": art.size_bytes(),
    }
    return art, record
