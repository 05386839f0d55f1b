"""``export_openvino``: PyTorch or ONNX -> OpenVINO IR (``model.xml`` + ``model.bin``), parity-checked.

From a PyTorch artifact the module is converted (``via: onnx`` goes through a temporary ONNX
export instead) and compared with PyTorch; from an ONNX artifact the file is converted and compared
with ONNX Runtime on the same file. Record: ``source``, ``parity`` {max_abs_diff, max_rel_diff,
tolerance, passed, against, batch}, ``file_bytes``, ``openvino_version``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.openvino_export import export_openvino_artifact
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class ExportOpenVinoOptions(StepConfig):
    via: Literal["direct", "onnx"] = Field("direct", description="PyTorch models: convert directly or via ONNX")
    rtol: float = Field(1e-4, gt=0, description="max relative difference to the source on a random batch")
    parity_batch: int = Field(4, ge=1)


@STEPS.register("export_openvino")
class ExportOpenVino(Step[ExportOpenVinoOptions]):
    """PyTorch or ONNX -> OpenVINO IR, parity-checked (an OpenVINO artifact passes through)."""

    name = "export_openvino"
    Config = ExportOpenVinoOptions
    accepts = ("torch", "onnx", "openvino")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        if artifact.kind == "openvino":
            return StepOutput(None, {"note": "already OpenVINO IR; nothing to do"})
        if artifact.kind == "torch":
            source: object = load_torch(artifact)
        else:  # onnx
            source = artifact
        art, record = export_openvino_artifact(
            source,  # type: ignore[arg-type]
            ctx.out_dir,
            artifact.meta,
            artifact.lineage,
            rtol=cfg.rtol,
            parity_batch=cfg.parity_batch,
            seed=ctx.seed,
            via=cfg.via,
        )
        return StepOutput(art, record)
