"""The one runtime interface: load an artifact, run a batch of numpy arrays, describe itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from slimline.artifact import Artifact
from slimline.errors import SlimlineError
from slimline.signature import Signature


class Session(ABC):
    """A loaded model ready to run batches.

    ``run_named`` is the general form: named input arrays of any dtype (float, int64 ids, bool masks,
    recurrent state) to named output arrays, over ``signature``. ``run`` is the single-input form the image
    classifiers use: one batch in, the first output back.
    """

    signature: Signature | None = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch through the (first) input and return the first output as numpy."""

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run named inputs; every output by name. Runtimes with several inputs or outputs override this;
        the default serves single-input, single-output sessions."""
        names = self.signature.input_names if self.signature else list(feeds)
        if len(names) != 1 or len(feeds) != 1:
            raise SlimlineError(
                f"{type(self).__name__} runs single-input models only; this one has inputs {', '.join(names)}"
            )
        out_name = self.signature.output_names[0] if self.signature and self.signature.outputs else "output"
        return {out_name: self.run(next(iter(feeds.values())))}

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


def check_feeds(signature: Signature, feeds: Mapping[str, np.ndarray]) -> None:
    """Every input present, no unknown names, ranks that fit: one error naming what is wrong."""
    missing = [n for n in signature.input_names if n not in feeds]
    unknown = [n for n in feeds if n not in signature.input_names]
    if missing or unknown:
        raise SlimlineError(
            f"inputs do not fit the model ({signature.describe()}): "
            + "; ".join(
                p
                for p in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(unknown)}" if unknown else "",
                )
                if p
            )
        )
    for t in signature.inputs:
        if t.shape and np.ndim(feeds[t.name]) != len(t.shape):
            raise SlimlineError(
                f"input {t.name!r} has {np.ndim(feeds[t.name])} dimensions; the model wants "
                f"{len(t.shape)} ({t.describe()})"
            )
