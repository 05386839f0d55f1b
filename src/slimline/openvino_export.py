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
    check_parity,
    export_onnx,
    find_op_module,
    ort_outputs,
    random_batch,
    torch_outputs,
)
from slimline.runtimes.openvino import import_openvino

IR_FILES = {"model": "model.xml", "weights": "model.bin"}


def _ov() -> Any:
    try:
        return import_openvino()
    except RuntimeUnavailable as e:
        raise ExportError(str(e)) from e


def convert_openvino(source: nn.Module | str | Path, input_shape: tuple[int, ...]) -> Any:
    """An ``openvino.Model`` from a PyTorch module or an ONNX file, with a dynamic batch axis."""
    ov = _ov()
    try:
        if isinstance(source, nn.Module):
            example = torch.zeros(1, *input_shape)
            with torch.no_grad():
                return ov.convert_model(
                    source.eval(), example_input=example, input=[ov.PartialShape([-1, *input_shape])]
                )
        return ov.convert_model(str(source))
    except Exception as e:  # noqa: BLE001 - the converters raise many kinds
        raise ExportError(_explain(e, source, input_shape)) from e


def _explain(e: Exception, source: nn.Module | str | Path, input_shape: tuple[int, ...]) -> str:
    text = str(e)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    msg = f"OpenVINO conversion failed: {first}"
    op = re.search(r"\b(aten::\w+|prim::\w+)", text)
    if op:
        msg += f". Operator {op.group(1)}"
        if isinstance(source, nn.Module):
            where = find_op_module(source, torch.zeros(1, *input_shape), op.group(1))
            if where:
                msg += f" is used in module {where[0]!r} ({where[1]})"
        msg += ": replace it with supported operations or convert from ONNX (--via onnx)"
    return msg


def export_openvino(source: nn.Module | str | Path, input_shape: tuple[int, ...], xml_path: str | Path) -> Path:
    """Convert ``source`` and write ``xml_path`` plus its ``.bin`` (fp32 weights)."""
    ov = _ov()
    model = convert_openvino(source, input_shape)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


def openvino_outputs(xml_path: str | Path, x: np.ndarray, device: str = "CPU") -> np.ndarray:
    """Outputs of the IR on ``x``, compiled in f32 (no bf16/f16 shortcuts) for a fair comparison."""
    ov = _ov()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml_path)), device, {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x)[0])


def export_openvino_artifact(
    source: nn.Module | Artifact,
    dest: str | Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
    rtol: float = 1e-4,
    parity_batch: int = 4,
    seed: int = 0,
    via: str = "direct",
) -> tuple[Artifact, dict[str, Any]]:
    """Write an ``openvino`` artifact (``model.xml`` + ``model.bin``) to ``dest`` and check it.

    ``source`` is a PyTorch module (compared with PyTorch) or an ONNX artifact (compared with ONNX
    Runtime on the same file). ``via="onnx"`` converts a PyTorch module through a temporary ONNX
    export (OpenVINO's ONNX reader is faster and covers other operators than its PyTorch one).
    """
    if "input_shape" not in meta:
        raise ExportError("the model's input shape is unknown: give it (e.g. --input-shape 3,224,224)")
    if via not in ("direct", "onnx"):
        raise ExportError(f"via must be 'direct' or 'onnx', not {via!r}")
    shape = tuple(int(s) for s in meta["input_shape"])
    x = random_batch(shape, parity_batch, seed)
    if isinstance(source, Artifact):
        if source.kind != "onnx":
            raise ExportError(f"OpenVINO export reads PyTorch modules or ONNX artifacts, not {source.kind}")
        reference, against, origin = ort_outputs(source.model_file, x), "ONNX Runtime", "onnx"
    else:
        reference, against, origin = torch_outputs(source, x), "PyTorch", "torch" if via == "direct" else "torch->onnx"
    with ArtifactWriter(dest, "openvino", dict(meta), list(lineage)) as w:
        xml = w.add("model", IR_FILES["model"])
        w.add("weights", IR_FILES["weights"])
        if isinstance(source, Artifact):
            export_openvino(source.model_file, shape, xml)
        elif via == "onnx":
            with tempfile.TemporaryDirectory(prefix="slimline-ov-") as tmp:
                onnx_path = export_onnx(source, shape, Path(tmp) / "model.onnx")
                export_openvino(onnx_path, shape, xml)
        else:
            export_openvino(source, shape, xml)
        try:
            got = openvino_outputs(xml, x)
        except Exception as e:  # noqa: BLE001 - openvino raises RuntimeError with long texts
            raise ExportError(f"OpenVINO cannot run the IR it wrote: {str(e).strip().splitlines()[0]}") from e
        par = check_parity(reference, got, rtol, "the OpenVINO export (run on CPU in f32)", against=against)
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
