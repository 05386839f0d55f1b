"""Compare recovery settings for one fixed ResNet-56 pruning plan, choosing on training data only.

The plan (blocks removed, kept widths) is read from the record of a ``prune`` stage, e.g. the one
``slimline run examples/cifar_resnet56.yaml`` writes, or given as blocks/widths in a JSON file. The
pretrained model is pruned to it, BatchNorm statistics re-estimated, and fine-tuned with the chosen
recovery (KD from the unpruned model, optional mixup/CutMix, stage-output matching, weight
averaging) on the 1,800 training images left after the recipe's 200-image validation slice.

The 200 validation images were part of the pretrained model's training set (it scores 100% on
them), so their top-1 says little about generalisation. The script therefore reports, as the
figure to choose settings by, the student's *fidelity*: top-1 agreement with the unpruned model on
blended validation images (each validation image mixed with another by mixup and by CutMix,
4 blends per image, fixed seed) - inputs neither model has seen. The 1,000 test images are
evaluated once at the end for the record (``--no-test`` skips them).

    benchmarks/prune_resnet56/run.sh recovery --plan runs/benchmarks/cifar_resnet56/run/03_prune/record.json \\
        --epochs 35 --mixup 0.4 --cutmix 1.0 --ema 0.998
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def blended_fidelity(student: Any, teacher: Any, val: Any, blends: int = 4, seed: int = 0) -> dict[str, float]:
    """Top-1 agreement of ``student`` with ``teacher`` on mixup- and CutMix-blended ``val`` images."""
    import torch

    from slimline.api import MixedInputs

    x = torch.from_numpy(val.inputs())
    agree = {"mixup": [], "cutmix": []}
    for kind, (a, c) in {"mixup": (1.0, 0.0), "cutmix": (0.0, 1.0)}.items():
        mixer = MixedInputs(lambda m, xb, yb: (xb, xb), a, seed=seed, cutmix=c)
        with torch.no_grad():
            for _ in range(blends):
                xb = mixer.blend(x)
                agree[kind].append((student(xb).argmax(1) == teacher(xb).argmax(1)).float().mean().item())
    out = {k: 100 * sum(v) / len(v) for k, v in agree.items()}
    out["mean"] = (out["mixup"] + out["cutmix"]) / 2
    out["n"] = len(x) * blends * 2
    return out


def fading_block(block: Any, total_steps: int) -> Any:
    """``a * block(x) + (1 - a) * x`` with ``a`` going from 1 to 0 over ``total_steps`` training calls."""
    import torch
    from torch import nn

    class _Fading(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))
            self.total = max(1, int(total_steps))

        def alpha(self) -> float:
            return max(0.0, 1.0 - float(self.calls) / self.total)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.alpha()
            if self.training and torch.is_grad_enabled():
                self.calls += 1
            return x if a == 0.0 else a * self.block(x) + (1.0 - a) * x

    return _Fading()


def load_plan(path: Path) -> Any:
    from slimline.api import Plan

    rec = json.loads(path.read_text())
    p = rec.get("plan", rec)
    return Plan(
        keep=dict(p.get("keep", {})),
        blocks=list(p.get("blocks", [])),
        channels=dict(p.get("channels", {})),
        round_to=p.get("round_to"),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", type=Path, required=True, help="a prune record.json (its 'plan') or a plan JSON")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=35)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--mixup", type=float, default=0.4)
    ap.add_argument("--cutmix", type=float, default=0.0)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument(
        "--fade-epochs",
        type=int,
        default=0,
        help="remove the plan's blocks gradually: fade them to identity over these first epochs",
    )
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument(
        "--feature-layers",
        default="layer1,layer2,layer3",
        help="comma-separated; '' for none; 'blocks' for the output of every kept residual block",
    )
    ap.add_argument("--feature-weight", type=float, default=2.0)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument(
        "--adversarial",
        type=float,
        default=0.0,
        help="half the batches moved towards student/teacher disagreement by this L-inf step",
    )
    ap.add_argument("--anchor", type=float, default=0.0, help="L2 pull towards the pruned starting weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-test", action="store_true", help="do not evaluate on the test images")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    import torch

    from slimline.api import (
        FinetuneConfig,
        apply_plan,
        count_macs,
        count_params,
        evaluate,
        finetune,
        load_dataset,
        load_model,
        recalibrate_bn,
        write_json,
    )

    torch.set_num_threads(args.threads)
    t0 = time.time()
    plan = load_plan(args.plan)
    teacher = load_model("cifar_resnet56", args.weights).eval()
    student = copy.deepcopy(teacher)
    train, val = load_dataset("cifar10-sample", "train").split_off(200, seed=0)
    fade_record = None
    if args.fade_epochs > 0:
        from slimline.api import Plan, remove_blocks, replace_module

        applied = apply_plan(student, torch.zeros(1, 3, 32, 32), Plan(plan.keep, [], plan.channels, round_to=8))
        recalibrate_bn(student, train.sample(2048, seed=args.seed + 1))
        steps = args.fade_epochs * (len(train) // 64)
        for name in plan.blocks:
            replace_module(student, name, fading_block(student.get_submodule(name), int(0.8 * steps)))
        layers0 = tuple(s for s in args.feature_layers.split(",") if s)
        cfg0 = FinetuneConfig(
            epochs=args.fade_epochs,
            lr=args.lr,
            warmup_epochs=args.warmup,
            batch_size=64,
            kd=True,
            temperature=args.temperature,
            mixup=args.mixup,
            cutmix=args.cutmix,
            jitter=args.jitter,
            feature_layers=layers0,
            feature_weight=args.feature_weight,
            weight_decay=args.weight_decay,
            threads=args.threads,
            seed=args.seed,
        )
        fade_record = finetune(
            student, train, cfg0, args.fade_epochs, teacher=copy.deepcopy(teacher), val=val, description="fading"
        )
        applied["blocks_removed"] = remove_blocks(student, list(plan.blocks))
        recalibrate_bn(student, train.sample(2048, seed=args.seed + 2))
    else:
        applied = apply_plan(student, torch.zeros(1, 3, 32, 32), plan)
        recalibrate_bn(student, train.sample(2048, seed=args.seed + 1))
    layers = tuple(s for s in args.feature_layers.split(",") if s)
    if args.feature_layers == "blocks":
        from torch import nn

        layers = tuple(
            n
            for n, m in student.named_modules()
            if n.count(".") == 1 and n.startswith("layer") and not isinstance(m, nn.Identity)
        )
    cfg = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        warmup_epochs=args.warmup,
        batch_size=64,
        kd=True,
        temperature=args.temperature,
        mixup=args.mixup,
        cutmix=args.cutmix,
        ema=args.ema,
        jitter=args.jitter,
        anchor=args.anchor,
        adversarial=args.adversarial,
        feature_layers=layers,
        feature_weight=args.feature_weight,
        weight_decay=args.weight_decay,
        threads=args.threads,
        seed=args.seed,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    fid_before = blended_fidelity(student.eval(), teacher, val)
    rec = finetune(
        student,
        train,
        cfg,
        args.epochs,
        teacher=copy.deepcopy(teacher),
        val=val,
        checkpoint=args.out / "checkpoint.pt",
        description="recovery",
    )
    student.eval()
    shape = (3, 32, 32)
    summary = {
        "command": "benchmarks/prune_resnet56/run.sh recovery " + " ".join(f"--{k}={v}" for k, v in vars(args).items()),
        "plan": {"blocks": applied["blocks_removed"], "channels": applied["channels"]},
        "params": [count_params(teacher), count_params(student)],
        "macs": [count_macs(teacher, shape), count_macs(student, shape)],
        "loss": rec.get("loss"),
        "val_top1": evaluate(student, val)["top1"],
        "val_fidelity_before": fid_before,
        "val_fidelity": blended_fidelity(student, teacher, val),
        "val_history": [h.get("val_top1") for h in rec.get("history", [])],
        "fade": None
        if fade_record is None
        else {"epochs": args.fade_epochs, "val_history": [h.get("val_top1") for h in fade_record["history"]]},
    }
    if not args.no_test:
        test = load_dataset("cifar10-sample", "test")
        ref, got = evaluate(teacher, test), evaluate(student, test)
        summary["test_top1"] = {"unpruned": ref["top1"], "pruned": got["top1"], "n": got["n"]}
        summary["drop_points"] = ref["top1"] - got["top1"]
    summary["seconds"] = round(time.time() - t0, 1)
    torch.save(student.state_dict(), args.out / "student.pt")
    (args.out / "checkpoint.pt").unlink(missing_ok=True)
    write_json(args.out / "summary.json", summary)
    f = summary["val_fidelity"]
    line = f"fidelity on blended val images {fid_before['mean']:.1f}% -> {f['mean']:.1f}% (n={f['n']})"
    if "test_top1" in summary:
        t = summary["test_top1"]
        line += f"; test top-1 (n={t['n']}) {t['unpruned']:.2f}% -> {t['pruned']:.2f}%"
        line += f" (drop {summary['drop_points']:.2f})"
    print(line)


if __name__ == "__main__":
    main()
