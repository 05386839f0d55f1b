"""Export PyTorch models to ONNX with dynamic axes and a parity check against PyTorch.

Image classifiers (one float input, ``meta["input_shape"]``) export as ``input`` -> ``output`` with a dynamic
batch. Any other model exports over its :class:`~slimline.signature.Signature` (``meta["signature"]``, or one
given): its input names, dtypes (int64 token ids, bool masks, float state) and named dynamic axes; outputs are
named by the signature or ``output``, ``output_1``... The written file's signature is recorded in the
artifact's ``meta["signature"]``.

* opset: the highest of ``DEFAULT_OPSET`` (17, supported by every recent runtime) that the
  installed onnx, the TorchScript exporter and the installed onnxruntime all handle;
* models whose weights exceed ``EXTERNAL_DATA_THRESHOLD`` (protobuf's 2 GB limit) are written with
  their tensors in one external-data file beside the graph (``model.onnx.data``);
* the ONNX checker runs on the file written;
* :func:`export_onnx_artifact` also runs one seeded random batch through PyTorch and ONNX Runtime
  and records max absolute/relative differences, failing beyond ``rtol``;
* an operator the exporter cannot convert gives an error naming the operator and the module
  (path and class) it came from.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter
from slimline.errors import ExportError, disk_full_check
from slimline.signature import Signature

DEFAULT_OPSET = 17
EXTERNAL_DATA_THRESHOLD = 2_000_000_000  # bytes of weights; protobuf cannot hold 2 GiB
DATA_SUFFIX = ".data"

# Highest ONNX opset each onnxruntime release implements (onnxruntime.ai/docs/reference/compatibility).
_ORT_MAX_OPSET = {
    (1, 8): 14,
    (1, 9): 15,
    (1, 10): 15,
    (1, 11): 16,
    (1, 12): 17,
    (1, 13): 17,
    (1, 14): 18,
    (1, 15): 19,
    (1, 16): 19,
    (1, 17): 20,
    (1, 18): 21,
    (1, 19): 21,
    (1, 20): 21,
    (1, 21): 22,
}


def ort_max_opset() -> int | None:
    """The highest opset the installed onnxruntime runs (None when it is not installed)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    m = re.match(r"(\d+)\.(\d+)", ort.__version__)
    if not m:
        return None
    ver = (int(m.group(1)), int(m.group(2)))
    known = [v for v in _ORT_MAX_OPSET if v <= ver]
    return _ORT_MAX_OPSET[max(known)] if known else 13


def choose_opset() -> int:
    """``DEFAULT_OPSET``, lowered to what onnx, the exporter and the installed onnxruntime support."""
    limits = [DEFAULT_OPSET]
    try:
        import onnx

        limits.append(onnx.defs.onnx_opset_version())
    except ImportError:  # pragma: no cover
        pass
    try:
        from torch.onnx import _constants

        limits.append(int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET)))
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    ort_limit = ort_max_opset()
    if ort_limit is not None:
        limits.append(ort_limit)
    return min(limits)


