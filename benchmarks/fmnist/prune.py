"""Structured pruning of the Fashion-MNIST demo model (small_cnn) to half its MACs, with fine-tuning.

One recipe run: train the demo baseline exactly as ``recipes/demo.yaml`` does (4 epochs on the 55,000
training images left after a 5,000-image validation slice) -> test accuracy -> channel sensitivity on
the validation slice -> channel pruning to >= 50% fewer MACs (widths rounded to multiples of 8),
fine-tuned with KD from the unpruned model on the training images -> test accuracy on all 10,000
test images. Writes ``summary.json`` into the output folder.

    benchmarks/fmnist/run.sh prune
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "prune_fmnist")
    ap.add_argument("--macs", type=float, default=0.5, help="fraction of MACs to remove")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a busy box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from slimline import run
    from slimline.api import write_json

    recipe = {
        "name": "prune-fmnist",
        "model": "small_cnn",
        "data": {"name": "fashion-mnist", "val_size": 5000},
        "seed": 0,
        "steps": [
            {"train": {"epochs": 4, "lr": 0.05, "batch_size": 128}},
            {"evaluate": {"split": "test", "fidelity": False}},
            {"sensitivity": {"kind": "channel", "samples": 1000, "ratios": [0.25, 0.5, 0.75]}},
            {
                "prune": {
                    "method": "channel",
                    "target": {"macs": args.macs},
                    "round_to": 8,
                    "finetune": {"epochs": args.epochs, "lr": args.lr, "batch_size": 128, "kd": True},
                }
            },
            {"evaluate": {"split": "test", "fidelity": False}},
        ],
        "output_dir": str(args.out),
    }
    t0 = time.perf_counter()
    res = run(recipe)
    before = res["stages"][2]["record"]["metrics"]
    rec = res["stages"][4]["record"]
    after = res["stages"][5]["record"]["metrics"]
    summary = {
        "command": f"benchmarks/fmnist/run.sh prune --macs {args.macs} --epochs {args.epochs} --lr {args.lr}",
        "size_before": rec["size_before"],
        "size_after": rec["size_after"],
        "reduction": rec["reduction"],
        "widths": rec["plan"]["keep"],
        "test_top1_before": before["top1"],
        "test_top1_after": after["top1"],
        "test_drop_points": before["top1"] - after["top1"],
        "test_n": after["n"],
        "finetune_loss": rec["schedule"][-1].get("finetune", {}).get("loss"),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "note": "shared, busy 2-core machine",
    }
    write_json(args.out / "summary.json", summary)
    r = summary["reduction"]
    print(f"MACs -{100 * r['macs']:.1f}%  params -{100 * r['params']:.1f}%  widths {summary['widths']}")
    print(f"test top-1 {before['top1']:.2f}% -> {after['top1']:.2f}% (n={after['n']})", flush=True)


if __name__ == "__main__":
    main()
