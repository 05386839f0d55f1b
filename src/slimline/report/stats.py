"""The confidence interval of a change in accuracy between two models measured on the same test images.

Two methods, and the report says which one each figure used:

* ``unpaired``: the normal approximation of the difference of two independent proportions,
  ``se = sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2)``. Measured on the *same* images the two
  accuracies are positively correlated, so this interval is conservative (too wide), never too narrow.
* ``paired (bound)``: the paired (McNemar) normal approximation ``se = sqrt((q - d^2) / n)``, where
  ``q`` is the fraction of images on which exactly one of the two models is right. ``q`` is not
  stored, but it cannot exceed the fraction of images on which the two models' top-1 predictions
  differ (``1 - top1_agreement``), which the ``evaluate`` step records against the run's baseline.
  Using that bound keeps the interval conservative. When the predictions agree on every image,
  ``q`` is floored at ``3 / n`` (the "rule of three" 95% bound on a proportion seen as zero).
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054


def diff_ci(
    top1: float,
    n: int,
    ref_top1: float,
    ref_n: int,
    agreement: float | None = None,
) -> dict[str, Any]:
    """Change ``top1 - ref_top1`` (percentage points) with its 95% interval.

    ``top1``/``ref_top1`` and ``agreement`` (top-1 agreement between the two models) are in percent.
    Pass ``agreement`` only when it was measured between exactly these two models on the same
    ``n`` images; the paired bound is then used, otherwise the unpaired approximation.
    """
    p1, p2 = top1 / 100.0, ref_top1 / 100.0
    d = p1 - p2
    if n <= 0 or ref_n <= 0:
        return {"delta": 100 * d, "lo": math.nan, "hi": math.nan, "method": "none (no sample size)"}
    if agreement is not None and n == ref_n and math.isfinite(agreement):
        q = max(1.0 - agreement / 100.0, abs(d), 3.0 / n)
        se = math.sqrt(max(q - d * d, 0.0) / n)
        method = "paired (bound from top-1 agreement)"
    else:
        se = math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / ref_n)
        method = "unpaired (normal approx.)"
    return {"delta": 100 * d, "lo": 100 * (d - Z95 * se), "hi": 100 * (d + Z95 * se), "method": method}


def significant(ci: dict[str, Any]) -> bool:
    """Whether the 95% interval of a change excludes zero."""
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    return bool(math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both).

    A point is dominated when another is at least as good on both axes and better on one.
    Returned in order of increasing x.
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i])
