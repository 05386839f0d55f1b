"""slimline: make trained models small and fast to deploy, with measured proof.

The public API is imported lazily so that ``slimline --help`` starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "evaluate_model": "slimline.api",
    "open_model": "slimline.api",
    "run": "slimline.api",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slimline' has no attribute {name!r}")


__all__ = sorted(_API)
