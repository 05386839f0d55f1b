"""A step turns one artifact into the next and says what it did (its record)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from slimline.artifact import Artifact

if TYPE_CHECKING:
    from slimline.pipeline import RunContext


class StepConfig(BaseModel):
    """Base of every step's options; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepOutput:
    """The next artifact (None: the input passes through unchanged) and what the step measured."""

    artifact: Artifact | None
    record: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)  # extra outputs (plots, JSON) in the step folder


class Step(ABC):
    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]] = StepConfig

    def __init__(self, config: StepConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        """Make the next artifact in ``ctx.out_dir``. Never evaluate on the test split here
        except in the ``evaluate`` step."""
