"""Structured pruning of the pretrained CIFAR ResNet-56 for real speed, recovered with KD.

One recipe run (baseline test accuracy -> prune [block + channel, latency-aware, KD fine-tuning on the
cifar10-sample training images] -> test accuracy), then ONNX Runtime fp32 throughput of the original
and the pruned model at batch 64 with 2 threads, measured in the same process, alternating, after
warm-up, as the median of many repetitions. Writes ``summary.json`` into the output folder.

    benchmarks/prune_resnet56/run.sh prune

Reuses ``sensitivity_channel.json`` / ``sensitivity_block.json`` from ``--sensitivity-dir`` when they
exist (``benchmarks/prune_resnet56/sensitivity.py --kinds channel block`` makes them); otherwise the
prune step measures them itself.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def ort_throughput(
    models: dict[str, torch.nn.Module], batch: int = 64, threads: int = 2, reps: int = 60
) -> dict[str, Any]:
    """Images per second of each model in ONNX Runtime (CPU, fp32), measured alternately in one loop."""
    import onnxruntime as ort

    from slimline.api import export_onnx

    x = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models.items():
            path = export_onnx(m.eval(), (3, 32, 32), Path(tmp) / f"{name}.onnx")
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for _ in range(5):  # warm-up
        for k, s in sessions.items():
            s.run(None, feeds[k])
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(reps):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "batch": batch,
        "threads": threads,
        "reps": reps,
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "images_per_s": {k: batch / v for k, v in med.items()},
        "p10_p90_ms": {
            k: [1e3 * float(np.percentile(v, 10)), 1e3 * float(np.percentile(v, 90))] for k, v in times.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "prune_resnet56" / "run")
    ap.add_argument("--sensitivity-dir", type=Path, default=ROOT / "runs" / "prune_resnet56")
    ap.add_argument("--target", nargs="+", default=["params=0.5", "macs=0.5", "speedup=1.8"])
    ap.add_argument("--method", default="block+channel")
    ap.add_argument(
        "--blocks", type=int, default=None, help="force this many blocks out (default: the allocator decides)"
    )
    ap.add_argument("--max-ratio", type=float, default=0.75)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--epochs-per-step", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--warmup", type=float, default=0.0, help="warm-up epochs of the fine-tuning learning rate")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--mixup", type=float, default=0.0, help="match the teacher on mixup-blended inputs (Beta a)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for fine-tuning (1 is faster on a busy box)")
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--weights", default=str(WEIGHTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from slimline import run
    from slimline.api import Artifact, load_torch, write_json

    target = {k: float(v) for k, v in (t.split("=") for t in args.target)}
    files = [
        str(p)
        for p in (args.sensitivity_dir / "sensitivity_channel.json", args.sensitivity_dir / "sensitivity_block.json")
        if p.exists()
    ]
    prune: dict[str, Any] = {
        "method": args.method,
        "target": target,
        "blocks": args.blocks,
        "round_to": 8,
        "max_ratio": args.max_ratio,
        "importance": "l1",
        "sensitivity": {"files": files, "samples": 128},
        "latency": {"runtime": "onnxruntime", "batch_size": 64, "threads": 2, "min_seconds": 1.0},
        "schedule": {"steps": args.steps},
        "finetune": {
            "epochs": args.epochs,
            "epochs_per_step": args.epochs_per_step,
            "lr": args.lr,
            "warmup_epochs": args.warmup,
            "batch_size": args.batch_size,
            "kd": True,
            "temperature": args.temperature,
            "alpha": args.alpha,
            "mixup": args.mixup,
        },
    }
    recipe = {
        "name": "prune-resnet56",
        "model": {"name": "cifar_resnet56", "weights": args.weights},
        "data": {"name": "cifar10-sample", "val_size": 200},
        "seed": 0,
        "steps": [
            {"evaluate": {"split": "test", "fidelity": False}},
            {"prune": prune},
            {"evaluate": {"split": "test"}},
        ],
        "output_dir": str(args.out),
    }
    t0 = time.perf_counter()
    res = run(recipe)
    wall = time.perf_counter() - t0
    base_test = res["stages"][1]["record"]["metrics"]
    rec = res["stages"][2]["record"]
    test = res["stages"][3]["record"]["metrics"]
    original = load_torch(Artifact.load(args.out / "00_baseline"))
    pruned = load_torch(Artifact.load(args.out / "02_prune"))
    load_before = os.getloadavg()
    thr = ort_throughput({"original": original, "pruned": pruned}, reps=args.reps)
    thr["speedup"] = thr["images_per_s"]["pruned"] / thr["images_per_s"]["original"]
    summary = {
        "command": "benchmarks/prune_resnet56/run.sh prune "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "size_before": rec["size_before"],
        "size_after": rec["size_after"],
        "reduction": rec["reduction"],
        "blocks_removed": rec["plan"]["blocks"],
        "widths": rec["plan"]["keep"],
        "test_top1_before": base_test["top1"],
        "test_top1_after": test["top1"],
        "test_drop_points": base_test["top1"] - test["top1"],
        "test_n": test["n"],
        "agreement_with_original": test.get("top1_agreement"),
        "ort_throughput": thr,
        "latency_prediction": rec.get("latency_ms"),
        "finetune_loss": rec["schedule"][-1].get("finetune", {}).get("loss"),
        "wall_seconds": round(wall, 1),
        "loadavg_during_throughput": load_before,
        "note": "shared, busy 2-core machine: timings are noisy; both models measured alternately in one process",
    }
    write_json(args.out / "summary.json", summary)
    r, ips = summary["reduction"], thr["images_per_s"]
    print(
        f"params -{100 * r['params']:.1f}%  MACs -{100 * r['macs']:.1f}%  blocks removed {len(rec['plan']['blocks'])}"
    )
    print(f"test top-1 {base_test['top1']:.1f}% -> {test['top1']:.1f}% (n={test['n']})")
    print(
        f"ONNX Runtime fp32 b64 2 threads: {ips['original']:.0f} -> {ips['pruned']:.0f} img/s ({thr['speedup']:.2f}x)"
    )
    print(f"wrote {args.out / 'summary.json'}", flush=True)


if __name__ == "__main__":
    main()
