"""The one runtime interface: load an artifact, run a batch of numpy arrays, describe itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from slimline.artifact import Artifact


class Session(ABC):
    """A loaded model ready to run batches."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one float32 NCHW batch and return the outputs (logits) as numpy."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """name, version, device, precision, threads and the options in force."""


class Runtime(ABC):
    """A backend that can run artifacts of the kinds in ``kinds``."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, the reason and what to do)."""
        return True, ""

    @abstractmethod
    def load(self, artifact: Artifact, **options: Any) -> Session:
        """Load ``artifact`` (one of ``kinds``) with runtime options (threads, ...)."""


def artifact_precision(artifact: Artifact) -> str:
    """``int8`` for a quantized artifact (its ``quantization`` record or ``precision``), else ``fp32``."""
    return str(artifact.meta.get("precision") or artifact.meta.get("quantization", {}).get("precision") or "fp32")