def weight_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """The TorchScript exporter prints whole graphs to fd 1 on failure; keep the terminal clean."""
    try:
        fd = os.dup(1)
    except OSError:  # pragma: no cover - no stdout
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(fd, 1)
    finally:
        os.close(fd)


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """``nn.MultiheadAttention`` / ``nn.TransformerEncoder``'s fused fast path cannot be exported: switch it off."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):  # pragma: no cover - older torch
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)


@dataclass(frozen=True)
class ExportPlan:
    """What the exporter gets: example inputs in ``forward`` order, input/output names, dynamic axes."""

    input_names: list[str]
    args: tuple[torch.Tensor, ...]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


ExportInputs = tuple[int, ...] | Sequence[int] | Signature | Mapping[str, torch.Tensor] | ExportPlan


def classifier_plan(input_shape: Sequence[int]) -> ExportPlan:
    """One float ``input`` [batch, *input_shape] -> ``output``, both with a dynamic batch."""
    return ExportPlan(
        ["input"], (torch.zeros(1, *input_shape),), ["output"], {"input": {0: "batch"}, "output": {0: "batch"}}
    )


def int_high(model: nn.Module, default: int = 100) -> int:
    """The bound below which example integer inputs stay: the smallest ``nn.Embedding`` table, else ``default``."""
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    return min(sizes) if sizes else default


def default_output_names(n: int) -> list[str]:
    return ["output", *(f"output_{i}" for i in range(1, n))]


def _flat_outputs(out: Any) -> tuple[list[str] | None, list[torch.Tensor]]:
    """(names when the module returns a dict, the output tensors in order)."""
    if isinstance(out, dict):
        return [str(k) for k in out], list(out.values())
    return None, list(out) if isinstance(out, tuple | list) else [out]


def _run_module(model: nn.Module, args: Sequence[torch.Tensor]) -> Any:
    with torch.inference_mode(), no_mha_fastpath():
        return model.eval()(*args)


def signature_plan(
    model: nn.Module | None,
    sig: Signature,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    feeds: Mapping[str, Any] | None = None,
) -> ExportPlan:
    """The plan for ``sig``: example inputs of ``shapes`` (default: the signature's dims, batch 2) or ``feeds``;
    outputs named by the signature (or ``output``, ``output_1``...) with dynamic axes from the signature, else
    found by running the model again with every named dim one larger. Without a model (an ONNX source) the
    signature alone says."""
    shapes = dict(shapes) if shapes else sig.resolve(batch=2)
    if feeds is None:
        feeds = sig.example_feeds(shapes, seed, int_high=int_high(model) if model is not None else 100)
    args = tuple(torch.as_tensor(np.asarray(feeds[n])) for n in sig.input_names)
    if model is None:
        return ExportPlan(sig.input_names, args, sig.output_names, sig.dynamic_axes())
    keys, outs = _flat_outputs(_run_module(model, args))
    names = keys or (sig.output_names if len(sig.outputs) == len(outs) else default_output_names(len(outs)))
    axes = {t.name: t.dynamic for t in sig.inputs if t.dynamic}
    if len(sig.outputs) == len(outs) and any(t.dynamic for t in sig.outputs):
        axes |= {n: t.dynamic for n, t in zip(names, sig.outputs, strict=True) if t.dynamic}
    else:
        axes |= _probe_output_axes(model, sig, shapes, names, outs)
    return ExportPlan(sig.input_names, args, names, axes)


def _probe_output_axes(
    model: nn.Module, sig: Signature, shapes: Mapping[str, Sequence[int]], names: list[str], outs: list[torch.Tensor]
) -> dict[str, dict[int, str]]:
    """Output axes that grow when every named input dim grows by one, named after the dim of that size."""
    base = sig.named_dims(shapes)
    if not base:
        return {}
    bigger = {k: v + 1 for k, v in base.items()}
    feeds = sig.example_feeds(sig.resolve(batch=bigger.get("batch", 1), dims=bigger), int_high=int_high(model))
    _, outs2 = _flat_outputs(_run_module(model, [torch.as_tensor(feeds[n]) for n in sig.input_names]))
    axes: dict[str, dict[int, str]] = {}
    for name, a, b in zip(names, outs, outs2, strict=False):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.dim() != b.dim():
            continue
        for i, (sa, sb) in enumerate(zip(a.shape, b.shape, strict=True)):
            if sa != sb:
                match = [k for k, v in base.items() if v == sa and bigger[k] == sb]
                axes.setdefault(name, {})[i] = match[0] if len(match) == 1 else f"{name}_dim{i}"
    return axes


def make_plan(model: nn.Module, inputs: ExportInputs, seed: int = 0) -> ExportPlan:
    """An :class:`ExportPlan` from a sample shape (classifier), a :class:`Signature`, or example feeds
    (``{name: tensor}`` in ``forward`` order; axis 0 dynamic)."""
    if isinstance(inputs, ExportPlan):
        return inputs
    if isinstance(inputs, Signature):
        return signature_plan(model, inputs, seed=seed)
    if isinstance(inputs, Mapping):
        sig = Signature.from_feeds(inputs)
        return signature_plan(model, sig, {k: tuple(v.shape) for k, v in inputs.items()}, feeds=inputs)
    return classifier_plan(tuple(int(s) for s in inputs))


def _needs_dynamo(plan: ExportPlan) -> bool:
    """A dynamic input axis besides the batch: the TorchScript tracer bakes such sizes into reshapes (attention's
    sequence length, for one), so the ``torch.export``-based exporter goes first."""
    return any(axis != 0 for n in plan.input_names for axis in plan.dynamic_axes.get(n, {}))


def _export_dynamo(model: nn.Module, plan: ExportPlan, path: Path, opset: int) -> bool:
    """Export with ``torch.export`` (every named dim one ``Dim``); False when it cannot, for the tracer to try."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    shapes = tuple(
        {
            axis: dims.setdefault(name, Dim(re.sub(r"\W", "_", name)))
            for axis, name in plan.dynamic_axes.get(n, {}).items()
        }
        or None
        for n in plan.input_names
    )
    try:
        with _quiet_stdout(), torch.no_grad(), warnings.catch_warnings(), no_mha_fastpath():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                plan.args,
                str(path),
                input_names=plan.input_names,
                output_names=plan.output_names,
                dynamic_shapes=shapes,
                opset_version=max(opset, 18),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception:  # noqa: BLE001 - torch.export refuses many models; the tracer may still take them
        path.unlink(missing_ok=True)
        return False
    return True


