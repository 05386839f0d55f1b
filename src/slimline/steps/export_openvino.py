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
        shapes = self._data_shapes(artifact, ctx) if artifact.kind == "onnx" else None
        art, record = export_openvino_artifact(
            source,  # type: ignore[arg-type]
            ctx.out_dir,
            artifact.meta,
            artifact.lineage,
            rtol=cfg.rtol,
            parity_batch=cfg.parity_batch,
            seed=ctx.seed,
            via=cfg.via,
            shapes=shapes,
        )
        return StepOutput(art, record)

    def _data_shapes(self, artifact: Artifact, ctx: RunContext) -> dict[str, list[int]] | None:
        """A one-input ONNX model with dynamic dims beyond the batch (a detector's height and width): the parity
        check's input shape from the run's data (its samples' shape), which the model will be fed."""
        from slimline.signature import artifact_signature

        sig = artifact_signature(artifact)
        if ctx.data.config is None or len(sig.inputs) != 1 or all(isinstance(d, int) for d in sig.inputs[0].shape[1:]):
            return None
        sample = ctx.data.calibration(1).inputs()
        return {sig.inputs[0].name: [self.config.parity_batch, *sample.shape[1:]]}
