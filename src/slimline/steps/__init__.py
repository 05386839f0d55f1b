"""Recipe steps, one file each, registered by name in ``STEPS``."""

from __future__ import annotations

import importlib

from slimline.registry import Registry
from slimline.steps.base import Step, StepConfig, StepOutput

STEPS: Registry[type[Step]] = Registry("step")

# One line per step module; a new technique is a new file plus a line here.
_STEP_MODULES = (
    "train",
    "evaluate",
    "export_onnx",
    "export_openvino",
    "distill",
    "sensitivity",
    "prune",
    "quantize",
    "qat",
    "fuse",
    "tune",
)


def _import_steps() -> None:
    for mod in _STEP_MODULES:
        try:
            importlib.import_module(f"slimline.steps.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"slimline.steps.{mod}":  # a step whose file is not written yet is skipped
                raise


def get_step(name: str) -> type[Step]:
    _import_steps()
    return STEPS.get(name)


def step_names() -> list[str]:
    _import_steps()
    return STEPS.names()


__all__ = ["STEPS", "Step", "StepConfig", "StepOutput", "get_step", "step_names"]
