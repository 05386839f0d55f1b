"""The generic task: any model, fidelity only (no labels needed).

Per output: cosine similarity per sample (min and mean), max and mean abs difference, and where the output looks
like scores (2-D [batch, classes] floats) top-1 and top-5 agreement with the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.tasks.base import TASKS, Outputs


class FidelityShapeError(SlimlineError):
    """Two models' outputs that should compare have different shapes or names."""


def scores_like(a: np.ndarray) -> bool:
    """Whether an output (first axis: samples) looks like class scores: 2-D [batch, classes] floats, classes > 1."""
    return a.ndim == 2 and a.shape[1] > 1 and a.dtype.kind == "f"


def topk_agreement(got: np.ndarray, ref: np.ndarray, k: int) -> float:
    """Percent of samples whose reference top-1 class is among ``got``'s top ``k``."""
    k = min(k, got.shape[1])
    top = np.argpartition(-got, k - 1, axis=1)[:, :k]
    return 100 * float((top == ref.argmax(1)[:, None]).any(axis=1).mean()) if len(got) else float("nan")


def tensor_fidelity(got: np.ndarray, ref: np.ndarray, name: str = "output") -> dict[str, float]:
    """One output's fidelity; both arrays have the samples on the first axis."""
    if got.shape != ref.shape:
        raise FidelityShapeError(
            f"output {name!r} has shape {got.shape} but the reference's is {ref.shape}; "
            "compare models with the same outputs"
        )
    n = len(got) if got.ndim else 1
    a = got.astype(np.float64).reshape(n, -1)
    b = ref.astype(np.float64).reshape(n, -1)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na == 0) & (nb == 0), 1.0, (a * b).sum(1) / (na * nb + 1e-30))
    diff = np.abs(a - b)
    out = {
        "min_cosine": float(cos.min(initial=1.0)),
        "mean_cosine": float(cos.mean()) if n else float("nan"),
        "max_abs_diff": float(diff.max(initial=0.0)),
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
    }
    if scores_like(got):
        out["top1_agreement"] = topk_agreement(got, ref, 1)
        if got.shape[1] > 5:
            out["top5_agreement"] = topk_agreement(got, ref, 5)
    return out


def output_fidelity(outputs: Outputs, reference: Outputs) -> dict[str, Any]:
    """Fidelity of every output by name, and over all outputs: ``min_cosine`` (worst output and sample),
    ``mean_cosine`` (mean of the outputs' means) and ``max_abs_diff``; per output under ``outputs``."""
    missing = [k for k in reference if k not in outputs]
    if missing:
        raise FidelityShapeError(
            f"the model has no output(s) {', '.join(missing)} that the reference has; "
            "compare models with the same outputs"
        )
    per = {k: tensor_fidelity(np.asarray(outputs[k]), np.asarray(r), k) for k, r in reference.items()}
    nan = float("nan")
    return {
        "min_cosine": min((o["min_cosine"] for o in per.values()), default=nan),
        "mean_cosine": float(np.mean([o["mean_cosine"] for o in per.values()])) if per else nan,
        "max_abs_diff": max((o["max_abs_diff"] for o in per.values()), default=nan),
        "outputs": per,
    }


class GenericTask:
    """Any model: samples are named arrays; fidelity only."""

    name = "generic"

    def feeds(self, samples: Any, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return samples.batches(batch_size)

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        raise SlimlineError(
            "the generic task has no metric of its own; without a reference only fidelity can "
            "be measured: give --reference REF"
        )

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        return output_fidelity(outputs, reference)


TASKS["generic"] = GenericTask()
