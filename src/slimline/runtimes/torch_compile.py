"""``torch-compile``: PyTorch with ``torch.compile`` (inductor), compiled on the first batch.

Options: ``threads``, ``channels_last``, ``freezing`` (inductor constant-folds the weights into
the graph; default on: inference only), ``mode`` (``default``, ``reduce-overhead``,
``max-autotune``...), ``dynamic`` (compile for varying batch sizes; default: PyTorch's choice,
static first, dynamic after a second shape) and ``backend`` (default ``inductor``). The first
``run`` pays for the compile (tens of seconds on a small CPU); the benchmark's warm-up absorbs it
and reports it as ``first_run_ms``.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import torch

from slimline.artifact import Artifact, load_torch
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session, artifact_precision
from slimline.runtimes.torch_eager import TorchSession
from slimline.signature import artifact_signature


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would call, if it is on this machine."""
    try:
        from torch._inductor import config

        cxx = config.cpp.cxx
    except Exception:  # noqa: BLE001 - inductor missing or broken
        return None
    names = [c for c in (cxx if isinstance(cxx, tuple | list) else (cxx,)) if c]
    for name in [*names, "g++", "c++", "clang++"]:
        path = shutil.which(str(name))
        if path:
            return path
    return None


class TorchCompileSession(TorchSession):
    def __init__(
        self,
        model: torch.nn.Module,
        threads: int | None,
        channels_last: bool,
        freezing: bool,
        mode: str,
        dynamic: bool | None,
        backend: str,
    ) -> None:
        super().__init__(model, threads, channels_last, label="torch-compile")
        self.freezing, self.mode, self.dynamic, self.backend = freezing, mode, dynamic, backend
        self.eager = self.model
        self.compiled = torch.compile(
            self.model, mode=None if mode == "default" else mode, dynamic=dynamic, backend=backend
        )
        self._compiled_once = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(self._prepare(batch)).float().numpy()

    def _forward(self, *args: torch.Tensor) -> Any:
        if not self._compiled_once:
            from torch._inductor import config

            # freezing is read while compiling, which happens on the first call
            with config.patch(freezing=self.freezing), torch.no_grad():
                out = self.compiled(*args)
            self._compiled_once = True
            return out
        with torch.no_grad():
            return self.compiled(*args)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "freezing": self.freezing,
            "mode": self.mode,
            "dynamic": self.dynamic,
            "backend": self.backend,
        }


@RUNTIMES.register("torch-compile")
class TorchCompile(Runtime):
    name = "torch-compile"
    kinds = ("torch",)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import torch._inductor  # noqa: F401
        except Exception as e:  # noqa: BLE001
            return False, f"torch.compile's inductor backend cannot be imported ({e})"
        if cpp_compiler() is None:
            return False, "torch.compile (inductor, CPU) needs a C++ compiler: install g++ (apt-get install g++)"
        return True, ""

    def load(
        self,
        artifact: Artifact,
        threads: int | None = None,
        channels_last: bool = False,
        freezing: bool = True,
        mode: str = "default",
        dynamic: bool | None = None,
        backend: str = "inductor",
        **_: Any,
    ) -> Session:
        session = TorchCompileSession(load_torch(artifact), threads, channels_last, freezing, mode, dynamic, backend)
        session.precision = artifact_precision(artifact)
        session.signature = artifact_signature(artifact)
        return session