def export_onnx(
    model: nn.Module,
    input_shape: ExportInputs,
    path: str | Path,
    opset: int | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> Path:
    """Write ``model`` to ``path`` (TorchScript exporter: fast, stable for CNNs) and check it.

    ``input_shape``: one sample's shape (input ``input`` and output ``output``, dynamic batch), a
    :class:`Signature`, example feeds ``{name: tensor}``, or an :class:`ExportPlan`. When the weights exceed
    ``external_data_threshold`` bytes they go to ``<path>.data`` (see :func:`onnx_files`).
    """
    import onnx

    path = Path(path)
    model = model.eval()
    plan = make_plan(model, input_shape)
    opset = opset or choose_opset()
    staging = Path(tempfile.mkdtemp(prefix=".onnx-export.", dir=path.parent))
    try:
        staged = staging / path.name
        try:
            done = _export_dynamo(model, plan, staged, opset) if _needs_dynamo(plan) else False
            if not done:
                with _quiet_stdout(), torch.no_grad(), warnings.catch_warnings(), no_mha_fastpath():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        model,
                        plan.args,
                        str(staged),
                        input_names=plan.input_names,
                        output_names=plan.output_names,
                        dynamic_axes=plan.dynamic_axes,
                        opset_version=opset,
                        dynamo=False,
                    )
        except Exception as e:  # noqa: BLE001 - exporter raises many kinds
            disk_full_check(staged, e)
            raise ExportError(_explain_export_failure(e, model, plan.args, opset)) from e
        extra = [p for p in staging.iterdir() if p.name != path.name]
        if weight_bytes(model) > external_data_threshold or extra:
            proto = onnx.load(str(staged), load_external_data=True)
            data_name = path.name + DATA_SUFFIX
            onnx.save_model(
                proto,
                str(path),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            (path.parent / (path.name + DATA_SUFFIX)).unlink(missing_ok=True)
            os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"the exported ONNX model fails the ONNX checker: {e}") from e
    return path


def onnx_files(path: str | Path) -> dict[str, str]:
    """Artifact roles of an exported file: ``model`` and, with external data, ``weights``."""
    p = Path(path)
    files = {"model": p.name}
    if (p.parent / (p.name + DATA_SUFFIX)).exists():
        files["weights"] = p.name + DATA_SUFFIX
    return files


Example = torch.Tensor | tuple[torch.Tensor, ...]


