"""``sensitivity``: how much each layer, channel group or block costs in accuracy when pruned alone.

Measured on the run's validation slice of the training data (never the test split). Writes
``sensitivity_<kind>.json`` and ``sensitivity_<kind>.png`` into the step folder; the ``prune`` step
that follows on the same model reuses these curves instead of measuring again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.fileio import write_json
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput


def _default_ratios() -> list[float]:
    from slimline.prune.sensitivity import DEFAULT_RATIOS  # declared once, there; imported late (torch_pruning)

    return list(DEFAULT_RATIOS)


class SensitivityOptions(StepConfig):
    kind: Literal["weight", "channel", "block"] | list[Literal["weight", "channel", "block"]] = "weight"
    ratios: list[float] = Field(default_factory=_default_ratios)
    samples: int | None = Field(256, ge=8, description="validation samples used (None: the whole slice)")
    metric: Literal["loss", "top1", "kl"] = "loss"
    layers: list[str] | None = Field(None, description="only units whose name matches (names or globs)")
    protect: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    protect_first_last: bool = True
    backend: Literal["auto", "torch", "onnxruntime"] = "auto"
    early_stop: bool = True
    adaptive_tol: float | None = Field(
        None, gt=0, description="measure only where the metric still moves by more than this; interpolate the rest"
    )
    plot: bool = True

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < r < 1 for r in v):
            raise ValueError("ratios must lie strictly between 0 and 1")
        return sorted(set(v))

    def kinds(self) -> list[str]:
        return [self.kind] if isinstance(self.kind, str) else list(dict.fromkeys(self.kind))


def summarise(result: dict[str, Any], metric: str, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` most sensitive units: worsening of ``metric`` at the middle ratio (or when removed)."""
    from slimline.prune.sensitivity import drop_at

    ratios = result.get("ratios") or [1.0]
    mid = ratios[len(ratios) // 2]
    rows = [
        {
            "unit": n,
            "ratio": mid if result["kind"] != "block" else 1.0,
            "worse_by": drop_at(e, mid, metric, result["baseline"]),
        }
        for n, e in result["units"].items()
    ]
    return sorted(rows, key=lambda r: -r["worse_by"])[:top]


@STEPS.register("sensitivity")
class Sensitivity(Step[SensitivityOptions]):
    """Per-layer pruning sensitivity curves of the current PyTorch model on the validation slice."""

    name = "sensitivity"
    Config = SensitivityOptions
    accepts = ("torch",)

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.prune.sensitivity import plot_sensitivity, sensitivity

        cfg = self.config
        model = load_torch(artifact)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        results: dict[str, Any] = {}
        files = []
        summary: dict[str, Any] = {}
        for kind in cfg.kinds():
            res = sensitivity(
                model,
                ctx.data.val,
                kind,  # type: ignore[arg-type]
                cfg.ratios,
                cfg.samples,
                cfg.layers,
                cfg.protect,
                cfg.exclude,
                cfg.protect_first_last,
                cfg.backend,
                early_stop=cfg.early_stop,
                seed=ctx.seed,
                adaptive_tol=cfg.adaptive_tol,
                metric=cfg.metric,
            )
            res["model"] = artifact.meta.get("model")
            res["metric"] = cfg.metric
            results[kind] = res
            files.append(write_json(ctx.out_dir / f"sensitivity_{kind}.json", res))
            if cfg.plot:
                title = (
                    f"{artifact.meta.get('model', 'model')}: {kind} sensitivity ({res['samples']} validation samples)"
                )
                files.append(plot_sensitivity(res, ctx.out_dir / f"sensitivity_{kind}.png", title))
            summary[kind] = summarise(res, cfg.metric)
        return StepOutput(
            None,
            {
                "evaluated": artifact.path.name,
                "split": "val",
                "sensitivity": results,
                "most_sensitive": summary,
                "files": [f.name for f in files],
            },
            files,
        )
