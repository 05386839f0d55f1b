"""Tasks: how samples become a model's named inputs, how its outputs are scored, how two models' outputs compare.

``TASKS`` maps a name to a task: ``classification`` (top-1/top-5 from [batch, classes] scores and labels) and
``generic`` (fidelity only), ``detection`` (decoding, NMS, mAP, detection fidelity), ``keyword_spotting``
(accuracy; streaming models run chunk by chunk with their state carried: :func:`run_stream`),
``text_embedding`` (a text artifact's embeddings: cosine and top-10 retrieval agreement to a reference).
A user metric (``pkg.mod:fn``, see :mod:`slimline.tasks.metric`) registers here
when :func:`get_task` is first asked for it.
"""

from __future__ import annotations

from slimline.tasks.base import TASKS, Task, get_task
from slimline.tasks.classification import ClassificationTask
from slimline.tasks.detection import DetectionTask
from slimline.tasks.generic import GenericTask, output_fidelity, scores_like
from slimline.tasks.metric import MetricTask
from slimline.tasks.speech import KeywordSpottingTask, run_stream
from slimline.tasks.text import TextEmbeddingTask

__all__ = [
    "TASKS",
    "ClassificationTask",
    "DetectionTask",
    "GenericTask",
    "KeywordSpottingTask",
    "MetricTask",
    "Task",
    "TextEmbeddingTask",
    "get_task",
    "output_fidelity",
    "run_stream",
    "scores_like",
]