def _explain_export_failure(e: Exception, model: nn.Module, dummy: Example, opset: int) -> str:
    text = str(e)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    op = re.search(r"operator '([\w:.]+)'", text) or re.search(r"\b(aten::\w+|prim::\w+|[\w]+::[\w.]+)", text)
    msg = f"ONNX export (opset {opset}) failed: {first}"
    if op:
        name = op.group(1)
        where = find_op_module(model, dummy, name)
        msg += f". Operator {name}"
        msg += f" is used in module {where[0]!r} ({where[1]})" if where else " (module not found)"
        return msg + ": replace it with supported operations, remove that module, or try another opset."
    return msg + ". Run with --debug for the exporter's traceback."


def find_op_module(model: nn.Module, dummy: Example, op: str) -> tuple[str, str] | None:
    """(module path, class name) of the first module whose traced graph calls ``op`` (e.g. ``aten::svd``)."""
    try:
        with _quiet_stdout(), torch.no_grad(), warnings.catch_warnings(), no_mha_fastpath():
            warnings.simplefilter("ignore")
            args = dummy if isinstance(dummy, tuple) else (dummy,)
            traced = torch.jit.trace(model, args, check_trace=False, strict=False)
        graph = traced.inlined_graph
    except Exception:  # noqa: BLE001 - tracing can fail for the same reason as the export
        return None
    for node in graph.nodes():
        if node.kind() == op:
            scope = node.scopeName()
            path = scope.split("/")[-1].removeprefix("__module.").removeprefix("__module") if scope else ""
            path = path.lstrip(".")
            try:
                cls = type(model.get_submodule(path)).__name__ if path else type(model).__name__
            except AttributeError:
                cls = "?"
            return (path or "<top level>", cls)
    return None


def parity(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Max absolute and max relative (to the reference's largest magnitude) difference."""
    if reference.shape != other.shape:
        raise ExportError(f"the export's output shape {other.shape} differs from PyTorch's {reference.shape}")
    diff = np.abs(reference.astype(np.float64) - other.astype(np.float64))
    scale = max(float(np.abs(reference).max()), 1e-12)
    return {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / scale)}


def check_parity(
    reference: np.ndarray, other: np.ndarray, rtol: float, what: str, against: str = "PyTorch"
) -> dict[str, Any]:
    """Compare outputs; raise ExportError naming both sides when they differ beyond ``rtol``."""
    p = parity(reference, other)
    if not np.isfinite(p["max_rel_diff"]) or p["max_rel_diff"] > rtol:
        raise ExportError(
            f"{what} disagrees with {against}: max relative difference {p['max_rel_diff']:.3g} > tolerance {rtol:g} "
            f"(max abs {p['max_abs_diff']:.3g}); the export is wrong or the tolerance too tight"
        )
    return p | {"tolerance": rtol, "passed": True, "against": against}


def check_outputs(
    reference: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    names: Sequence[str],
    rtol: float,
    what: str,
    against: str = "PyTorch",
) -> dict[str, Any]:
    """:func:`check_parity` on every output (in order); the record of the worst, plus each output's with several."""
    if len(reference) != len(other):
        raise ExportError(f"{what} gives {len(other)} output(s) but {against} {len(reference)}; the export is wrong")
    several = len(reference) > 1
    per = {
        n: check_parity(r, o, rtol, f"{what}, output {n!r}," if several else what, against)
        for n, r, o in zip(names, reference, other, strict=True)
    }
    worst = max(per.values(), key=lambda p: p["max_rel_diff"])
    if not several:
        return worst
    return worst | {"outputs": {n: {k: p[k] for k in ("max_abs_diff", "max_rel_diff")} for n, p in per.items()}}


def random_batch(input_shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *input_shape)).astype(np.float32)


def torch_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).float().numpy()


