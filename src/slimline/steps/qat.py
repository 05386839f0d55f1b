"""``qat``: quantization-aware fine-tuning, then an int8 QDQ ONNX model that ONNX Runtime runs in int8.

BatchNorm is folded, fake quantization wraps every Conv/Linear (ranges start from
``calibration_size`` training samples and are learned with ``learn_ranges``), and the model is
fine-tuned with :func:`slimline.train.fit` (the one training loop; with ``distill`` > 0 its
criterion hook mixes in the float model's soft targets). The result is checked in ONNX Runtime
against the fake-quantized PyTorch model on the validation slice.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from slimline.artifact import Artifact, ArtifactWriter, load_torch
from slimline.context import RunContext
from slimline.errors import ExportError
from slimline.evaluate import evaluate, predict_logits
from slimline.steps import STEPS
from slimline.steps.base import Step, StepConfig, StepOutput
from slimline.train import Criterion, TrainConfig, fit


class QatOptions(StepConfig):
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.0005, gt=0, description="small: BatchNorm is folded, and BN-free nets diverge at usual rates")
    momentum: float = 0.9
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    augment: bool = True
    calibration: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    calibration_size: int = Field(300, ge=1)
    per_channel: bool = True
    activation_symmetric: bool = False
    reduce_range: bool | None = None
    learn_ranges: bool = True
    weight_init: Literal["minmax", "mse"] = "mse"
    quantize_outputs: bool = True
    exclude: list[str] = Field(default_factory=list)
    distill: float = Field(0.0, ge=0, le=1, description="weight of the float model's soft targets in the loss")
    temperature: float = Field(2.0, gt=0)
    opset: int | None = None


def distill_criterion(teacher: nn.Module, weight: float, temperature: float) -> Criterion:
    """Cross-entropy mixed with KL to the float model's softened outputs (plugged into fit's criterion hook)."""
    teacher.eval()

    def crit(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        with torch.no_grad():
            t = teacher(x)
        kd = (
            F.kl_div(F.log_softmax(logits / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
            * temperature**2
        )
        return (1 - weight) * F.cross_entropy(logits, y) + weight * kd, logits

    return crit


@STEPS.register("qat")
class Qat(Step[QatOptions]):
    """Quantization-aware fine-tuning of the current PyTorch model, exported as a QDQ ONNX model."""

    name = "qat"
    Config = QatOptions
    accepts = ("torch",)

    def apply(self, artifact: Artifact, ctx: RunContext) -> StepOutput:
        from slimline.quant.qat import QATConfig, export_qat_onnx, prepare_qat

        opts = self.config
        model = load_torch(artifact)
        qcfg = QATConfig(
            per_channel=opts.per_channel,
            activation_symmetric=opts.activation_symmetric,
            reduce_range=opts.reduce_range,
            calibration=opts.calibration,
            learn_ranges=opts.learn_ranges,
            weight_init=opts.weight_init,
            quantize_outputs=opts.quantize_outputs,
            exclude=list(opts.exclude),
        )
        qmodel = prepare_qat(model, ctx.data.calibration(opts.calibration_size), qcfg)
        val = ctx.data.val
        before = evaluate(qmodel, val)
        tc = TrainConfig(
            epochs=opts.epochs,
            batch_size=opts.batch_size,
            optimizer=opts.optimizer,
            lr=opts.lr,
            momentum=opts.momentum,
            weight_decay=opts.weight_decay,
            schedule=opts.schedule,
            augment=opts.augment,
            seed=ctx.seed,
        )
        crit = distill_criterion(model, opts.distill, opts.temperature) if opts.distill > 0 else None
        ckpt = ctx.run_dir / f".{ctx.out_dir.name}.qat-checkpoint.pt"
        result = fit(
            qmodel,
            ctx.data.train,
            tc,
            val=val,
            criterion=crit,
            checkpoint=ckpt,
            description="qat",
            setup=opts.model_dump(mode="json"),
        )
        after = evaluate(qmodel, val)
        shape = tuple(artifact.meta["input_shape"])
        meta = dict(artifact.meta)
        meta["quantization"] = {
            "backend": "qat",
            "precision": "int8",
            "format": "QDQ",
            "activation_type": "int8" if opts.activation_symmetric else "uint8",
            "weight_type": "int8",
            "per_channel": opts.per_channel,
        }
        with ArtifactWriter(ctx.out_dir, "onnx", meta, list(artifact.lineage)) as w:
            path = export_qat_onnx(qmodel, shape, w.add("model", "model.onnx"), opts.opset)
            check = _check_in_ort(path, qmodel, val)
        ckpt.unlink(missing_ok=True)
        assert w.artifact is not None
        record: dict[str, Any] = {
            "train": asdict(tc),
            "history": result.history,
            "qat": qcfg.__dict__ | {"weight_limits": qcfg.weight_limits()},
            "val_before": before,
            "val": after,
            "onnxruntime": check,
            "file_bytes": w.artifact.size_bytes(),
            "summary": f"QAT int8: val top-1 {before['top1']:.2f} -> {after['top1']:.2f}",
        }
        if result.resume:
            record["resume"] = result.resume
        return StepOutput(w.artifact, record)


def _check_in_ort(path: Any, qmodel: nn.Module, val: Any, n: int = 256) -> dict[str, Any]:
    """Run the QDQ file in ONNX Runtime and compare top-1 with the fake-quantized PyTorch model."""
    import onnxruntime as ort

    ds = val.take(n)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = predict_logits(lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0], ds)
    except Exception as e:  # noqa: BLE001 - ORT raises many kinds
        raise ExportError(f"ONNX Runtime cannot run the QAT export: {e}") from e
    ref = predict_logits(qmodel, ds)
    agree = float((got.argmax(1) == ref.argmax(1)).mean()) * 100
    return {
        "samples": len(ds),
        "top1_agreement_with_torch": agree,
        "max_abs_logit_diff": float(np.abs(got - ref).max()),
        "runs": True,
    }
