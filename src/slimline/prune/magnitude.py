"""Unstructured L1-magnitude pruning of Conv/Linear weights (``torch.nn.utils.prune``), made permanent.

Zeroed weights keep their place in dense tensors: the file only shrinks when it is stored sparse or
compressed, and dense runtimes (PyTorch, ONNX Runtime, OpenVINO on CPU) do the same work as before,
so latency does not improve. :data:`DENSE_RUNTIME_NOTE` says so in every record.
"""

from __future__ import annotations

import io
import zlib
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from slimline.errors import ModelError
from slimline.prune.common import match_names, prunable_layers

DENSE_RUNTIME_NOTE = (
    "Unstructured sparsity does not make dense runtimes faster: PyTorch, ONNX Runtime and OpenVINO on CPU "
    "multiply the zeros like any other weight, so latency stays the same (see the measured latency). "
    "The gain is storage: the compressed or sparse-stored weights are smaller. For speed, use method: channel or block."
)


def magnitude_prune(
    model: nn.Module,
    ratio: float,
    scope: Literal["global", "local"] = "global",
    layers: list[str] | None = None,
    exclude: list[str] | None = None,
    permanent: bool = True,
) -> list[str]:
    """Zero the ``ratio`` smallest-magnitude weights of the Conv/Linear layers, in place, permanently.

    ``global`` ranks all chosen weights together (layers end up with different sparsities);
    ``local`` removes ``ratio`` of each layer. ``layers``/``exclude`` are names or globs.
    Returns the names of the pruned layers. Biases are not pruned. With ``permanent=False`` the
    ``torch.nn.utils.prune`` masks stay attached (for fine-tuning that keeps the zeros); call
    ``torch.nn.utils.prune.remove`` afterwards.
    """
    if not 0.0 <= ratio < 1.0:
        raise ModelError(f"the sparsity ratio must lie in [0, 1), got {ratio}")
    names = prunable_layers(model)
    chosen = match_names(names, layers) if layers else names
    skip = set(match_names(names, exclude)) if exclude else set()
    chosen = [n for n in chosen if n not in skip]
    if not chosen:
        raise ModelError("no Conv2d/Linear layer left to prune (check 'layers' and 'exclude')")
    params = [(model.get_submodule(n), "weight") for n in chosen]
    if scope == "global":
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=ratio)
    elif scope == "local":
        for m, p in params:
            tprune.l1_unstructured(m, p, amount=ratio)
    else:
        raise ModelError(f"scope must be 'global' or 'local', not {scope!r}")
    if permanent:
        for m, p in params:
            tprune.remove(m, p)  # weight = weight_orig * mask, as a plain parameter again
    return chosen


def sparsity_report(model: nn.Module, layers: list[str] | None = None) -> dict[str, Any]:
    """Zeros per layer and in total over the Conv/Linear weights."""
    per_layer: dict[str, dict[str, float]] = {}
    zeros = total = 0
    for n in layers or prunable_layers(model):
        w = model.get_submodule(n).weight
        z, t = int((w == 0).sum()), w.numel()
        per_layer[n] = {"zeros": z, "weights": t, "sparsity": z / t}
        zeros += z
        total += t
    return {"layers": per_layer, "zeros": zeros, "weights": total, "sparsity": zeros / total if total else 0.0}


def _dense_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def storage_report(model: nn.Module) -> dict[str, Any]:
    """Sizes of the weights stored three ways.

    - ``dense_bytes``: the ``state_dict`` file as slimline saves it (what a dense runtime loads);
    - ``zlib_bytes``: that file compressed with zlib level 9 (zero runs compress well);
    - ``sparse_bytes``: every float tensor as a bitmask (1 bit per element) plus its non-zero
      values, others as they are: a simple sparse storage format a loader could expand.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dense = _dense_bytes(state)
    sparse = 0
    for v in state.values():
        if v.is_floating_point():
            nnz = int((v != 0).sum())
            sparse += (v.numel() + 7) // 8 + nnz * v.element_size()
        else:
            sparse += v.numel() * v.element_size()
    return {
        "dense_bytes": len(dense),
        "zlib_bytes": len(zlib.compress(dense, 9)),
        "sparse_bytes": int(sparse),
        "format": "sparse = 1-bit mask + non-zero values per float tensor; zlib = level-9 deflate of the dense file",
    }


def measure_torch_latency(
    models: dict[str, nn.Module], input_shape: tuple[int, ...], batch: int = 16, reps: int = 10, warmup: int = 2
) -> dict[str, float]:
    """Median latency (ms) of each model on one batch, measured alternately in the same loop."""
    import time

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32))
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for i in range(warmup + reps):
            for k, m in models.items():
                m.eval()
                t0 = time.perf_counter()
                m(x)
                if i >= warmup:
                    times[k].append(1e3 * (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in times.items()}
