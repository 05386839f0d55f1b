"""``distill``: train the student from a teacher with the knowledge-distillation loss.

The student is the current artifact (e.g. the model just pruned) unless ``student`` names a fresh
one; the teacher is the run's baseline (the model before any step) unless ``teacher`` names one.
A model reference is a zoo name or ``package.module:factory`` (with ``weights``/``kwargs``), a
stage folder of this run (``00_baseline``, ``02_prune``) or the path of an artifact folder.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from torch import nn

from slimline.artifact import ARTIFACT_JSON, Artifact, load_torch
from slimline.context import RunContext
from slimline.distill import check_outputs, distill
from slimline.errors import ModelError, SlimlineError
from slimline.evaluate import evaluate
from slimline.models import count_macs, count_params, load_model
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput
from slimline.steps.train import TrainOptions
from slimline.train import TrainConfig

_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


class ModelRef(StepConfig):
    name: str = Field(
        description="zoo name, 'package.module:factory', a stage folder of this run, or an artifact folder"
    )
    weights: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)


class HintOptions(StepConfig):
    student_layer: str = Field(description="module name in the student, e.g. 'features.10'")
    teacher_layer: str = Field(description="module name in the teacher, e.g. 'features.10'")
    weight: float = Field(1.0, ge=0)


class DistillOptions(TrainOptions):
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    teacher: ModelRef | None = None  # default: the run's baseline
    student: ModelRef | None = None  # default: the current artifact
    cache: Literal["auto"] | bool = "auto"  # cache teacher logits per sample (auto: when augmentation is off)
    hint: HintOptions | None = None

    def train_config(self, seed: int) -> TrainConfig:
        return TrainConfig(**self.model_dump(include=_TRAIN_FIELDS), seed=seed)


def resolve_model(ref: ModelRef, ctx: RunContext) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model reference; returns the module and a description for the record."""
    for art in ctx.artifacts:
        if art.path.name == ref.name:
            return _from_artifact(art, ref), {"artifact": art.path.name}
    p = Path(ref.name)
    if p.is_dir() and (p / ARTIFACT_JSON).exists():
        return _from_artifact(Artifact.load(p), ref), {"artifact": str(p)}
    model = load_model(ref.name, ref.weights, **ref.kwargs)
    return model, {"model": ref.name, "weights": ref.weights, "kwargs": ref.kwargs}


def _from_artifact(art: Artifact, ref: ModelRef) -> nn.Module:
    if ref.weights or ref.kwargs:
        raise SlimlineError(f"{ref.name} is an artifact: it carries its own weights; drop 'weights'/'kwargs'")
    if art.kind != "torch":
        raise ModelError(f"{art.path} holds a {art.kind} model; distillation needs PyTorch models for both sides")
    return load_torch(art)


@STEPS.register("distill")
class Distill(Step[DistillOptions]):
    """Train a PyTorch student from a teacher (any current artifact when ``student`` names the student)."""

    name = "distill"
    Config = DistillOptions
    accepts = ("torch", "onnx", "openvino")

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        cfg = self.config
        if cfg.student is not None:
            student, student_desc = resolve_model(cfg.student, ctx)
            source = Artifact(artifact.kind, artifact.path, dict(artifact.files), dict(artifact.meta), artifact.lineage)
            source.meta["model"] = cfg.student.name
        else:
            if artifact.kind != "torch":
                raise SlimlineError(
                    f"distill trains a PyTorch student, but the current artifact is {artifact.kind}: "
                    "put distill before export steps, or give 'student: {name: ...}'"
                )
            student, student_desc, source = load_torch(artifact), {"artifact": artifact.path.name}, artifact
        if cfg.teacher is not None:
            teacher, teacher_desc = resolve_model(cfg.teacher, ctx)
        else:
            if ctx.baseline is None:
                raise SlimlineError("distill has no teacher: give 'teacher: {name: ..., weights: ...}'")
            if ctx.baseline.kind != "torch":
                raise ModelError(
                    f"the run's baseline is a {ctx.baseline.kind} model and cannot teach: "
                    "give 'teacher: {name: ..., weights: ...}' with a PyTorch model"
                )
            teacher, teacher_desc = load_torch(ctx.baseline), {"artifact": ctx.baseline.path.name}
        shape = tuple(ctx.data.spec.input_shape)
        check_outputs(student, teacher, shape)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        tc = cfg.train_config(ctx.seed)
        ckpt = ctx.out_dir / "checkpoint.pt"
        teacher_val = evaluate(teacher, ctx.data.val)
        student_val_before = evaluate(student, ctx.data.val)
        hint_layers = (cfg.hint.student_layer, cfg.hint.teacher_layer) if cfg.hint else None
        result = distill(
            student,
            teacher,
            ctx.data.train,
            tc,
            temperature=cfg.temperature,
            alpha=cfg.alpha,
            val=ctx.data.val,
            checkpoint=ckpt,
            cache=cfg.cache,
            hint_layers=hint_layers,
            hint_weight=cfg.hint.weight if cfg.hint else 1.0,
        )
        val = evaluate(student, ctx.data.val)
        out = ctx.save_model(student, source)
        ckpt.unlink(missing_ok=True)
        record = {
            "train": asdict(tc),
            "distill": {"temperature": cfg.temperature, "alpha": cfg.alpha, "cache": result.cache, "hint": result.hint},
            "teacher": teacher_desc
            | {"macs": count_macs(teacher, shape), "params": count_params(teacher), "val": teacher_val},
            "student": student_desc | {"macs": count_macs(student, shape), "params": count_params(student)},
            "val_before": student_val_before,
            "history": result.history,
            "resumed_from": result.resumed_from,
            "val": val,
        }
        if result.resume:
            record["resume"] = result.resume
        return StepOutput(out, record)
