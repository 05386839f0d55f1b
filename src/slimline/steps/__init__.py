"""Recipe steps, one file each, registered by name in ``STEPS``."""

from __future__ import annotations

from slimline.registry import Registry
from slimline.steps.base import Step, StepConfig, StepOutput

# One line per step module; a new technique is a new file plus a line here (or an entry point in the
# "slimline.steps" group of another package).
_STEP_MODULES = (
    "train",
    "evaluate",
    "export_onnx",
    "export_openvino",
    "export_tflite",
    "distill",
    "sensitivity",
    "prune",
    "quantize",
    "qat",
    "fuse",
    "tune",
)

STEPS: Registry[type[Step]] = Registry("step", [f"slimline.steps.{m}" for m in _STEP_MODULES], group="slimline.steps")


def _import_steps() -> None:
    STEPS.load()


def get_step(name: str) -> type[Step]:
    """The registered step class called ``name``; a one-line error lists the known steps otherwise."""
    _import_steps()
    return STEPS.get(name)


def step_names() -> list[str]:
    _import_steps()
    return STEPS.names()


__all__ = ["STEPS", "Step", "StepConfig", "StepOutput", "get_step", "step_names"]
