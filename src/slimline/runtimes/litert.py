"""LiteRT (TensorFlow Lite): ``ai-edge-litert``'s interpreter running ``.tflite`` artifacts on the CPU.

The interpreter applies the XNNPACK delegate by default (``delegate="xnnpack"``; ``"none"`` runs the
reference kernels only); ``threads`` sets its thread count. ``describe()`` says which delegate ran and how
many operators it took. A ``.tflite`` model has fixed shapes: the session runs a larger batch as slices of
the model's batch (the last one padded) and refuses other sizes of the non-batch axes in one line.
Inputs are cast to the model's dtypes (LiteRT runs int64 token ids as int32); an int8 model with int8
inputs/outputs gets them quantized and dequantized with the scales it records, so callers always feed and
get the dtypes of the artifact's signature.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from slimline.artifact import Artifact
from slimline.errors import RuntimeUnavailable, SlimlineError
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session, artifact_precision, check_feeds
from slimline.signature import Signature, artifact_signature

DELEGATES = ("xnnpack", "none")


def quiet_litert() -> None:
    """Keep TensorFlow-style C++ logging to errors (set before the libraries load; a value already set is kept)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")


def import_interpreter() -> Any:
    """``ai_edge_litert.interpreter`` (RuntimeUnavailable naming the extra when it is missing)."""
    quiet_litert()
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:
        raise RuntimeUnavailable(f"ai-edge-litert is not installed ({e}); pip install 'slimline[edge]'") from e
    return interpreter


class LiteRTSession(Session):
    """One interpreter over a ``.tflite`` file; named inputs map to its ``args_<i>`` by position."""

    def __init__(self, artifact: Artifact, threads: int | None, delegate: str) -> None:
        if delegate not in DELEGATES:
            raise RuntimeUnavailable(f"litert delegate must be one of {', '.join(DELEGATES)}, not {delegate!r}")
        lite = import_interpreter()
        resolver = (
            lite.OpResolverType.AUTO if delegate == "xnnpack" else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.interpreter = lite.Interpreter(
            model_path=str(artifact.model_file), num_threads=threads, experimental_op_resolver_type=resolver
        )
        self.interpreter.allocate_tensors()
        self.signature: Signature = artifact_signature(artifact)
        io = artifact.meta.get("tflite_io") or {}
        self._in_names: dict[str, str] = dict(
            io.get("inputs") or {n: f"args_{i}" for i, n in enumerate(self.signature.input_names)}
        )
        self._out_names: dict[str, str] = dict(
            io.get("outputs") or {n: f"output_{i}" for i, n in enumerate(self.signature.output_names)}
        )
        keys = list(self.interpreter.get_signature_list())
        self._runner = self.interpreter.get_signature_runner(keys[0] if keys else None)
        self._in_details = self._runner.get_input_details()
        self._out_details = self._runner.get_output_details()
        self.model_batch = int(next(iter(self._in_details.values()))["shape"][0]) if self._in_details else 1
        ops = [d["op_name"] for d in self.interpreter._get_ops_details()]  # noqa: SLF001 - the only op listing
        self.delegated = ops.count("DELEGATE")
        self.options = {"threads": threads, "delegate": delegate}
        self.precision = artifact_precision(artifact)
        self.delegate = delegate if self.delegated else "none"
        self._version = _version()

    def run(self, batch: np.ndarray) -> np.ndarray:
        first = self.signature.input_names[0]
        return next(iter(self.run_named({first: batch}).values()))

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_feeds(self.signature, feeds)
        n = int(np.shape(next(iter(feeds.values())))[0]) if feeds else 1
        b = self.model_batch
        pieces: list[dict[str, np.ndarray]] = []
        for start in range(0, n, b):
            part = {k: np.asarray(v)[start : start + b] for k, v in feeds.items()}
            got = part[next(iter(part))].shape[0]
            if got < b:  # pad the last slice to the model's batch with copies of its last sample
                part = {k: np.concatenate([v, np.repeat(v[-1:], b - got, axis=0)]) for k, v in part.items()}
            out = self._run_once(part)
            pieces.append({k: v[:got] for k, v in out.items()})
        if len(pieces) == 1:
            return pieces[0]
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    def _run_once(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args: dict[str, np.ndarray] = {}
        for name, value in feeds.items():
            key = self._in_names[name]
            d = self._in_details[key]
            if tuple(value.shape) != tuple(int(s) for s in d["shape"]):
                raise SlimlineError(
                    f"input {name!r} has shape {'x'.join(map(str, value.shape))} but this .tflite model was "
                    f"exported for {'x'.join(str(int(s)) for s in d['shape'])} (TFLite shapes are fixed); "
                    f"re-export it with --input-shape {name}={'x'.join(map(str, value.shape))}"
                )
            args[key] = _to_model(value, d)
        raw = self._runner(**args)
        return {name: _from_model(raw[key], self._out_details[key]) for name, key in self._out_names.items()}

    def describe(self) -> dict[str, Any]:
        return {
            "name": "litert",
            "version": self._version,
            "device": "cpu",
            "precision": self.precision,
            "delegate_ran": self.delegate,
            "delegated_partitions": self.delegated,
            "model_batch": self.model_batch,
            **self.options,
        }


def _to_model(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and np.asarray(value).dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(value, np.float32) / scale + zero)
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(dtype))
    return np.ascontiguousarray(value, dtype=dtype)


def _from_model(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    scale, zero = detail.get("quantization", (0.0, 0))
    if np.asarray(value).dtype.kind in "iu" and scale:
        return ((value.astype(np.float32) - zero) * scale).astype(np.float32)
    return np.asarray(value)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


@RUNTIMES.register("litert")
class LiteRTRuntime(Runtime):
    name = "litert"
    kinds = ("tflite",)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        import importlib.util

        if importlib.util.find_spec("ai_edge_litert") is None:
            return False, "ai-edge-litert is not installed; pip install 'slimline[edge]'"
        return True, ""

    def load(self, artifact: Artifact, threads: int | None = None, delegate: str = "xnnpack", **_: Any) -> Session:
        return LiteRTSession(artifact, threads, delegate)
