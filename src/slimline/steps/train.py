"""``train``: (re)train the current PyTorch model on the training part of the data."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from pydantic import Field

from slimline.artifact import Artifact, load_torch
from slimline.context import RunContext
from slimline.evaluate import evaluate
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput
from slimline.train import TrainConfig, fit


class TrainOptions(StepConfig):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = 0.9
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    augment: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.model_dump(), seed=seed)


@STEPS.register("train")
class Train(Step[TrainOptions]):
    """(Re)train the current PyTorch model on the training part of the data."""

    name = "train"
    Config = TrainOptions
    accepts = ("torch",)

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        model = load_torch(artifact)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        tc = cfg.train_config(ctx.seed)
        result = fit(
            model, ctx.data.train, tc, val=ctx.data.val, checkpoint=ctx.out_dir / "checkpoint.pt", description="train"
        )
        val = evaluate(model, ctx.data.val)
        out = ctx.save_model(model, artifact)
        (ctx.out_dir / "checkpoint.pt").unlink(missing_ok=True)
        record = {"train": asdict(tc), "history": result.history, "val": val}
        return StepOutput(out, record | ({"resume": result.resume} if result.resume else {}))
