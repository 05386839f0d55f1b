"""Accuracy-aware quantization: keep the most sensitive layers in float until the drop fits the budget.

Quantize everything, evaluate; while the drop against the float model exceeds ``max_drop``
(points, absolute), return the most sensitive layer still quantized to float (ranked by the
simulated per-layer sensitivity of :mod:`slimline.quant.fakequant`) and try again. When even
keeping every layer but one in float misses the budget, stop with an error that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from slimline.errors import SlimlineError
from slimline.progress import console

T = TypeVar("T")


class AccuracyBudgetError(SlimlineError):
    """The accuracy budget cannot be met by keeping layers in float."""


@dataclass
class AccuracyAwareResult(Generic[T]):
    candidate: T
    float_metric: float
    final_metric: float
    max_drop: float
    kept_float: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drop(self) -> float:
        return self.float_metric - self.final_metric

    def record(self) -> dict[str, Any]:
        return {
            "max_drop": self.max_drop,
            "float_metric": self.float_metric,
            "final_metric": self.final_metric,
            "final_drop": self.drop,
            "kept_float": self.kept_float,
            "iterations": len(self.history),
            "history": self.history,
        }


def accuracy_aware_quantize(
    quantize: Callable[[list[str]], T],
    evaluate: Callable[[T], float],
    float_metric: float,
    ranking: list[str],
    max_drop: float = 1.0,
    layers_per_step: int = 1,
    max_iterations: int | None = None,
    always_float: list[str] | None = None,
    verbose: bool = True,
) -> AccuracyAwareResult[T]:
    """Run the loop. ``quantize(keep_float)`` makes a candidate, ``evaluate`` gives its metric (percent).

    ``ranking`` lists layer names, most sensitive first. ``always_float`` layers stay float from the
    start (the user's exclusions) and do not count as returned by the loop.
    """
    if max_drop < 0:
        raise ValueError("max_drop must be >= 0")
    fixed = list(always_float or [])
    order = [n for n in ranking if n not in set(fixed)]
    kept: list[str] = []
    history: list[dict[str, Any]] = []
    while True:
        candidate = quantize([*fixed, *kept])
        metric = evaluate(candidate)
        drop = float_metric - metric
        history.append({"kept_float": list(kept), "metric": metric, "drop": drop})
        if verbose:
            console.print(
                f"  accuracy-aware: {len(kept)} layer(s) in float -> {metric:.2f}% (drop {drop:+.2f}, "
                f"budget {max_drop:.2f})",
                highlight=False,
            )
        if drop <= max_drop:
            return AccuracyAwareResult(candidate, float_metric, metric, max_drop, kept, history)
        remaining = [n for n in order if n not in set(kept)]
        if len(remaining) <= 1:
            raise AccuracyBudgetError(
                f"even with every layer but one in float ({len(kept)} returned; still quantized: "
                f"{remaining or 'none'}) the drop is {drop:.2f} points, over the budget of {max_drop:.2f}. "
                "The loss comes from operators outside the ranked layers or from the layer left; raise max_drop, "
                "try another calibration method, or fine-tune with quantization-aware training (qat step)"
            )
        if max_iterations is not None and len(history) >= max_iterations:
            raise AccuracyBudgetError(
                f"the drop is still {drop:.2f} points (> {max_drop:.2f}) after {len(history)} tries with "
                f"{len(kept)} layer(s) in float ({', '.join(kept)}); raise max_iterations or max_drop"
            )
        kept.extend(remaining[: max(1, min(layers_per_step, len(remaining) - 1))])
