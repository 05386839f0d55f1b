"""``export_onnx``: PyTorch -> ONNX, checked by the ONNX checker and against PyTorch on a random batch.

Options: ``opset`` (default: chosen for the installed onnxruntime), ``rtol`` (max relative
difference to PyTorch, default 1e-4), ``parity_batch`` (size of the seeded random batch). The
record holds ``opset``, ``parity`` {max_abs_diff, max_rel_diff, tolerance, passed, batch},
``external_data`` and ``file_bytes``.
"""

from __future__ import annotations

from pydantic import Field

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.onnx_export import EXTERNAL_DATA_THRESHOLD, export_onnx_artifact
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class ExportOnnxOptions(StepConfig):
    opset: int | None = Field(None, ge=7, description="ONNX opset (default: suited to the installed onnxruntime)")
    rtol: float = Field(1e-4, gt=0, description="max relative difference to PyTorch on a random batch")
    parity_batch: int = Field(4, ge=1)
    external_data_threshold: int = Field(
        EXTERNAL_DATA_THRESHOLD, ge=0, description="weights above this many bytes go to model.onnx.data"
    )


@STEPS.register("export_onnx")
class ExportOnnx(Step[ExportOnnxOptions]):
    """PyTorch -> ONNX, parity-checked against PyTorch (an ONNX artifact passes through)."""

    name = "export_onnx"
    Config = ExportOnnxOptions
    accepts = ("torch", "onnx")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        if artifact.kind == "onnx":
            return StepOutput(None, {"note": "already ONNX; nothing to do"})
        model = load_torch(artifact)
        art, record = export_onnx_artifact(
            model,
            ctx.out_dir,
            artifact.meta,
            artifact.lineage,
            opset=cfg.opset,
            rtol=cfg.rtol,
            parity_batch=cfg.parity_batch,
            seed=ctx.seed,
            external_data_threshold=cfg.external_data_threshold,
        )
        return StepOutput(art, record)
