"""int8 CIFAR ResNet-56: ONNX Runtime, OpenVINO (NNCF) and PyTorch FX against fp32 on the same runtime.

One invocation makes every figure of the quantization report for the pretrained cifar_resnet56:
top-1 on the 1,000 cifar10-sample test images (fp32 vs int8, per runtime), model file sizes, and
throughput at batch 64 through slimline's bench harness (each combination in its own process).
Calibration: 300 samples of the training split (the quantize step's default).

    benchmarks/quant_cifar56/run.sh

Writes OUT/summary.json and prints a Markdown table. Timings depend on the machine's load: on a
shared machine, compare only rows measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def recipe(name: str, steps: list[dict[str, Any]], out: Path, weights: Path) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"name": "cifar_resnet56", "weights": str(weights)},
        "data": {"name": "cifar10-sample", "test_limit": 1000},
        "seed": 0,
        "steps": steps,
        "output_dir": str(out / name),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/quant_cifar56"))
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="runtime threads for the benchmark (default: runtime's)")
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch FX backend")
    ap.add_argument("--no-bench", action="store_true")
    args = ap.parse_args()

    from slimline import run
    from slimline.api import Artifact, bench_artifacts, evaluate_artifact, load_dataset

    t0 = time.time()
    out = args.out
    runs = {
        "fp32_onnx": recipe("fp32_onnx", [{"export_onnx": {}}], out, args.weights),
        "fp32_openvino": recipe("fp32_openvino", [{"export_openvino": {"via": "onnx"}}], out, args.weights),
        "int8_onnxruntime": recipe("int8_onnxruntime", [{"quantize": {"backend": "onnxruntime"}}], out, args.weights),
        "int8_openvino": recipe("int8_openvino", [{"quantize": {"backend": "openvino"}}], out, args.weights),
        # the same NNCF quantization written as QDQ ONNX, which OpenVINO runs in int8 (no IR text to store)
        "int8_openvino_onnx": recipe(
            "int8_openvino_onnx", [{"quantize": {"backend": "openvino", "format": "onnx"}}], out, args.weights
        ),
    }
    if not args.no_torch:
        runs["int8_torch"] = recipe("int8_torch", [{"quantize": {"backend": "torch"}}], out, args.weights)
    arts: dict[str, Artifact] = {}
    records: dict[str, Any] = {}
    for key, r in runs.items():
        res = run(r)
        arts[key] = Artifact.load(out / key / res["final_artifact"])
        records[key] = res["stages"][-1]["record"]
    arts["fp32_torch"] = Artifact.load(out / "int8_torch" / "00_baseline") if "int8_torch" in runs else None
    test = load_dataset("cifar10-sample", "test", limit=1000)
    pairs = [
        ("onnxruntime", "onnxruntime", "fp32_onnx", "int8_onnxruntime"),
        ("openvino", "openvino", "fp32_openvino", "int8_openvino"),
        ("openvino (QDQ ONNX)", "openvino", "fp32_openvino", "int8_openvino_onnx"),
    ]
    if "int8_torch" in runs:
        pairs.append(("torch", "torch", "fp32_torch", "int8_torch"))
    rows: list[dict[str, Any]] = []
    for label, runtime, f_key, q_key in pairs:
        f_art, q_art = arts[f_key], arts[q_key]
        fm = evaluate_artifact(f_art, test, runtime=runtime)
        ref = evaluate_artifact(f_art, test, runtime=runtime, return_logits=True)
        qm = evaluate_artifact(q_art, test, runtime=runtime, reference=ref)
        rows.append(
            {
                "label": label,
                "runtime": runtime,
                "fp32_artifact": str(f_art.path),
                "int8_artifact": str(q_art.path),
                "fp32_top1": fm["top1"],
                "int8_top1": qm["top1"],
                "drop": fm["top1"] - qm["top1"],
                "top1_agreement": qm["top1_agreement"],
                "n": qm["n"],
                "fp32_bytes": f_art.size_bytes(),
                "int8_bytes": q_art.size_bytes(),
                "size_ratio": f_art.size_bytes() / q_art.size_bytes(),
                "quantize_record": {
                    k: v
                    for k, v in records[q_key].items()
                    if k
                    in (
                        "backend",
                        "calibration_samples",
                        "left_float",
                        "warnings",
                        "reduce_range",
                        "reduce_range_reason",
                        "quantized_ops",
                        "settings",
                        "preset",
                        "seconds",
                    )
                },
            }
        )
        print(
            f"{label}: top-1 {fm['top1']:.2f} -> {qm['top1']:.2f}, size {rows[-1]['size_ratio']:.2f}x smaller",
            flush=True,
        )
    bench: dict[str, Any] = {}
    if not args.no_bench:
        for row in rows:
            doc = bench_artifacts(
                [row["fp32_artifact"], row["int8_artifact"]],
                [row["runtime"]],
                [args.batch],
                threads=args.threads,
                min_seconds=args.min_seconds,
                min_runs=10,
                peak=False,
            )
            bench[row["runtime"]] = doc
            tp = {r["artifact_path"]: r["throughput"] for r in doc["results"]}
            row["fp32_img_s"], row["int8_img_s"] = tp.get(row["fp32_artifact"]), tp.get(row["int8_artifact"])
            if row["fp32_img_s"] and row["int8_img_s"]:
                row["speedup"] = row["int8_img_s"] / row["fp32_img_s"]
            errs = [r["error"] for r in doc["results"] if r["status"] != "ok"]
            if errs:
                row["bench_errors"] = errs
            print(f"{row['label']}: batch {args.batch} {row['fp32_img_s']} -> {row['int8_img_s']} img/s", flush=True)
    from slimline.api import environment

    summary = {
        "model": "cifar_resnet56",
        "weights": str(args.weights),
        "test_samples": 1000,
        "calibration": "300 training samples",
        "batch": args.batch,
        "threads": args.threads,
        "environment": environment(),
        "rows": rows,
        "bench": bench,
        "seconds": time.time() - t0,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(
        "| runtime | fp32 top-1 | int8 top-1 | drop (pts) | fp32 MB | int8 MB | size ratio | "
        f"fp32 img/s (b{args.batch}) | int8 img/s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:

        def f(v: Any, fmt: str) -> str:
            return format(v, fmt) if isinstance(v, int | float) else "-"

        print(
            f"| {r['label']} | {r['fp32_top1']:.2f} | {r['int8_top1']:.2f} | {r['drop']:+.2f} | "
            f"{r['fp32_bytes'] / 1e6:.3f} | {r['int8_bytes'] / 1e6:.3f} | {r['size_ratio']:.2f}x | "
            f"{f(r.get('fp32_img_s'), '.0f')} | {f(r.get('int8_img_s'), '.0f')} | {f(r.get('speedup'), '.2f')}x |"
        )
    print(f"\nwrote {out / 'summary.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
