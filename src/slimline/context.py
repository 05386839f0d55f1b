"""What a step runs in: the run's data splits (:class:`DataBundle`) and its folders and stages (:class:`RunContext`).

Steps import these from here, not from :mod:`slimline.pipeline`: this module imports nothing of the recipe,
the pipeline or the steps, so ``recipe -> steps -> context`` has no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.artifact import Artifact, save_torch
from slimline.data import ArrayDataset, DataSpec
from slimline.errors import SlimlineError

if TYPE_CHECKING:
    from slimline.recipe import DataConfig


@dataclass
class DataBundle:
    """The splits a run uses. Steps train, calibrate and choose settings on ``train``/``val`` only.

    Without a ``config`` (a step run on its own, e.g. ``fuse`` from the CLI) every split raises one line
    saying that the step needs data.
    """

    config: DataConfig | None
    seed: int = 0

    def _config(self) -> DataConfig:
        if self.config is None:
            raise SlimlineError(
                "this step reads data but none was given: name a dataset (data='digits' in Python, data: in a recipe)"
            )
        return self.config

    def _load(self, split: str, limit: int | None) -> ArrayDataset:
        return self._config().load(split, limit)  # a dataset name or a factory, with its preprocessing

    @cached_property
    def train_full(self) -> ArrayDataset:
        return self._load("train", self._config().train_limit)

    @cached_property
    def _split(self) -> tuple[ArrayDataset, ArrayDataset]:
        return self.train_full.split_off(self._config().val_size, seed=self.seed)

    @property
    def train(self) -> ArrayDataset:
        return self._split[0]

    @property
    def val(self) -> ArrayDataset:
        return self._split[1]

    @cached_property
    def test(self) -> ArrayDataset:
        return self._load("test", self._config().test_limit)

    def calibration(self, n: int = 300) -> ArrayDataset:
        """A seeded sample of the training part (never the test split)."""
        return self.train.sample(n, seed=self.seed)

    @property
    def spec(self) -> DataSpec:
        return self.train_full.spec


@dataclass
class RunContext:
    """A run's folder, data and stages so far; ``out_dir`` is the folder of the step being applied."""

    run_dir: Path
    data: DataBundle = field(default_factory=lambda: DataBundle(None))
    seed: int = 0
    out_dir: Path = Path(".")
    baseline: Artifact | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def save_model(self, model: Any, source: Artifact) -> Artifact:
        """Save a PyTorch model as this step's artifact, carrying ``source``'s meta and lineage."""
        return save_torch(model, self.out_dir, source.meta, source.lineage)
