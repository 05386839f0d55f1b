"""Compare pruning plans for the CIFAR ResNet-56 example by the speed they buy, before any recovery.

For each candidate, the example's prune step (examples/cifar_resnet56.yaml, same sensitivity settings)
is run with its recovery switched off (``finetune: {epochs: 0}``), then fused, exported to ONNX and
quantized to int8 by NNCF for OpenVINO, as the example does. Every int8 model is then timed on
OpenVINO at batch 64, and the unpruned fp32 model in PyTorch eager, in one invocation, so the ratios
are measured side by side. The weights are not recovered, so nothing here says how accurate a plan
will end up: the planner's ``predicted_drop`` (the sum of the sensitivity-curve losses of its steps,
measured on the 200 held-out training images) is the only accuracy-side figure, and no test image is
used.

Candidates: ``blocks12`` (12 blocks, least sensitive first, then channels to -50% params / -45% MACs:
the example before session 6) and ``speedupX`` (the same targets plus a measured speed-up of X on
ONNX Runtime at batch 64; blocks and channels weighed by their latency saving; with ``--calibrate N``
re-planned until the pruned graph, timed before recovery, reaches X: ``latency.calibrate``).

    benchmarks/prune_resnet56/run.sh plans --speedups 2.2 2.3 2.4 2.5

The first candidate measures the block and channel sensitivity (about 4 minutes here) and writes it
into its prune folder; the others read it from there (``--sensitivity-dir`` reuses an earlier prune
folder's, e.g. the example run's ``03_prune``). Writes OUT/summary.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "cifar_resnet56.yaml"


def sensitivity_files(prune_dir: Path) -> list[str]:
    """The block and channel sensitivity results a prune step wrote into its folder."""
    return [str(prune_dir / f"sensitivity_{k}.json") for k in ("block", "channel")]


def candidate(
    example: dict[str, Any], name: str, speedup: float | None, out: Path, sens_files: list[str], calibrate: int = 0
) -> dict[str, Any]:
    r = copy.deepcopy(example)
    r["name"], r["output_dir"] = name, str(out / name)
    r["model"]["weights"] = str((ROOT / r["model"]["weights"]).resolve())
    prune = copy.deepcopy(next(s["prune"] for s in r["steps"] if "prune" in s))
    prune["finetune"] = {"epochs": 0}
    prune["sensitivity"] = {**prune.get("sensitivity", {}), "files": sens_files}
    target = {k: v for k, v in prune["target"].items() if k != "speedup"}
    if speedup is None:
        prune["blocks"] = 12
    else:
        prune.pop("blocks", None)
        target["speedup"] = speedup
        if calibrate:
            prune["latency"] = {**prune.get("latency", {}), "calibrate": calibrate}
    prune["target"] = target
    r["steps"] = [
        {"prune": prune},
        {"fuse": {"layout": "auto"}},
        {"export_onnx": {}},
        {"quantize": {"backend": "openvino", "format": "onnx"}},
    ]
    r.pop("benchmark", None)
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speedups", type=float, nargs="*", default=[2.2, 2.3, 2.4, 2.5])
    ap.add_argument("--out", type=Path, default=Path("runs/prune_resnet56_plans"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument(
        "--sensitivity-dir",
        type=Path,
        default=None,
        help="a prune folder holding sensitivity_block.json and sensitivity_channel.json to reuse",
    )
    ap.add_argument(
        "--calibrate",
        type=int,
        default=0,
        help="latency.calibrate for the speedup candidates (re-plan until the pruned graph times at X)",
    )
    args = ap.parse_args()

    from slimline import run
    from slimline.api import bench_artifacts

    t0 = time.time()
    example = yaml.safe_load(EXAMPLE.read_text())
    rows: list[dict[str, Any]] = []
    sens = sensitivity_files(args.sensitivity_dir) if args.sensitivity_dir is not None else []
    for speedup in [None, *args.speedups]:
        name = "blocks12" if speedup is None else f"speedup{speedup:g}" + ("_cal" if args.calibrate else "")
        res = run(candidate(example, name, speedup, args.out, sens, args.calibrate))
        rec = next(s["record"] for s in res["stages"] if s["step"] == "prune")
        if not sens:  # measured by the first candidate: the others read it
            sens = sensitivity_files(args.out / name / "01_prune")
        plan = rec["plan"]
        rows.append(
            {
                "name": name,
                "speedup_target": speedup,
                "blocks": sorted(plan["blocks"]),
                "keep": plan["keep"],
                "predicted": plan["predicted"],
                "predicted_drop": plan["predicted_drop"],
                "int8": str(args.out / name / "04_quantize"),
                "baseline": str(args.out / name / "00_baseline"),
                "latency_ms": rec.get("latency_ms"),
                "calibration": rec.get("latency_calibration"),
            }
        )
        cal = "".join(
            f", round {r['round']}: asked {r['asked_speedup']:.2f}x, measured {r['measured_speedup']:.2f}x"
            for r in rec.get("latency_calibration") or []
        )
        print(f"{name}: {len(plan['blocks'])} blocks, predicted drop {plan['predicted_drop']:.3f}{cal}", flush=True)

    kw = {"threads": args.threads, "min_seconds": args.min_seconds, "min_runs": 10, "peak": False}
    eager = bench_artifacts([rows[0]["baseline"]], ["torch"], [64], **kw)
    ov = bench_artifacts([row["int8"] for row in rows], ["openvino"], [64], **kw)
    base_tp = eager["results"][0]["throughput"]
    tp = {r["artifact_path"]: r["throughput"] for r in ov["results"]}
    print(f"\nunpruned fp32, PyTorch eager, batch 64: {base_tp:.0f} img/s\n")
    print("| plan | blocks removed | params / MACs removed | predicted drop | int8 OpenVINO img/s | x eager |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        row["int8_img_s"] = tp.get(row["int8"])
        row["x_eager"] = row["int8_img_s"] / base_tp if row["int8_img_s"] else None
        p = row["predicted"]
        print(
            f"| {row['name']} | {len(row['blocks'])} | -{100 * p['params']:.1f}% / -{100 * p['macs']:.1f}% "
            f"| {row['predicted_drop']:.3f} | {row['int8_img_s']:.0f} | {row['x_eager']:.2f} |"
        )
    from slimline.api import environment

    summary = {
        "eager_img_s": base_tp,
        "rows": rows,
        "threads": args.threads,
        "environment": environment(),
        "bench": {"eager": eager, "openvino": ov},
        "seconds": time.time() - t0,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{args.out / 'summary.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
