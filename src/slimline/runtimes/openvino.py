"""OpenVINO runtime: IR (``.xml`` + ``.bin``) or ONNX files on the CPU device (GPU when present).

Options: ``device`` (CPU, GPU, AUTO), ``hint`` (latency | throughput), ``streams`` (number of
streams; default chosen by the hint), ``threads`` (inference threads), ``precision`` (``f32`` by
default so that fp32 results are fp32 on CPUs that would otherwise pick bf16; ``bf16``, ``f16``
or ``auto`` for the plugin's choice), ``requests`` (parallel infer requests a batch is split
over with the throughput hint; default: the number of streams) and ``static_shapes`` (compile the
model once per batch size it is given, at that static shape, instead of once with a dynamic batch:
the CPU plugin fuses depthwise+pointwise convolution pairs only at static shapes, so the ``fuse``
step switches this on for models where that fusion happens).

Telemetry: ``openvino_telemetry`` sends usage data unless a consent file says no (with no file it
counts as consent for ``convert_model`` and ``nncf``). :func:`disable_telemetry` turns it off in
this process without writing to the user's home; every slimline path that imports ``openvino``
or ``nncf`` calls it first.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from slimline.artifact import Artifact
from slimline.errors import RuntimeUnavailable
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session, artifact_precision, check_feeds
from slimline.signature import Signature

_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
_telemetry_off = False


def disable_telemetry() -> None:
    """Make sure neither OpenVINO (``convert_model``) nor NNCF sends or stores telemetry.

    * ``NNCF_CI=1``: NNCF replaces its telemetry object with a stub (read when nncf is imported).
    * ``OptInChecker.check`` answers DECLINED: a missing consent file no longer counts as consent,
      so no client-id file is written and nothing is queued.
    * ``TelemetrySender.send`` does nothing, and an instance created earlier loses its consent.
    """
    global _telemetry_off
    os.environ.setdefault("NNCF_CI", "1")
    if _telemetry_off:
        return
    try:
        import openvino_telemetry
        from openvino_telemetry.utils import opt_in_checker, sender
    except ImportError:  # no telemetry package: nothing can be sent
        _telemetry_off = True
        return

    def _declined(self: Any, *args: Any, **kwargs: Any) -> Any:
        return opt_in_checker.ConsentCheckResult.DECLINED

    def _no_send(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    opt_in_checker.OptInChecker.check = _declined  # type: ignore[method-assign]
    sender.TelemetrySender.send = _no_send  # type: ignore[method-assign]
    existing = getattr(openvino_telemetry.Telemetry, "_SingletonMetaClass__single_instance", None)
    if existing is not None:
        existing.consent = False
    _telemetry_off = True


def import_openvino() -> Any:
    """``import openvino`` with telemetry off; a clear error when it is missing."""
    disable_telemetry()
    try:
        import openvino as ov
    except ImportError as e:
        raise RuntimeUnavailable(f"openvino is not installed ({e}); pip install openvino") from e
    return ov


class _Compiled:
    """One compiled model with its infer request and (throughput hint) parallel requests."""

    def __init__(self, ov: Any, compiled: Any, hint: str, requests: int | None) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.streams = _int_property(compiled, "NUM_STREAMS", 1)
        self.n_requests = int(requests) if requests else (self.streams if hint != "latency" else 1)
        # parallel requests, started and waited for one by one: no Python callbacks on OpenVINO's threads
        # (AsyncInferQueue with a callback deadlocked about one process in six here, OpenVINO 2026.4)
        self.parallel = [compiled.create_infer_request() for _ in range(self.n_requests)] if self.n_requests > 1 else []

    def run(self, x: np.ndarray) -> np.ndarray:
        if not self.parallel or len(x) < 2:
            self.request.infer({0: x}, share_inputs=True)
            return self.request.get_output_tensor(0).data.copy()
        chunks = np.array_split(x, min(len(self.parallel), len(x)))
        inputs = [np.ascontiguousarray(c) for c in chunks]
        for req, c in zip(self.parallel, inputs, strict=False):
            req.start_async({0: c}, share_inputs=True)
        out = []
        for req, _ in zip(self.parallel, inputs, strict=False):
            req.wait()
            out.append(req.get_output_tensor(0).data.copy())
        return np.concatenate(out)


class OpenVinoSession(Session):
    def __init__(
        self,
        path: str,
        device: str,
        hint: str,
        streams: int | str | None,
        threads: int | None,
        precision: str,
        requests: int | None,
        static_shapes: bool = False,
    ) -> None:
        ov = import_openvino()
        core = ov.Core()
        device = device.upper()
        if device not in ("AUTO",) and device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices}:
            raise RuntimeUnavailable(
                f"OpenVINO has no {device} device here (available: {', '.join(core.available_devices)}); "
                "use device: CPU"
            )
        if hint not in _HINTS:
            raise RuntimeUnavailable(f"openvino hint must be one of {sorted(_HINTS)}, not {hint!r}")
        config: dict[str, Any] = {"PERFORMANCE_HINT": _HINTS[hint]}
        if streams is not None:
            config["NUM_STREAMS"] = str(streams)
        if threads and device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision != "auto":
            if precision not in _PRECISIONS:
                raise RuntimeUnavailable(f"openvino precision must be auto or one of {sorted(_PRECISIONS)}")
            config["INFERENCE_PRECISION_HINT"] = _PRECISIONS[precision]
        self._ov, self._core, self._device, self._config = ov, core, device, config
        self._hint, self._requests = hint, requests
        self.model = core.read_model(path)
        self.signature = Signature.from_openvino(self.model)
        self.static_shapes = bool(static_shapes)
        # per-batch static compiles need every input dimension but the batch to be known
        self._static_ok = len(self.model.inputs) == 1 and self.model.input(0).get_partial_shape()[1:].is_static
        self._by_batch: dict[tuple[int, int], _Compiled] = {}
        # dynamic-batch compile (also what describe() reads when static_shapes compiles per batch later)
        self._dynamic = _Compiled(ov, core.compile_model(self.model, device, config), hint, requests)
        self.compiled = self._dynamic.compiled
        self.n_requests = self._dynamic.n_requests
        self._desc = {
            "name": "openvino",
            "version": ov.__version__.split("-")[0],
            "device": device,
            "available_devices": list(core.available_devices),
            "precision": _type_name(_property(self.compiled, "INFERENCE_PRECISION_HINT", precision)),
            "threads": _int_property(self.compiled, "INFERENCE_NUM_THREADS", threads or 0) or None,
            "hint": hint,
            "streams": self._dynamic.streams,
            "requests": self.n_requests,
            "static_shapes": self.static_shapes,
        }

    def _static(self, batch: int, requests: int) -> _Compiled:
        """The model compiled at a static batch of ``batch`` (cached per batch size)."""
        c = self._by_batch.get((batch, requests))
        if c is None:
            model = self.model.clone()
            dims = [batch, *[int(d.get_length()) for d in list(model.input(0).get_partial_shape())[1:]]]
            model.reshape({model.input(0): dims})
            compiled = self._core.compile_model(model, self._device, self._config)
            c = self._by_batch[(batch, requests)] = _Compiled(self._ov, compiled, self._hint, requests)
        return c

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.static_shapes and self._static_ok:
            n = self.n_requests
            if n <= 1 or len(x) < 2:
                return self._static(len(x), 1).run(x)
            if len(x) % n == 0:  # equal chunks, one static shape, n parallel requests
                return self._static(len(x) // n, n).run(x)
        return self._dynamic.run(x)

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs of any dtype through the dynamic-shape compile; every output by name."""
        sig = self.signature
        assert sig is not None
        check_feeds(sig, feeds)
        if len(sig.inputs) == 1 and len(sig.outputs) == 1:
            return {sig.output_names[0]: self.run(next(iter(feeds.values())))}
        dtypes = {t.name: t.dtype for t in sig.inputs}
        req = self._dynamic.request
        ports = {name: i for i, name in enumerate(sig.input_names)}
        req.infer({ports[k]: np.ascontiguousarray(v, dtype=dtypes[k]) for k, v in feeds.items()}, share_inputs=False)
        return {name: req.get_output_tensor(i).data.copy() for i, name in enumerate(sig.output_names)}

    def describe(self) -> dict[str, Any]:
        return dict(self._desc)


