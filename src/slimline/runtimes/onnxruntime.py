"""ONNX Runtime (CPU execution provider; CUDA/TensorRT providers when present and asked for)."""

from __future__ import annotations

from typing import Any

import numpy as np

from slimline.artifact import Artifact
from slimline.errors import RuntimeUnavailable
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session

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
    ) -> None:
        import onnxruntime as ort

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
        self.options = {
            "threads": threads,
            "inter_op_threads": inter_op_threads,
            "graph_optimization": graph_optimization,
            "device": device,
            "enable_mem_arena": enable_mem_arena,
            "enable_mem_pattern": enable_mem_pattern,
        }
        self._version = ort.__version__
        self.precision = precision

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

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
        **_: Any,
    ) -> Session:
        return OrtSession(
            str(artifact.model_file),
            threads,
            inter_op_threads,
            graph_optimization,
            device,
            enable_mem_arena,
            enable_mem_pattern,
            str(artifact.meta.get("precision", "fp32")),
        )
