"""A step turns one artifact into the next and says what it did (its record)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from slimline.artifact import Artifact
from slimline.errors import RecipeError

if TYPE_CHECKING:
    from slimline.context import RunContext

ARTIFACT_KINDS = ("torch", "onnx", "openvino", "tflite")


class StepConfig(BaseModel):
    """Base of every step's options; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def default(cls, name: str) -> Any:
        """The field's default: command-line options take theirs from here, so each is declared once."""
        return cls.model_fields[name].get_default(call_default_factory=True)

    @classmethod
    def help(cls, name: str) -> str:
        """The field's description, the help text of the matching command-line option."""
        return cls.model_fields[name].description or ""


C = TypeVar("C", bound=StepConfig)


@dataclass
class StepOutput:
    """The next artifact (None: the input passes through unchanged) and what the step measured."""

    artifact: Artifact | None
    record: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # extra outputs (plots, JSON) in the step folder


class Step(ABC, Generic[C]):
    """One technique over artifacts. ``accepts``: the artifact kinds ``apply`` takes; the pipeline and
    :func:`slimline.api.apply_step` check it (:meth:`check_kind`) before calling ``apply``."""

    name: ClassVar[str]
    Config: type[C]
    accepts: ClassVar[tuple[str, ...]] = ARTIFACT_KINDS

    def __init__(self, config: C | None = None) -> None:
        self.config: C = config if config is not None else self.Config()

    def check_kind(self, artifact: Artifact, where: str, fix: str) -> None:
        """Raise one line when ``artifact`` is of a kind this step does not take: ``where`` names it, ``fix``
        says what to give instead."""
        if artifact.kind not in self.accepts:
            raise RecipeError(
                f"step {self.name!r} takes {' or '.join(self.accepts)} artifacts; {where} is {artifact.kind}: {fix}"
            )

    @abstractmethod
    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        """Make the next artifact in ``ctx.out_dir``. Never evaluate on the test split here
        except in the ``evaluate`` step."""
