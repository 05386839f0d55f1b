"""Classification: [batch, classes] scores against integer labels: top-1/top-5 with a 95% interval.

The figures are :func:`slimline.evaluate.accuracy_metrics`'s (the image classifiers' evaluation); fidelity adds
the generic per-output figures to top-1 agreement and logit cosine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.tasks.base import TASKS, Outputs
from slimline.tasks.generic import output_fidelity, scores_like


def scores_output(outputs: Outputs) -> tuple[str, np.ndarray]:
    """The one [batch, classes] output; an error saying what the outputs are otherwise."""
    if len(outputs) == 1:
        name, a = next(iter(outputs.items()))
        if scores_like(np.asarray(a)):
            return name, np.asarray(a)
    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in outputs.items())
    raise SlimlineError(
        f"the model's outputs ({shapes}) are not one [batch, classes] score array, so labels "
        "cannot score it; without a reference only fidelity can be measured: give --reference REF"
    )


def signature_scores(signature: Any) -> bool:
    """Whether a :class:`slimline.signature.Signature` has one output of rank 2 (or of unknown rank): [batch,
    classes] scores that labels can score."""
    outs = signature.outputs
    return len(outs) <= 1 and (not outs or not outs[0].shape or len(outs[0].shape) == 2)


class ClassificationTask:
    name = "classification"

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return samples.batches(batch_size)

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        from slimline.evaluate import accuracy_metrics

        _, scores = scores_output(outputs)
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        if len(labels) != len(scores):
            raise SlimlineError(f"{len(labels)} labels for {len(scores)} samples; give one label per sample")
        return accuracy_metrics(scores, labels)

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        from slimline.evaluate import fidelity

        out = output_fidelity(outputs, reference)
        (_, got), (_, ref) = scores_output(outputs), scores_output(reference)
        return fidelity(got, ref) | out


TASKS["classification"] = ClassificationTask()
