"""``evaluate``: accuracy of the current artifact on the test (or validation) split, through a runtime."""

from __future__ import annotations

from typing import Literal

from slimline.artifact import Artifact
from slimline.context import RunContext
from slimline.evaluate import evaluate_artifact
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class EvaluateOptions(StepConfig):
    split: Literal["test", "val"] = "test"
    runtime: str | None = None  # default: the artifact's natural runtime
    fidelity: bool = True  # also compare with the run's baseline model


@STEPS.register("evaluate")
class Evaluate(Step[EvaluateOptions]):
    """Top-1/top-5 of the current artifact on the test (or validation) split, and fidelity to the baseline."""

    name = "evaluate"
    Config = EvaluateOptions
    accepts = ("torch", "onnx", "openvino", "tflite")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        ds = ctx.data.test if cfg.split == "test" else ctx.data.val
        reference = None
        if cfg.fidelity and ctx.baseline is not None and ctx.baseline.path != artifact.path:
            reference = evaluate_artifact(ctx.baseline, ds, return_logits=True)
        metrics = evaluate_artifact(artifact, ds, runtime=cfg.runtime, reference=reference)
        return StepOutput(None, {"evaluated": artifact.path.name, "split": cfg.split, "metrics": metrics})
