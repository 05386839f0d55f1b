"""Text tasks: raw text becomes a text artifact's named inputs through the tokenizer it carries.

``text_embedding`` scores a sentence-embedding model by fidelity to a reference: the cosine of each embedding to
the reference's, and top-10 retrieval agreement (for each query, how many of the reference's ten nearest
neighbours in the evaluated texts the model also ranks among its ten). A text classifier's logits are scored by
the ``classification`` task (top-1/top-5 with a 95% interval) like any [batch, classes] output.

    samples = text_samples(artifact, load_text_source("fortunes", "test"))  # NamedSamples: token ids by name
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from slimline.artifact import Artifact
from slimline.data.arrays import NamedSamples
from slimline.data.text import TextSamples
from slimline.errors import SlimlineError
from slimline.tasks.base import TASKS, Outputs
from slimline.tasks.generic import GenericTask, output_fidelity

EMBEDDING_TASK = "sentence-embedding"  # what a text artifact's ``meta["task"]`` says of an embedding model


def is_text_artifact(model: Any) -> bool:
    """Whether ``model`` is an artifact that carries a tokenizer (``meta["text"]``), so it takes raw text."""
    return isinstance(model, Artifact) and "text" in model.meta


def is_embedding_artifact(artifact: Artifact) -> bool:
    """Whether a text artifact is a sentence-embedding model (its outputs have no labels to be scored against)."""
    return artifact.meta.get("task", artifact.meta.get("text", {}).get("task")) == EMBEDDING_TASK


def text_samples(artifact: Artifact, texts: TextSamples) -> NamedSamples:
    """``texts`` as ``artifact``'s named token inputs (padded to its ``max_length``, so batches stack), with the
    labels, unless the artifact is an embedding model (whose outputs labels cannot score)."""
    from slimline.models.hf_text import encode_texts

    if not is_text_artifact(artifact):
        raise SlimlineError(
            f"{texts.source or 'the data'} is raw text but {artifact.path} carries no tokenizer; give a text "
            "artifact (exported with its tokenizer: slimline.api.export_text_onnx) or token ids as named "
            "arrays (-d tokens.npz)"
        )
    feeds = encode_texts(artifact.path, texts.texts, pad_to_max=True)
    embedding = is_embedding_artifact(artifact)
    labels = None if embedding else texts.labels
    return NamedSamples(feeds, labels, texts.source, label_names=() if embedding else texts.label_names)


def _mean_ci(x: np.ndarray) -> list[float]:
    m = float(np.mean(x))
    h = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return [m - h, m + h]


def embedding_fidelity(ref: np.ndarray, emb: np.ndarray, n_queries: int | None = None, k: int = 10) -> dict[str, Any]:
    """Cosine of each embedding to its reference (mean with a 95% interval, min), and top-``k`` retrieval
    agreement of the first ``n_queries`` texts (default: all, at most 1,000) as queries against all the others."""
    ref, emb = np.asarray(ref, dtype=np.float64), np.asarray(emb, dtype=np.float64)
    if ref.ndim != 2 or ref.shape != emb.shape:
        raise SlimlineError(
            f"embeddings of shape {emb.shape} cannot be compared with reference {ref.shape}; give a [texts, dims] "
            "embedding model and a reference of the same size"
        )
    r = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    cos = (r * e).sum(1)
    out: dict[str, Any] = {
        "n": int(len(cos)),
        "mean_cosine": float(cos.mean()),
        "mean_cosine_ci95": _mean_ci(cos),
        "min_cosine": float(cos.min()),
    }
    kk = min(k, len(cos) - 1)
    if kk < 1:
        return out
    nq = min(n_queries or 1000, len(cos))
    sr, se = r[:nq] @ r.T, e[:nq] @ e.T
    idx = np.arange(nq)
    sr[idx, idx] = se[idx, idx] = -np.inf  # a query is not its own neighbour
    top_r = np.argpartition(-sr, kk - 1, axis=1)[:, :kk]
    top_e = np.argpartition(-se, kk - 1, axis=1)[:, :kk]
    agree = np.asarray([len(set(a) & set(b)) / kk for a, b in zip(top_r.tolist(), top_e.tolist(), strict=True)])
    out |= {
        "n_queries": int(nq),
        "k": int(kk),
        "retrieval_agreement": float(agree.mean()),
        "retrieval_agreement_ci95": _mean_ci(agree),
    }
    return out


class TextEmbeddingTask(GenericTask):
    """Sentence embeddings: samples are token ids by name; fidelity = cosine and top-10 retrieval agreement."""

    name = "text_embedding"

    def metric(self, outputs: Outputs, labels: np.ndarray) -> dict[str, Any]:
        raise SlimlineError(
            "sentence embeddings have no labels to score; measure fidelity to the fp32 model: give --reference REF"
        )

    def fidelity(self, outputs: Outputs, reference: Outputs) -> dict[str, Any]:
        out = output_fidelity(outputs, reference)
        first = next(iter(reference))
        return out | embedding_fidelity(np.asarray(reference[first]), np.asarray(outputs[first]))


TASKS["text_embedding"] = TextEmbeddingTask()
