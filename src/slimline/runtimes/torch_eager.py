"""PyTorch eager runtime (options: ``threads``, ``channels_last``, ``fuse``).

``fuse``: Conv+BN+activation fusion with torch.fx at load time (:mod:`slimline.optimize.fx_fuse`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.artifact import Artifact, load_torch
from slimline.runtimes import RUNTIMES
from slimline.runtimes.base import Runtime, Session, artifact_precision, check_feeds
from slimline.signature import artifact_signature


class TorchSession(Session):
    def __init__(
        self, model: nn.Module, threads: int | None, channels_last: bool, label: str = "torch", precision: str = "fp32"
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.channels_last = channels_last
        self.label = label
        self.precision = precision
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs omit it

    def _prepare(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(self._prepare(batch)).float().numpy()

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs passed to ``forward`` in signature order; outputs (a tensor, tuple or dict) named by it."""
        sig = self.signature
        assert sig is not None
        check_feeds(sig, feeds)
        args = [
            self._prepare(feeds[n])
            if np.asarray(feeds[n]).dtype.kind == "f"
            else torch.from_numpy(np.ascontiguousarray(feeds[n]))
            for n in sig.input_names
        ]
        return name_outputs(self._forward(*args), sig.output_names)

    def _forward(self, *args: torch.Tensor) -> Any:
        with torch.inference_mode():
            return self.model(*args)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.label,
            "version": torch.__version__,
            "device": "cpu",
            "precision": self.precision,
            "threads": torch.get_num_threads(),
            "channels_last": self.channels_last,
            "fuse": getattr(self, "fused", False),
        }


@RUNTIMES.register("torch")
class TorchEager(Runtime):
    name = "torch"
    kinds = ("torch",)

    def load(
        self, artifact: Artifact, threads: int | None = None, channels_last: bool = False, fuse: bool = False, **_: Any
    ) -> Session:
        model = load_torch(artifact)
        if fuse:
            from slimline.optimize.fx_fuse import fuse_for_inference

            model = fuse_for_inference(model, artifact.meta.get("input_shape"))
        session = TorchSession(model, threads, channels_last, precision=artifact_precision(artifact))
        session.fused = bool(fuse)  # type: ignore[attr-defined]
        session.signature = artifact_signature(artifact)
        return session


def name_outputs(out: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A module's output (tensor, tuple/list or dict of tensors) as named numpy arrays."""

    def arr(t: Any) -> np.ndarray:
        t = t.detach() if isinstance(t, torch.Tensor) else torch.as_tensor(t)
        return (t.float() if t.is_floating_point() else t).numpy()

    if isinstance(out, dict):
        return {str(k): arr(v) for k, v in out.items()}
    items = list(out) if isinstance(out, tuple | list) else [out]
    if len(names) != len(items):
        names = names[:1] if len(items) == 1 and names else [f"output_{i}" for i in range(len(items))]
    return {n: arr(t) for n, t in zip(names, items, strict=True)}