def torch_run(model: nn.Module, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every output of ``model(*feeds.values())`` (a tensor, tuple or dict) as numpy, in order."""
    from slimline.runtimes.torch_eager import name_outputs

    out = _run_module(model, [torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
    return list(name_outputs(out, []).values())


def by_input(names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` keyed by the model's input ``names``: by name when they match, else in order."""
    if set(feeds) == set(names):
        return {n: feeds[n] for n in names}
    if len(feeds) != len(names):
        raise ExportError(f"the model takes inputs {', '.join(names)}, not {', '.join(feeds)}")
    return dict(zip(names, feeds.values(), strict=True))


def ort_run(path: str | Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every output of the ONNX file on ``feeds`` (ONNX Runtime, CPU), in order."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return list(sess.run(None, by_input([i.name for i in sess.get_inputs()], feeds)))


def ort_outputs(path: str | Path, x: np.ndarray) -> np.ndarray:
    return ort_run(path, {"": x})[0]


def export_signature(meta: Mapping[str, Any], signature: Signature | None = None) -> Signature | None:
    """The signature to export over, or None for the image-classifier path (``meta["input_shape"]``, one float
    input); ExportError when neither is known."""
    if signature is not None:
        return signature
    d = meta.get("signature")
    sig = Signature.from_dict(d) if isinstance(d, dict) and d.get("inputs") else None
    shape = meta.get("input_shape")
    if shape and (sig is None or sig.inputs == Signature.classifier(shape).inputs):
        return None
    if sig is None:
        raise ExportError(
            "the model's inputs are unknown: give them (e.g. --input-shape 3,224,224, or --input-shape ids=1x128 "
            "--input-dtype ids=int64 for token ids)"
        )
    return sig


def parity_plan(
    model: nn.Module | None,
    meta: Mapping[str, Any],
    signature: Signature | None,
    shapes: Mapping[str, Sequence[int]] | None,
    parity_batch: int,
    seed: int,
) -> tuple[ExportPlan, dict[str, np.ndarray]]:
    """The export plan and the seeded parity feeds (``parity_batch`` samples) for ``meta`` / ``signature``."""
    sig = export_signature(meta, signature)
    if sig is None:
        shape = tuple(int(s) for s in meta["input_shape"])
        return classifier_plan(shape), {"input": random_batch(shape, parity_batch, seed)}
    plan = signature_plan(model, sig, shapes, seed)
    dims = {k: v for k, v in sig.named_dims(shapes or {}).items() if k != "batch"}
    high = int_high(model) if model is not None else 100
    return plan, sig.example_feeds(sig.resolve(batch=parity_batch, dims=dims), seed, int_high=high)


def export_onnx_artifact(
    model: nn.Module,
    dest: str | Path,
    meta: dict[str, Any],
    lineage: list[dict[str, Any]],
    opset: int | None = None,
    rtol: float = 1e-4,
    parity_batch: int = 4,
    seed: int = 0,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
    signature: Signature | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Artifact, dict[str, Any]]:
    """Export to an ONNX artifact folder ``dest``; returns it and the record (opset, parity, sizes).

    The inputs come from ``signature``, else ``meta["signature"]``, else ``meta["input_shape"]`` (the [C, H, W]
    of one sample of an image classifier); ``shapes`` (per input, batch included) fix the example's named dims.
    Raises ExportError when ONNX Runtime disagrees with PyTorch beyond ``rtol`` (relative to the largest output
    magnitude) on any output. The written file's signature goes to the artifact's ``meta["signature"]``.
    """
    import onnx

    opset = opset or choose_opset()
    plan, feeds = parity_plan(model, meta, signature, shapes, parity_batch, seed)
    ref = torch_run(model, feeds)
    with ArtifactWriter(dest, "onnx", dict(meta), list(lineage)) as w:
        path = export_onnx(model, plan, w.add("model", "model.onnx"), opset, external_data_threshold)
        w.files.update(onnx_files(path))
        proto = onnx.load(str(path), load_external_data=False)
        opset = next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
        w.meta["signature"] = Signature.from_onnx(proto).to_dict()
        try:
            got = ort_run(path, feeds)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(
                f"ONNX Runtime cannot run the export (opset {opset}): {str(e).splitlines()[0]}; try a lower opset"
            ) from e
        par = check_outputs(ref, got, plan.output_names, rtol, "the ONNX export (run in ONNX Runtime)")
    art = w.artifact
    assert art is not None
    record = {
        "format": "onnx",
        "opset": opset,
        "parity": par | {"batch": parity_batch, "runtime": "onnxruntime"},
        "external_data": "weights" in art.files,
        "file_bytes": art.size_bytes(),
    }
    return art, record
