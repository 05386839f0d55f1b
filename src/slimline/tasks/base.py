"""The task protocol and the registry of tasks."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from slimline.errors import SlimlineError

Outputs = Mapping[str, np.ndarray]  # output name -> array, first axis: samples


@runtime_checkable
class Task(Protocol):
    """What a task knows: feeding samples to a model, scoring its outputs, comparing two models' outputs."""

    name: str

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Named input feeds of up to ``batch_size`` samples each."""
        ...

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        """Scores of ``outputs`` against ``labels`` (raises SlimlineError when the task cannot score them)."""
        ...

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        """How close ``outputs`` are to ``reference`` (same names, same shapes)."""
        ...


TASKS: dict[str, Task] = {}


def get_task(name: str) -> Task:
    """A registered task, or a user's metric ``package.module:function`` (imported, then registered under that
    name): call it only with a metric the user named."""
    from slimline import tasks  # noqa: F401 - registers the built-in tasks

    if name not in TASKS and ":" in name:
        from slimline.tasks.metric import metric_task

        TASKS[name] = metric_task(name)
    if name not in TASKS:
        raise SlimlineError(
            f"no task {name!r}; tasks: {', '.join(sorted(TASKS))}, or a metric 'package.module:function'"
        )
    return TASKS[name]
