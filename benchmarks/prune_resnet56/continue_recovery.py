"""Continue the recovery of a pruned CIFAR ResNet-56: more KD + stage-output matching epochs.

Takes the ``prune`` stage of a run of ``examples/cifar_resnet56.yaml`` (or any pruned ResNet-56
artifact), fine-tunes it further with the same loss as the recipe (KD from the unpruned pretrained
model, mixup-blended inputs, normalised MSE on the outputs of layer1/2/3) on the same 1,800
training images (the recipe's ``val_size: 200, seed: 0`` split), saves the result as a new
artifact and reports top-1 on the 1,000 test images against the unpruned model.

    benchmarks/prune_resnet56/run.sh continue runs/benchmarks/cifar_resnet56/run/03_prune --epochs 60 --lr 0.005
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pruned", type=Path, help="the pruned artifact folder")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "prune_resnet56" / "continued")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--mixup", type=float, default=0.4)
    ap.add_argument("--feature-weight", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    import torch

    from slimline.api import (
        Artifact,
        FinetuneConfig,
        count_macs,
        count_params,
        evaluate,
        finetune,
        load_dataset,
        load_model,
        load_torch,
        save_torch,
        write_json,
    )

    torch.set_num_threads(args.threads)
    t0 = time.time()
    art = Artifact.load(args.pruned)
    student = load_torch(art)
    teacher = load_model("cifar_resnet56", args.weights).eval()
    train, val = load_dataset("cifar10-sample", "train").split_off(200, seed=0)
    test = load_dataset("cifar10-sample", "test")
    before = evaluate(student, test)
    cfg = FinetuneConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=64,
        kd=True,
        temperature=4.0,
        mixup=args.mixup,
        feature_layers=("layer1", "layer2", "layer3"),
        feature_weight=args.feature_weight,
        threads=args.threads,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rec = finetune(
        student,
        train,
        cfg,
        args.epochs,
        teacher=copy.deepcopy(teacher),
        val=val,
        checkpoint=args.out / "checkpoint.pt",
        description="continue",
    )
    after = evaluate(student.eval(), test)
    ref = evaluate(teacher, test)
    record = {"step": "continue", "epochs": args.epochs, "lr": args.lr}
    out = save_torch(student, args.out / "artifact", art.meta, [*art.lineage, record])
    shape = (3, 32, 32)
    summary = {
        "command": "benchmarks/prune_resnet56/run.sh continue " + " ".join(f"{k}={v}" for k, v in vars(args).items()),
        "params": [count_params(teacher), count_params(student)],
        "macs": [count_macs(teacher, shape), count_macs(student, shape)],
        "test_top1": {"unpruned": ref["top1"], "pruned_before": before["top1"], "pruned_after": after["top1"]},
        "drop_points": ref["top1"] - after["top1"],
        "test_n": after["n"],
        "loss": rec.get("loss"),
        "val_history": [h.get("val_top1") for h in rec.get("history", [])],
        "artifact": str(out.path),
        "seconds": round(time.time() - t0, 1),
    }
    write_json(args.out / "summary.json", summary)
    print(
        f"test top-1 (n={after['n']}): unpruned {ref['top1']:.2f}%, pruned {before['top1']:.2f}% -> "
        f"{after['top1']:.2f}% after {args.epochs} more epochs (drop {summary['drop_points']:.2f} pts)"
    )


if __name__ == "__main__":
    main()
