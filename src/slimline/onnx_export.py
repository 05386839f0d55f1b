"""Export PyTorch models to ONNX with a dynamic batch axis and a parity check against PyTorch.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter
from slimline.errors import ExportError, disk_full_check

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


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    opset: int | None = None,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> Path:
    """Write ``model`` to ``path`` (TorchScript exporter: fast, stable for CNNs) and check it.

    Input ``input`` and output ``output`` have a dynamic batch axis. When the weights exceed
    ``external_data_threshold`` bytes they go to ``<path>.data`` (see :func:`onnx_files`).
    """
    import onnx

    path = Path(path)
    model = model.eval()
    dummy = torch.zeros(1, *input_shape)
    opset = opset or choose_opset()
    staging = Path(tempfile.mkdtemp(prefix=".onnx-export.", dir=path.parent))
    try:
        staged = staging / path.name
        try:
            with _quiet_stdout(), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(staged),
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    opset_version=opset,
                    dynamo=False,
                )
        except Exception as e:  # noqa: BLE001 - exporter raises many kinds
            disk_full_check(staged, e)
            raise ExportError(_explain_export_failure(e, model, dummy, opset)) from e
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


def _explain_export_failure(e: Exception, model: nn.Module, dummy: torch.Tensor, opset: int) -> str:
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


def find_op_module(model: nn.Module, dummy: torch.Tensor, op: str) -> tuple[str, str] | None:
    """(module path, class name) of the first module whose traced graph calls ``op`` (e.g. ``aten::svd``)."""
    try:
        with _quiet_stdout(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (dummy,), check_trace=False, strict=False)
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


def random_batch(input_shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *input_shape)).astype(np.float32)


def torch_outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).float().numpy()


def ort_outputs(path: str | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


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
) -> tuple[Artifact, dict[str, Any]]:
    """Export to an ONNX artifact folder ``dest``; returns it and the record (opset, parity, sizes).

    ``meta["input_shape"]`` gives the [C, H, W] of one sample. Raises ExportError when ONNX Runtime
    disagrees with PyTorch beyond ``rtol`` (relative to the largest output magnitude).
    """
    if "input_shape" not in meta:
        raise ExportError("the model's input shape is unknown: give it (e.g. --input-shape 3,224,224)")
    shape = tuple(int(s) for s in meta["input_shape"])
    opset = opset or choose_opset()
    x = random_batch(shape, parity_batch, seed)
    ref = torch_outputs(model, x)
    with ArtifactWriter(dest, "onnx", dict(meta), list(lineage)) as w:
        path = export_onnx(model, shape, w.add("model", "model.onnx"), opset, external_data_threshold)
        w.files.update(onnx_files(path))
        try:
            got = ort_outputs(path, x)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(
                f"ONNX Runtime cannot run the export (opset {opset}): {str(e).splitlines()[0]}; try a lower opset"
            ) from e
        par = check_parity(ref, got, rtol, "the ONNX export (run in ONNX Runtime)")
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
