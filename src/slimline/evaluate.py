"""Accuracy (top-1/top-5 with a confidence interval) and fidelity against a reference model."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.data.base import ArrayDataset

Predictor = Callable[[np.ndarray], np.ndarray]


def torch_predictor(model: nn.Module) -> Predictor:
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return run


def predict_logits(predict: Predictor | nn.Module, ds: ArrayDataset, batch_size: int = 256) -> np.ndarray:
    """Logits for every sample of ``ds`` from a model or any ``batch -> logits`` function."""
    fn = torch_predictor(predict) if isinstance(predict, nn.Module) else predict
    out = [
        fn(np.ascontiguousarray(ds.normalize(ds.x[i : i + batch_size]).numpy())) for i in range(0, len(ds), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, ds.spec.num_classes), np.float32)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean()) if len(labels) else float("nan")


def wilson_interval(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``p`` measured on ``n`` samples."""
    if n == 0:
        return (float("nan"), float("nan"))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """top1/top5 in percent, sample size, and the 95% interval of top-1 in percent."""
    top1 = topk_accuracy(logits, labels, 1)
    lo, hi = wilson_interval(top1, len(labels))
    return {
        "top1": 100 * top1,
        "top5": 100 * topk_accuracy(logits, labels, 5),
        "n": int(len(labels)),
        "top1_ci95": [100 * lo, 100 * hi],
    }


def fidelity(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement (percent) and mean cosine similarity of logits against a reference."""
    agree = float((logits.argmax(1) == reference.argmax(1)).mean()) if len(logits) else float("nan")
    num = (logits * reference).sum(1)
    den = np.linalg.norm(logits, axis=1) * np.linalg.norm(reference, axis=1) + 1e-12
    return {"top1_agreement": 100 * agree, "logit_cosine": float((num / den).mean())}


def evaluate(predict: Predictor | nn.Module, ds: ArrayDataset, reference: np.ndarray | None = None) -> dict[str, Any]:
    logits = predict_logits(predict, ds)
    metrics = accuracy_metrics(logits, ds.y)
    if reference is not None:
        metrics.update(fidelity(logits, reference))
    return metrics


def evaluate_artifact(
    artifact: Any,
    ds: ArrayDataset,
    runtime: str | None = None,
    reference: np.ndarray | None = None,
    return_logits: bool = False,
    **options: Any,
) -> Any:
    """Evaluate a saved artifact through a runtime (its natural one by default)."""
    from slimline.runtimes import default_runtime, open_session

    name = runtime or default_runtime(artifact)
    session = open_session(artifact, name, **options)
    logits = predict_logits(session.run, ds)
    if return_logits:
        return logits
    metrics = accuracy_metrics(logits, ds.y)
    if reference is not None:
        metrics.update(fidelity(logits, reference))
    return metrics | {"runtime": name}
