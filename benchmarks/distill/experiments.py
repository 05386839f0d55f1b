#!/usr/bin/env python
"""Knowledge-distillation experiments, one command each; every figure is printed and written as JSON.

fmnist: teacher ``small_cnn`` (21.9M MACs) trained on labels; student ``small_cnn_half`` (5.5M MACs)
    trained twice from the same initialisation with the same epochs, schedule and seed: once on
    labels alone, once with KD from the teacher. Train on 55,000 images (5,000 held out for
    validation), test on the 10,000 test images.

    benchmarks/distill/run.sh fmnist --seed 0 --epochs 4 --teacher-epochs 4

cifar: pretrained cifar_resnet56 distilled into cifar_resnet20 initialised from its own pretrained
    weights, on the 2,000 cifar10-sample training images; accuracy on the 1,000 test images before
    and after (plus the same fine-tuning on labels alone as a control).

    benchmarks/distill/run.sh cifar --seed 0 --epochs 3

Trained teachers and per-run checkpoints live in runs/distill_experiments/ (an interrupted command
rerun with the same arguments resumes; a finished teacher is reused).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimline.api import (
    ArrayDataset,
    TrainConfig,
    accuracy_metrics,
    count_macs,
    count_params,
    distill,
    fidelity,
    fit,
    load_dataset,
    load_model,
    predict_logits,
    torch_save,
    write_json,
)

WORK = Path("runs/distill_experiments")
CIFAR_WEIGHTS = Path(os.environ.get("SLIMLINE_SHARED", "/work/shared")) / "data" / "cifar10"
LOAD_AT_START = os.getloadavg()


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _test(model: nn.Module, ds: ArrayDataset) -> tuple[dict[str, Any], np.ndarray]:
    logits = predict_logits(model, ds)
    return accuracy_metrics(logits, ds.y), logits.argmax(1) == ds.y


def _paired(a_right: np.ndarray, b_right: np.ndarray) -> dict[str, Any]:
    """Discordant pairs on the same test images and the exact two-sided McNemar (sign test) p-value."""
    a_only, b_only = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    n = a_only + b_only
    k = min(a_only, b_only)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"a_right_b_wrong": a_only, "b_right_a_wrong": b_only, "mcnemar_exact_p": p}


def _describe(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    return {"macs": count_macs(model, shape), "params": count_params(model)}


def _env() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": LOAD_AT_START,
        "python": platform.python_version(),
        "note": "CPU timings on a shared 2-core machine with other engineers' jobs running",
    }


def _finish(out: Path, result: dict[str, Any]) -> None:
    result["environment"]["load_average_at_end"] = os.getloadavg()
    write_json(out, result)
    print(json.dumps(result, indent=2))
    _say(f"wrote {out}")


# ---------------------------------------------------------------- Fashion-MNIST


def fmnist(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    full = load_dataset("fashion-mnist", "train", limit=args.train_limit)
    train, val = full.split_off(args.val_size, seed=args.seed)
    test = load_dataset("fashion-mnist", "test")
    shape = train.spec.input_shape
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.augment,
        seed=args.seed,
        threads=args.threads,
    )
    tag = f"seed{args.seed}_n{len(train)}{'_aug' if args.augment else ''}"
    WORK.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    # teacher: trained once per (seed, epochs, data) and reused
    teacher_path = (
        Path(args.teacher_weights) if args.teacher_weights else WORK / f"fmnist_teacher_{tag}_e{args.teacher_epochs}.pt"
    )
    if teacher_path.exists():
        _say(f"teacher: reusing {teacher_path}")
        teacher = load_model("small_cnn", teacher_path)
        teacher_history = None
    else:
        _say(f"teacher small_cnn: {args.teacher_epochs} epochs on {len(train)} images")
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        teacher = load_model("small_cnn")
        tcfg = TrainConfig(**{**asdict(cfg), "epochs": args.teacher_epochs})
        ckpt = WORK / f"fmnist_teacher_{tag}_e{args.teacher_epochs}.ckpt"
        res = fit(teacher, train, tcfg, val=val, checkpoint=ckpt, description="teacher")
        torch_save(teacher.state_dict(), teacher_path)
        ckpt.unlink(missing_ok=True)
        teacher_history = res.history
        seconds["teacher"] = time.perf_counter() - t0
    teacher.eval()

    students: dict[str, nn.Module] = {}
    histories: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for kind in ("labels_only", "distilled"):
        torch.manual_seed(args.seed)  # the same initial student for both
        student = load_model("small_cnn_half")
        ckpt = WORK / f"fmnist_student_{kind}_{tag}_e{args.epochs}_T{args.temperature}_a{args.alpha}.ckpt"
        _say(f"student small_cnn_half ({kind}): {args.epochs} epochs on {len(train)} images")
        t0 = time.perf_counter()
        if kind == "labels_only":
            histories[kind] = fit(student, train, cfg, val=val, checkpoint=ckpt, description=kind).history
        else:
            r = distill(
                student,
                teacher,
                train,
                cfg,
                temperature=args.temperature,
                alpha=args.alpha,
                val=val,
                checkpoint=ckpt,
                description=kind,
            )
            histories[kind] = r.history
            extra["cache"] = r.cache
        seconds[kind] = time.perf_counter() - t0
        ckpt.unlink(missing_ok=True)
        torch_save(student.state_dict(), ckpt.with_suffix(".pt"))
        students[kind] = student.eval()

    _say(f"testing on {len(test)} test images")
    t_metrics, t_right = _test(teacher, test)
    ce_metrics, ce_right = _test(students["labels_only"], test)
    kd_metrics, kd_right = _test(students["distilled"], test)
    # diagnostics: how good the soft targets were, and how closely each student follows the teacher
    teacher_logits = predict_logits(teacher, test)
    for kind, m in (("labels_only", ce_metrics), ("distilled", kd_metrics)):
        m.update(fidelity(predict_logits(students[kind], test), teacher_logits))
    t_train = accuracy_metrics(predict_logits(teacher, train), train.y)
    result = {
        "experiment": "fmnist",
        "command": " ".join(["python", *sys.argv]),
        "data": {"dataset": "fashion-mnist", "train": len(train), "val": len(val), "test": len(test)},
        "config": asdict(cfg)
        | {"teacher_epochs": args.teacher_epochs, "temperature": args.temperature, "alpha": args.alpha},
        "teacher": {"model": "small_cnn", "weights": str(teacher_path), "test": t_metrics, "history": teacher_history}
        | {"train_eval_mode": t_train}
        | _describe(teacher, shape),
        "student_labels_only": {"model": "small_cnn_half", "test": ce_metrics, "history": histories["labels_only"]}
        | _describe(students["labels_only"], shape),
        "student_distilled": {"model": "small_cnn_half", "test": kd_metrics, "history": histories["distilled"]}
        | _describe(students["distilled"], shape)
        | {"cache": extra.get("cache")},
        "kd_minus_labels_only_top1": kd_metrics["top1"] - ce_metrics["top1"],
        "paired_test": _paired(kd_right, ce_right),  # a = distilled, b = labels only
        "seconds": seconds | {"total": time.perf_counter() - t_start},
        "environment": _env(),
    }
    result["student_macs_fraction_of_teacher"] = result["student_distilled"]["macs"] / result["teacher"]["macs"]
    _finish(Path(args.out or WORK / f"fmnist_{tag}_e{args.epochs}_T{args.temperature}_a{args.alpha}.json"), result)


# ---------------------------------------------------------------- CIFAR-10 sample


def cifar(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    train = load_dataset("cifar10-sample", "train")
    test = load_dataset("cifar10-sample", "test")
    shape = train.spec.input_shape
    teacher = load_model("cifar_resnet56", CIFAR_WEIGHTS / "resnet56-4bfd9763.th")
    student_weights = CIFAR_WEIGHTS / "resnet20-12fca82f.th"
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        augment=args.augment,
        seed=args.seed,
        threads=args.threads,
        weight_decay=args.weight_decay,
    )
    WORK.mkdir(parents=True, exist_ok=True)
    t_metrics, _ = _test(teacher, test)
    before = load_model("cifar_resnet20", student_weights)
    b_metrics, b_right = _test(before, test)
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for kind in ("distilled", "labels_only"):
        student = load_model("cifar_resnet20", student_weights)
        ckpt = WORK / f"cifar_{kind}_seed{args.seed}_e{args.epochs}.ckpt"
        _say(f"cifar_resnet20 ({kind}): {args.epochs} epochs on {len(train)} images")
        t0 = time.perf_counter()
        if kind == "distilled":
            r = distill(student, teacher, train, cfg, temperature=args.temperature, alpha=args.alpha,
                        checkpoint=ckpt, description=kind)  # fmt: skip
            hist, cache = r.history, r.cache
        else:
            hist, cache = fit(student, train, cfg, checkpoint=ckpt, description=kind).history, None
        seconds[kind] = time.perf_counter() - t0
        ckpt.unlink(missing_ok=True)
        m, right = _test(student.eval(), test)
        out[kind] = {"test": m, "history": hist, "cache": cache, "vs_before": _paired(right, b_right)}
    result = {
        "experiment": "cifar",
        "command": " ".join(["python", *sys.argv]),
        "data": {"dataset": "cifar10-sample", "train": len(train), "test": len(test)},
        "config": asdict(cfg) | {"temperature": args.temperature, "alpha": args.alpha},
        "teacher": {"model": "cifar_resnet56", "test": t_metrics} | _describe(teacher, shape),
        "student_before": {"model": "cifar_resnet20 (pretrained)", "test": b_metrics} | _describe(before, shape),
        "student_distilled": out["distilled"],
        "student_labels_only": out["labels_only"],
        "distilled_minus_before_top1": out["distilled"]["test"]["top1"] - b_metrics["top1"],
        "seconds": seconds | {"total": time.perf_counter() - t_start},
        "environment": _env(),
    }
    _finish(Path(args.out or WORK / f"cifar_seed{args.seed}_e{args.epochs}.json"), result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="experiment", required=True)
    f = sub.add_parser("fmnist", help="KD student vs labels-only student on Fashion-MNIST")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--epochs", type=int, default=4, help="student epochs (both students)")
    f.add_argument("--teacher-epochs", type=int, default=4)
    f.add_argument("--teacher-weights", help="use this trained small_cnn instead of training one")
    f.add_argument("--lr", type=float, default=0.05)
    f.add_argument("--batch-size", type=int, default=128)
    f.add_argument("--augment", action="store_true", help="random crops/flips (teacher logits then not cached)")
    f.add_argument("--temperature", type=float, default=4.0)
    f.add_argument("--alpha", type=float, default=0.9)
    f.add_argument("--val-size", type=int, default=5000)
    f.add_argument("--train-limit", type=int, default=None, help="use only the first N of the 60,000 images")
    f.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    f.add_argument("--out", help="JSON file (default runs/distill_experiments/fmnist_*.json)")
    f.set_defaults(fn=fmnist)
    c = sub.add_parser("cifar", help="resnet56 -> pretrained resnet20 on the 2,000 cifar10-sample images")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--epochs", type=int, default=3)
    c.add_argument("--lr", type=float, default=0.005)
    c.add_argument("--weight-decay", type=float, default=1e-4)
    c.add_argument("--batch-size", type=int, default=128)
    c.add_argument("--no-augment", dest="augment", action="store_false")
    c.add_argument("--temperature", type=float, default=4.0)
    c.add_argument("--alpha", type=float, default=0.9)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", help="JSON file (default runs/distill_experiments/cifar_*.json)")
    c.set_defaults(fn=cifar)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
