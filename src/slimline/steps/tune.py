"""``tune``: search threads, layout/fusion, OpenVINO streams and batch size per runtime for a target
(lowest latency at batch 1, or highest throughput under a p99 latency bound) and write the best into
the artifact's ``runtime_config``, so that bench, eval, predict and serving use them.

The runtime defaults are always measured and kept unless beaten (see :mod:`slimline.optimize.tune`).
The artifact's files are copied unchanged; only its meta changes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from slimline.artifact import Artifact
from slimline.context import RunContext
from slimline.optimize.tune import DEFAULT_BATCHES, copy_artifact, summary, tune, tuned_meta
from slimline.progress import console
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


class TuneOptions(StepConfig):
    target: Literal["latency", "throughput"] = "latency"
    p99_ms: float | None = Field(None, gt=0, description="throughput target: p99 latency bound per call")
    runtimes: list[str] | None = None  # default: every available runtime for the artifact's kind
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: list(DEFAULT_BATCHES),
        min_length=1,
        description="throughput target: the batch sizes to try; the defaults are compared at the smallest",
    )
    threads: list[int] | None = None  # default: 1, 2, 4, ... up to the CPU count (plus the runtime default)
    rounds: int = Field(3, ge=1)
    round_seconds: float = Field(0.2, gt=0)
    min_gain: float = Field(0.02, ge=0, description="keep the defaults unless the best beats them by this fraction")
    exhaustive: bool = False


@STEPS.register("tune")
class Tune(Step[TuneOptions]):
    """Search runtime settings for a latency or throughput target and write the best into runtime_config."""

    name = "tune"
    Config = TuneOptions
    accepts = ("torch", "onnx", "openvino", "tflite")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        results = tune(
            artifact,
            cfg.runtimes,
            cfg.target,
            cfg.p99_ms,
            batch_sizes=cfg.batch_sizes,
            threads=cfg.threads,
            rounds=cfg.rounds,
            round_seconds=cfg.round_seconds,
            min_gain=cfg.min_gain,
            exhaustive=cfg.exhaustive,
            seed=ctx.seed,
            on_trial=lambda line: console.print(f"  [dim]{line}[/]", highlight=False),
        )
        meta = tuned_meta(artifact.meta, results)
        out = copy_artifact(artifact, ctx.out_dir, meta, artifact.lineage)
        record = {
            "target": cfg.target,
            "p99_ms": cfg.p99_ms,
            "runtimes": {rt: r.to_dict() for rt, r in results.items()},
            "runtime_config": {rt: meta["runtime_config"][rt] for rt in results},
            "summary": summary(results),
        }
        return StepOutput(out, record)
