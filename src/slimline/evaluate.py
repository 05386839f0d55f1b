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
    """Top-1 (with its 95% interval) of a classifier on ``ds``; with ``reference`` logits, fidelity to them too."""
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


# --- any model: named inputs and outputs (slimline.tasks) -------------------------------------------------------

DEFAULT_NAMED_BATCH = 64


def named_batch_size(signature: Any, batch_size: int = DEFAULT_NAMED_BATCH) -> int:
    """``batch_size``, or the fixed batch of an export whose first input has one (usually 1)."""
    first = signature.inputs[0].shape[:1] if signature is not None and signature.inputs else ()
    return int(first[0]) if first and isinstance(first[0], int) else batch_size


def predict_named(session: Any, samples: Any, batch_size: int | None = None) -> dict[str, np.ndarray]:
    """Every output by name for every sample of ``samples`` (:class:`slimline.data.arrays.NamedSamples`),
    run through ``session.run_named`` in batches (the export's fixed batch when it has one)."""
    bs = batch_size or named_batch_size(getattr(session, "signature", None))
    parts: dict[str, list[np.ndarray]] = {}
    for feeds in samples.batches(bs):
        for name, out in session.run_named(feeds).items():
            parts.setdefault(name, []).append(np.asarray(out))
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_named(
    session: Any, samples: Any, reference: Any | None = None, metric: str | None = None, fidelity_task: str = "generic"
) -> dict[str, Any]:
    """Any model on named arrays: with ``reference`` (a session), ``fidelity`` per output name (generic task);
    with labels and one [batch, classes] output, top-1/top-5 (classification task); ``fidelity_task`` names the
    task whose fidelity compares the outputs (``text_embedding`` adds retrieval agreement); with ``metric`` (a user's
    ``package.module:function``, see :mod:`slimline.tasks.metric`) and labels, its figures. Without a reference
    and without anything to score, one error saying so."""
    from slimline.errors import SlimlineError
    from slimline.tasks import get_task

    user = get_task(metric) if metric is not None else None
    if user is not None and getattr(user, "name", None) == "detection":
        return _detection_named(session, samples, reference, user)
    if user is not None and samples.labels is None:
        raise SlimlineError(
            f"metric {metric} scores outputs against labels but the data has none; add a 'labels' "
            "array to the data (or leave --metric out)"
        )
    outputs = predict_named(session, samples)
    metrics: dict[str, Any] = {"n": len(samples)}
    if reference is not None:
        fid = get_task(fidelity_task).fidelity(outputs, predict_named(reference, samples))
        metrics["fidelity"] = fid.pop("outputs")
        metrics.update(fid)  # the generic figures; a task's own too (text_embedding: retrieval agreement)
    if samples.labels is not None:
        try:
            metrics.update(get_task("classification").metric(outputs, samples.labels))
        except SlimlineError:
            if reference is None and user is None:
                raise
    elif reference is None:
        raise SlimlineError(
            "the data has no labels, and without a reference only fidelity can be measured: give "
            "--reference REF (or a 'labels' array for a [batch, classes] model)"
        )
    if user is not None:
        metrics.update(user.metric(outputs, samples.labels))
    return metrics


def _detection_named(session: Any, samples: Any, reference: Any | None, task: Any) -> dict[str, Any]:
    """A detector on named arrays (letterboxed images): detection fidelity against ``reference`` (box labels do
    not fit in arrays: give a photo folder with YOLO txt or COCO JSON labels for mAP)."""
    from slimline.errors import SlimlineError

    if reference is None:
        raise SlimlineError(
            "detection on named arrays compares with the fp32 model: give --reference REF (for mAP give a folder "
            "of photos with YOLO txt or COCO JSON labels)"
        )
    outputs = predict_named(session, samples, 1)
    metrics: dict[str, Any] = {"n": len(samples)}
    metrics.update(task.fidelity(outputs, predict_named(reference, samples, 1)))
    metrics["detections"] = sum(len(d) for d in task.detections(outputs))
    return metrics
