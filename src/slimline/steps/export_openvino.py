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
from slimline.errors import SlimlineError
from slimline.openvino_export import export_openvino_artifact
from slimline.pipeline import RunContext
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class ExportOpenVinoOptions(StepConfig):
    via: Literal["direct", "onnx"] = Field("direct", description="PyTorch models: convert directly or via ONNX")
    rtol: float = Field(1e-4, gt=0, description="max relative difference to the source on a random batch")
    parity_batch: int = Field(4, ge=1)


@STEPS.register("export_openvino")
class ExportOpenVino(Step):
    name = "export_openvino"
    Config = ExportOpenVinoOptions

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg: ExportOpenVinoOptions = self.config  # type: ignore[assignment]
        if artifact.kind == "openvino":
            return StepOutput(None, {"note": "already OpenVINO IR; nothing to do"})
        if artifact.kind == "torch":
            source: object = load_torch(artifact)
        elif artifact.kind == "onnx":
            source = artifact
        else:
            raise SlimlineError(f"export_openvino needs a PyTorch or ONNX model, not {artifact.kind}")
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
