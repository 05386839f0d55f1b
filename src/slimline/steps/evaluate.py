"""``evaluate``: accuracy of the current artifact on the test (or validation) split, through a runtime."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from slimline.artifact import Artifact
from slimline.context import RunContext
from slimline.evaluate import evaluate_artifact
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class EvaluateOptions(StepConfig):
    split: Literal["test", "val"] = "test"
    runtime: str | None = None  # default: the artifact's natural runtime
    fidelity: bool = True  # also compare with the run's baseline model
    metric: Literal["accuracy", "detection"] = Field(
        "accuracy",
        description="accuracy (top-1/top-5 of class scores) or detection (a detector: detection fidelity against "
        "the run's baseline -- share of its detections matched at IoU >= 0.5, same class)",
    )


@STEPS.register("evaluate")
class Evaluate(Step[EvaluateOptions]):
    """Top-1/top-5 of the current artifact on the test (or validation) split, and fidelity to the baseline."""

    name = "evaluate"
    Config = EvaluateOptions
    accepts = ("torch", "onnx", "openvino", "tflite")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        ds = ctx.data.test if cfg.split == "test" else ctx.data.val
        if cfg.metric == "detection":
            metrics = self._detection(artifact, ctx, ds.inputs())
            return StepOutput(None, {"evaluated": artifact.path.name, "split": cfg.split, "metrics": metrics})
        reference = None
        if cfg.fidelity and ctx.baseline is not None and ctx.baseline.path != artifact.path:
            reference = evaluate_artifact(ctx.baseline, ds, return_logits=True)
        metrics = evaluate_artifact(artifact, ds, runtime=cfg.runtime, reference=reference)
        return StepOutput(None, {"evaluated": artifact.path.name, "split": cfg.split, "metrics": metrics})

    def _detection(self, artifact: Artifact, ctx: RunContext, images: Any) -> dict[str, Any]:
        """Detections of ``artifact`` on the split's images, compared with the baseline's (no box labels in an
        image dataset: fidelity only); the baseline itself gets its detection count."""
        from slimline.data.arrays import NamedSamples
        from slimline.errors import SlimlineError
        from slimline.evaluate import predict_named
        from slimline.runtimes import default_runtime, open_session
        from slimline.signature import artifact_signature
        from slimline.tasks.detection import DetectionTask, detection_fidelity

        if artifact.kind == "torch":
            raise SlimlineError("evaluate metric: detection runs exported detectors; put it after export_onnx")

        def detect(art: Artifact, runtime: str | None) -> Any:
            session = open_session(art, runtime or default_runtime(art))
            name = (session.signature or artifact_signature(art)).inputs[0].name
            return task.detections(predict_named(session, NamedSamples({name: images}), 1))

        task = DetectionTask()
        got = detect(artifact, self.config.runtime)
        out: dict[str, Any] = {"n": len(images), "detections": sum(len(d) for d in got)}
        base = ctx.baseline
        if self.config.fidelity and base is not None and base.path != artifact.path and base.kind != "torch":
            out.update(detection_fidelity(got, detect(base, None)))
        return out
