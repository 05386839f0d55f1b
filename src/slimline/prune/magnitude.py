"""Unstructured L1-magnitude pruning (``torch.nn.utils.prune``), made permanent, of Conv/Linear weights,
LSTM/GRU/RNN matrices and attention input projections.

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
from slimline.prune.common import match_names

DENSE_RUNTIME_NOTE = (
    "Unstructured sparsity does not make dense runtimes faster: PyTorch, ONNX Runtime and OpenVINO on CPU "
    "multiply the zeros like any other weight, so latency stays the same (see the measured latency). "
    "The gain is storage: the compressed or sparse-stored weights are smaller. For speed, use method: channel or block."
)


_WEIGHT_MODULES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear)
_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def prune_targets(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every weight magnitude pruning covers, by target name: ``{name: (module, parameter)}``.

    Conv and Linear layers are named by their module (their ``weight``); the matrices of LSTM/GRU/RNN layers
    (``lstm.weight_ih_l0``, ``lstm.weight_hh_l0_reverse``...) and ``nn.MultiheadAttention``'s input projection
    (``attn.in_proj_weight``; its ``out_proj`` is a Linear) by module and parameter.
    """
    out: dict[str, tuple[nn.Module, str]] = {}
    for name, m in model.named_modules():
        if not name:
            continue
        if isinstance(m, _WEIGHT_MODULES):
            out[name] = (m, "weight")
        elif isinstance(m, nn.RNNBase):
            for p in m._flat_weights_names:
                if p.startswith("weight_"):
                    out[f"{name}.{p}"] = (m, p)
        elif isinstance(m, nn.MultiheadAttention):
            for p in _ATTENTION_WEIGHTS:
                if getattr(m, p, None) is not None:
                    out[f"{name}.{p}"] = (m, p)
    return out


def _resolve(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """A target name (see :func:`prune_targets`) as (module, parameter)."""
    parent, _, last = name.rpartition(".")
    if last.startswith("weight_") or last in _ATTENTION_WEIGHTS:
        return model.get_submodule(parent), last
    return model.get_submodule(name), "weight"


def coverage(model: nn.Module, targets: list[str] | None = None) -> dict[str, Any]:
    """Which matrices (parameters of 2 or more dims) ``targets`` leave out, and the share of their elements covered.

    ``skipped``: [{"module", "param", "numel"}] (embeddings, custom parameters...); biases and norms
    (1-D) are not weights here.
    """
    resolved = (_resolve(model, n) for n in targets or prune_targets(model))
    chosen = {(id(m), p.removesuffix("_orig")) for m, p in resolved}
    covered = 0
    skipped: list[dict[str, Any]] = []
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            if p.dim() < 2:
                continue
            if (id(m), pname.removesuffix("_orig")) in chosen:
                covered += p.numel()
            else:
                skipped.append({"module": mname, "param": pname, "numel": p.numel()})
    total = covered + sum(s["numel"] for s in skipped)
    return {"covered_share": covered / total if total else 1.0, "skipped": skipped}


def remove_masks(model: nn.Module, targets: list[str]) -> None:
    """Make the pruning of ``targets`` permanent: weight = weight_orig * mask, as a plain parameter again."""
    for n in targets:
        tprune.remove(*_resolve(model, n))


def magnitude_prune(
    model: nn.Module,
    ratio: float,
    scope: Literal["global", "local"] = "global",
    layers: list[str] | None = None,
    exclude: list[str] | None = None,
    permanent: bool = True,
) -> list[str]:
    """Zero the ``ratio`` smallest-magnitude weights of the layers :func:`prune_targets` finds, in place.

    Conv/Linear weights, LSTM/GRU/RNN matrices and attention input projections are all covered.
    ``global`` ranks all chosen weights together (layers end up with different sparsities);
    ``local`` removes ``ratio`` of each weight. ``layers``/``exclude`` are names or globs (a module's
    name covers all its weights). Returns the pruned target names. Biases are not pruned. With
    ``permanent=False`` the ``torch.nn.utils.prune`` masks stay attached (for fine-tuning that keeps the
    zeros); call :func:`remove_masks` afterwards.
    """
    if not 0.0 <= ratio < 1.0:
        raise ModelError(f"the sparsity ratio must lie in [0, 1), got {ratio}")
    targets = prune_targets(model)
    names = list(targets)
    chosen = match_names(names, layers) if layers else names
    skip = set(match_names(names, exclude)) if exclude else set()
    chosen = [n for n in chosen if n not in skip]
    if not chosen:
        raise ModelError("no Conv/Linear/recurrent/attention weight left to prune (check 'layers' and 'exclude')")
    params = [targets[n] for n in chosen]
    if scope == "global":
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=ratio)
    elif scope == "local":
        for m, p in params:
            tprune.l1_unstructured(m, p, amount=ratio)
    else:
        raise ModelError(f"scope must be 'global' or 'local', not {scope!r}")
    if permanent:
        remove_masks(model, chosen)
    return chosen


def sparsity_report(model: nn.Module, layers: list[str] | None = None) -> dict[str, Any]:
    """Zeros per target and in total over the pruned weights, with what they leave out (see :func:`coverage`)."""
    per_layer: dict[str, dict[str, float]] = {}
    zeros = total = 0
    names = layers or list(prune_targets(model))
    for n in names:
        m, p = _resolve(model, n)
        w = getattr(m, p)
        z, t = int((w == 0).sum()), w.numel()
        per_layer[n] = {"zeros": z, "weights": t, "sparsity": z / t}
        zeros += z
        total += t
    return {
        "layers": per_layer,
        "zeros": zeros,
        "weights": total,
        "sparsity": zeros / total if total else 0.0,
        **coverage(model, names),
    }


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
