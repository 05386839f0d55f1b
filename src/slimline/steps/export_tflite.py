"""``export_tflite``: PyTorch -> TensorFlow Lite / LiteRT (``model.tflite``, fp32), parity-checked in LiteRT.

The module is converted by litert-torch at batch 1 (TFLite shapes are fixed; the ``litert`` runtime runs
larger batches as slices) and compared with PyTorch on a seeded random batch. ``nhwc`` makes the image
input channels-last. Full-integer int8 is the ``quantize`` step with ``backend: litert`` on the PyTorch
artifact. Record: ``parity`` {max_abs_diff, max_rel_diff, tolerance, passed, against, batch, runtime},
``file_bytes``, ``layout``, ``model_batch``, ``litert_torch_version``.
"""

from __future__ import annotations

from pydantic import Field

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class ExportTFLiteOptions(StepConfig):
    rtol: float = Field(1e-4, gt=0, description="max relative difference to PyTorch on a random batch")
    parity_batch: int = Field(4, ge=1)
    nhwc: bool = Field(False, description="take the image input channels-last (N, H, W, C)")


@STEPS.register("export_tflite")
class ExportTFLite(Step[ExportTFLiteOptions]):
    """PyTorch -> .tflite (LiteRT), parity-checked (a tflite artifact passes through)."""

    name = "export_tflite"
    Config = ExportTFLiteOptions
    accepts = ("torch", "tflite")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.tflite_export import export_tflite_artifact

        if artifact.kind == "tflite":
            return StepOutput(None, {"note": "already .tflite; nothing to do"})
        cfg = self.config
        art, record = export_tflite_artifact(
            load_torch(artifact),
            ctx.out_dir,
            artifact.meta,
            artifact.lineage,
            rtol=cfg.rtol,
            parity_batch=cfg.parity_batch,
            seed=ctx.seed,
            nhwc=cfg.nhwc,
        )
        return StepOutput(art, record)
