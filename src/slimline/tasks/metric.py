"""A user's metric as a task: ``package.module:function`` called as ``fn(outputs, labels) -> {name: number}``.

``outputs`` maps each output name to its array (first axis: samples; an image classifier's one output is named
``output``); ``labels`` is the data's labels array. Fidelity is the generic task's. The function is imported only
because the user named it (``--metric``), as a model factory is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from numbers import Real
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.tasks.base import Outputs
from slimline.tasks.generic import output_fidelity


class MetricTask:
    """Named-array feeds, the user's ``metric``, generic fidelity."""

    def __init__(self, spec: str, fn: Callable[..., Any]) -> None:
        self.name = spec
        self.fn = fn

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return samples.batches(batch_size)

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        got = self.fn(dict(outputs), labels)
        if not isinstance(got, dict) or not all(isinstance(k, str) for k in got):
            raise SlimlineError(f"metric {self.name} returned {type(got).__name__}; return a dict of name -> number")
        bad = [k for k, v in got.items() if isinstance(v, bool) or not isinstance(v, Real | np.number)]
        if bad:
            raise SlimlineError(
                f"metric {self.name} returned non-numbers for {', '.join(bad)}; return a dict of name -> number"
            )
        return {k: (int(v) if isinstance(v, int | np.integer) else float(v)) for k, v in got.items()}

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        return output_fidelity(outputs, reference)


def metric_task(spec: str) -> MetricTask:
    """The task for the user's ``package.module:function`` metric (imported now)."""
    from slimline.models import import_factory

    return MetricTask(spec, import_factory(spec, "metric", SlimlineError))


__all__ = ["MetricTask", "metric_task"]