def _property(compiled: Any, key: str, default: Any) -> Any:
    try:
        return compiled.get_property(key)
    except Exception:  # noqa: BLE001 - property not supported by this device
        return default


def _type_name(value: Any) -> str:
    """``f32`` for an ``openvino.Type`` (its str() is "<Type: 'float32'>"), str() otherwise."""
    name = getattr(value, "get_type_name", None)
    return str(name()) if callable(name) else str(value)


def _int_property(compiled: Any, key: str, default: int) -> int:
    try:
        return int(str(_property(compiled, key, default)))
    except ValueError:
        return default


@RUNTIMES.register("openvino")
class OpenVinoRuntime(Runtime):
    name = "openvino"
    kinds = ("openvino", "onnx")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            ov = import_openvino()
        except RuntimeUnavailable as e:
            return False, str(e)
        try:
            devices = ov.Core().available_devices
        except Exception as e:  # noqa: BLE001 - plugin loading can fail in many ways
            return False, f"OpenVINO cannot list its devices here: {e}"
        if not devices:
            return False, "OpenVINO finds no device (CPU plugin missing?); reinstall openvino"
        return True, ""

    def load(
        self,
        artifact: Artifact,
        device: str = "CPU",
        hint: str = "latency",
        streams: int | str | None = None,
        threads: int | None = None,
        precision: str = "f32",
        requests: int | None = None,
        static_shapes: bool = False,
        **_: Any,
    ) -> Session:
        session = OpenVinoSession(
            str(artifact.model_file), device, hint, streams, threads, precision, requests, static_shapes
        )
        session._desc["model_precision"] = artifact_precision(artifact)  # precision: the plugin's float type
        recorded = artifact.meta.get("signature")
        if session.signature is not None and isinstance(recorded, dict) and recorded.get("inputs"):
            session.signature = session.signature.with_dim_names(Signature.from_dict(recorded))  # IR has no dim names
        return session
