"""ONNX Runtime (CPU execution provider; CUDA/TensorRT providers when present and asked for).

An ONNX artifact made by the ``fuse`` step carries ONNX Runtime's offline-optimized graph (role
``ort_model``). ``model_file="auto"`` (the default) loads that file when the installed onnxruntime is
the version that wrote it (the optimized graph uses its contrib ops), else the plain ``model.onnx``;
``describe()`` says which file runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from slimline.artifact import Artifact
from slimline.errors import RuntimeUnavailable
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session, artifact_precision, check_feeds
from slimline.signature import Signature

_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


class OrtSession(Session):
    def __init__(
        self,
        path: str,
        threads: int | None,
        inter_op_threads: int | None,
        graph_optimization: str,
        device: str,
        enable_mem_arena: bool,
        enable_mem_pattern: bool,
        precision: str = "fp32",
        model_role: str = "model",
    ) -> None:
        ort = import_onnxruntime()
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        if inter_op_threads:
            so.inter_op_num_threads = inter_op_threads
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[graph_optimization])
        so.enable_cpu_mem_arena = enable_mem_arena
        so.enable_mem_pattern = enable_mem_pattern
        so.log_severity_level = 3
        provider = _PROVIDERS.get(device)
        if provider is None:
            raise RuntimeUnavailable(f"onnxruntime device must be one of {sorted(_PROVIDERS)}, not {device!r}")
        if provider not in ort.get_available_providers():
            raise RuntimeUnavailable(
                f"onnxruntime has no {provider} here (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu on a machine with a GPU, or use device: cpu"
            )
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        self.sess = ort.InferenceSession(path, so, providers=providers)
        self.input_name = self.sess.get_inputs()[0].name
        self.signature = Signature.from_onnx(path)
        self._outputs = [o.name for o in self.sess.get_outputs()]
        self.options = {
            "threads": threads,
            "inter_op_threads": inter_op_threads,
            "graph_optimization": graph_optimization,
            "device": device,
            "enable_mem_arena": enable_mem_arena,
            "enable_mem_pattern": enable_mem_pattern,
            "model_file": model_role,
        }
        self._version = ort.__version__
        self.precision = precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.signature is not None
        check_feeds(self.signature, feeds)
        dtypes = {t.name: t.dtype for t in self.signature.inputs}
        arrays = {k: np.ascontiguousarray(v, dtype=dtypes.get(k, v.dtype)) for k, v in feeds.items()}
        return dict(zip(self._outputs, self.sess.run(None, arrays), strict=True))

    def describe(self) -> dict[str, Any]:
        return {
            "name": "onnxruntime",
            "version": self._version,
            "device": self.options["device"],
            "providers": self.sess.get_providers(),
            "precision": self.precision,
            **self.options,
        }


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    kinds = ("onnx",)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return False, f"onnxruntime is not installed ({e}); pip install onnxruntime"
        return True, ""

    def load(
        self,
        artifact: Artifact,
        threads: int | None = None,
        inter_op_threads: int | None = None,
        graph_optimization: str = "all",
        device: str = "cpu",
        enable_mem_arena: bool = True,
        enable_mem_pattern: bool = True,
        model_file: str = "auto",
        **_: Any,
    ) -> Session:
        role = choose_model_file(artifact, model_file)
        return OrtSession(
            str(artifact.path / artifact.files[role]),
            threads,
            inter_op_threads,
            graph_optimization,
            device,
            enable_mem_arena,
            enable_mem_pattern,
            artifact_precision(artifact),
            role,
        )


def import_onnxruntime() -> Any:
    """``onnxruntime``, with its non-essential telemetry events off (``ORT_DISABLE_TELEMETRY=1``, set when
    slimline is imported, already stops the uploader; this is the API switch on top)."""
    import onnxruntime as ort

    off = getattr(ort, "disable_telemetry_events", None)
    if callable(off):
        off()
    return ort


def choose_model_file(artifact: Artifact, model_file: str = "auto") -> str:
    """The role of the file to load: ``model``, or ``ort_model`` (the offline-optimized graph).

    ``auto`` takes ``ort_model`` when the artifact has one written by this onnxruntime version.
    """
    import onnxruntime as ort

    if model_file not in ("auto", "model", "ort_model"):
        raise RuntimeUnavailable(f"onnxruntime model_file must be auto, model or ort_model, not {model_file!r}")
    has_ort = "ort_model" in artifact.files and (artifact.path / artifact.files["ort_model"]).exists()
    if model_file == "ort_model":
        if not has_ort:
            raise RuntimeUnavailable(
                f"{artifact.path} has no offline-optimized ONNX Runtime model; run the fuse step on the ONNX artifact"
            )
        return "ort_model"
    if model_file == "auto" and has_ort:
        written_by = artifact.meta.get("ort_model", {}).get("onnxruntime")
        if written_by == ort.__version__:
            return "ort_model"
    return "model"
