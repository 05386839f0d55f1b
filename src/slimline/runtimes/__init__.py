"""Runtimes behind one interface, one file each, registered by name in ``RUNTIMES``."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from slimline.artifact import Artifact
from slimline.errors import RuntimeUnavailable, SlimlineError
from slimline.registry import Registry
from slimline.runtimes.base import Runtime, Session

RUNTIMES: Registry[type[Runtime]] = Registry(
    "runtime",
    [f"slimline.runtimes.{m}" for m in ("onnxruntime", "torch_eager", "torch_compile", "openvino", "litert")],
    group="slimline.runtimes",
)


def _import_runtimes() -> None:
    RUNTIMES.load()


def get_runtime(name: str) -> type[Runtime]:
    _import_runtimes()
    return RUNTIMES.get(name)


def runtime_names() -> list[str]:
    _import_runtimes()
    return RUNTIMES.names()


def availability() -> dict[str, tuple[bool, str]]:
    """Every registered runtime with (usable, reason)."""
    _import_runtimes()
    return {n: RUNTIMES.get(n).available() for n in RUNTIMES.names()}


RUNTIME_CONFIG_KEYS = ("batch_size",)  # kept in an artifact's runtime_config for its users, not passed to load


def runtime_options(runtime: str) -> list[str]:
    """The option names ``runtime`` takes: the keyword parameters of its ``load`` after the artifact."""
    params = list(inspect.signature(get_runtime(runtime).load).parameters.values())[1:]  # skip self
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name != "artifact"]


def validate_options(runtime: str, options: dict[str, Any], *, allow: tuple[str, ...] = ()) -> None:
    """Raise a SlimlineError naming the first option ``runtime`` does not take (with a did-you-mean)."""
    valid = runtime_options(runtime)
    for key in options:
        if key in valid or key in allow:
            continue
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SlimlineError(f"runtime {runtime} has no option {key!r}{hint}; valid: {', '.join(valid) or '(none)'}")


def validate_runtime_spec(text: str) -> None:
    """Check a ``name[:option[=value],...]`` runtime spec (``-r`` of bench, ``benchmark.runtimes``) before any work."""
    from slimline.bench.harness import RuntimeSpec

    spec = RuntimeSpec.parse(text)
    validate_options(spec.name, spec.options)


def open_session(artifact: Artifact, runtime: str, **options: Any) -> Session:
    """Load ``artifact`` on ``runtime``; options come from the artifact's runtime config, then ``options``."""
    cls = get_runtime(runtime)
    ok, why = cls.available()
    if not ok:
        raise RuntimeUnavailable(f"runtime {runtime!r} is not usable here: {why}")
    if artifact.kind not in cls.kinds:
        raise SlimlineError(
            f"runtime {runtime!r} runs {', '.join(cls.kinds)} artifacts, but {artifact.path} is {artifact.kind}"
        )
    saved = artifact.meta.get("runtime_config", {}).get(runtime, {})
    validate_options(runtime, saved, allow=RUNTIME_CONFIG_KEYS)
    validate_options(runtime, options, allow=RUNTIME_CONFIG_KEYS)
    merged = {**saved, **options}
    return cls().load(artifact, **merged)


def default_runtime(artifact: Artifact) -> str:
    """The runtime an artifact names in its meta (``runtime``, e.g. an ONNX model quantized for OpenVINO)
    when that runtime runs its kind, else the kind's usual runtime."""
    named = artifact.meta.get("runtime")
    if isinstance(named, str) and named in RUNTIMES and artifact.kind in get_runtime(named).kinds:
        return named
    return {"torch": "torch", "onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}[artifact.kind]


__all__ = [
    "RUNTIMES",
    "Runtime",
    "Session",
    "availability",
    "default_runtime",
    "get_runtime",
    "open_session",
    "runtime_names",
    "runtime_options",
    "validate_options",
    "validate_runtime_spec",
]
