"""Sensitivity curves (JSON + PNG) of the pretrained CIFAR ResNet-56, timed.

Measured on a seeded validation slice of the 2,000 cifar10-sample training images (the same slice a
recipe with ``val_size: 200, seed: 0`` uses), never on the test images.

    benchmarks/prune_resnet56/run.sh sensitivity --kinds weight --samples 64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from slimline.api import DEFAULT_RATIOS, load_dataset, load_model, plot_sensitivity, sensitivity, write_json

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kinds", nargs="+", default=["weight"], choices=["weight", "channel", "block"])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS))
    ap.add_argument("--val-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--adaptive-tol", type=float, default=None, help="bisection: measure only where loss moves")
    ap.add_argument("--weights", default=str(WEIGHTS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "prune_resnet56")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("cifar_resnet56", args.weights)
    _, val = load_dataset("cifar10-sample", "train").split_off(args.val_size, seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in args.kinds:
        t0 = time.perf_counter()
        res = sensitivity(
            model, val, kind, args.ratios, args.samples, description=f"ResNet-56 {kind}", adaptive_tol=args.adaptive_tol
        )
        res["model"] = "cifar_resnet56"
        res["metric"] = "loss"
        res["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_json(args.out / f"sensitivity_{kind}.json", res)
        plot_sensitivity(
            res,
            args.out / f"sensitivity_{kind}.png",
            f"CIFAR ResNet-56: {kind} sensitivity ({res['samples']} val samples)",
        )
        print(
            f"{kind}: {len(res['units'])} units, {res['measurements']} measurements, {res['wall_seconds']} s, "
            f"backend {res['backend']}, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
