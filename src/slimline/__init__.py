"""slimline: make trained models small and fast to deploy, with measured proof.

The public API is imported lazily so that ``slimline --help`` starts fast.

Importing slimline turns off the telemetry of the libraries it drives, before any of them is imported
(worker processes inherit the environment): ``ORT_DISABLE_TELEMETRY=1`` (ONNX Runtime reads it once,
when it initialises; otherwise it contacts a Microsoft host about 30 s after import) and ``NNCF_CI=1``
(NNCF's telemetry becomes a stub; OpenVINO's is switched off by
``slimline.runtimes.openvino.disable_telemetry`` when openvino is used) and ``HF_HUB_DISABLE_TELEMETRY=1``
(Hugging Face text models are read from local folders only). A value already set is kept.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NNCF_CI", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

_API = {
    "Artifact": "slimline.artifact",
    "load_torch": "slimline.artifact",
    "save_torch": "slimline.artifact",
    "SlimlineError": "slimline.errors",
    "build_model": "slimline.models",
    "load_model": "slimline.models",
    "load_onnx": "slimline.models",
    "load_dataset": "slimline.data",
    "apply_step": "slimline.api",
    "evaluate_model": "slimline.api",
    "open_model": "slimline.api",
    "run": "slimline.api",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slimline' has no attribute {name!r}")


__all__ = sorted(_API)
