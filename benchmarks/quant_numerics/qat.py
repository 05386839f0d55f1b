"""Where post-training quantization loses accuracy and QAT does not: a ResNet with outlier weight channels.

The model is the pretrained cifar_resnet20 given outlier weights on its dead channels
(``slimline.quant.demo_models.outlier_resnet``: float accuracy unchanged, every output channel of
the affected convolutions gets a weight range MAGNITUDE times too wide). Runs, through slimline's
own steps, on the 1,000 cifar10-sample test images:

* float (torch runtime);
* PTQ via ``quantize`` with ONNX Runtime (min-max and percentile calibration; 7-bit weights as chosen
  on x86 without VNNI, and 8-bit ``reduce_range: false``) and OpenVINO/NNCF;
* QAT via the ``qat`` step (``slimline.train.fit`` on the fake-quantized model, LSQ ranges), exported
  as QDQ ONNX and run by ONNX Runtime in int8.

    benchmarks/quant_numerics/run.sh qat

Writes OUT/summary.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet20-12fca82f.th"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/quant_qat_demo"))
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--magnitude", type=float, default=10.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--no-openvino", action="store_true")
    args = ap.parse_args()

    from slimline import run

    t0 = time.time()
    model = {
        "name": "slimline.quant.demo_models:outlier_resnet",
        "kwargs": {"depth": 20, "checkpoint": str(args.weights), "magnitude": args.magnitude},
    }
    data = {"name": "cifar10-sample", "test_limit": 1000}
    plans: dict[str, list[dict[str, Any]]] = {
        "ptq_ort_minmax": [
            {"evaluate": {"fidelity": False}},
            {"quantize": {"backend": "onnxruntime"}},
            {"evaluate": {}},
        ],
        "ptq_ort_percentile": [{"quantize": {"backend": "onnxruntime", "calibration": "percentile"}}, {"evaluate": {}}],
        "ptq_ort_full_range": [{"quantize": {"backend": "onnxruntime", "reduce_range": False}}, {"evaluate": {}}],
        "qat_ort": [{"qat": {"epochs": args.epochs, "lr": args.lr}}, {"evaluate": {}}],
    }
    if not args.no_openvino:
        plans["ptq_openvino"] = [{"quantize": {"backend": "openvino"}}, {"evaluate": {}}]
    rows: list[dict[str, Any]] = []
    float_top1 = None
    for name, steps in plans.items():
        res = run(
            {"name": name, "model": model, "data": data, "seed": 0, "steps": steps, "output_dir": str(args.out / name)}
        )
        evals = [s["record"]["metrics"] for s in res["stages"] if s["step"] == "evaluate"]
        if float_top1 is None:
            float_top1 = evals[0]["top1"]
            rows.append({"method": "float (torch)", "top1": float_top1, "drop": 0.0, "n": evals[0]["n"]})
        m = evals[-1]
        made = res["stages"][-2]["record"]
        row = {
            "method": name,
            "top1": m["top1"],
            "drop": float_top1 - m["top1"],
            "n": m["n"],
            "runtime": m["runtime"],
            "top1_ci95": m["top1_ci95"],
            "agreement_with_float": m.get("top1_agreement"),
            "artifact": str(args.out / name / res["final_artifact"]),
        }
        if "history" in made:
            row["qat_history"] = made["history"]
            row["qat_val"] = {"before": made["val_before"]["top1"], "after": made["val"]["top1"]}
            row["onnxruntime_check"] = made["onnxruntime"]
        rows.append(row)
        print(f"{name}: top-1 {m['top1']:.2f} (drop {row['drop']:+.2f})", flush=True)
    from slimline.api import environment

    summary = {
        "model": model,
        "data": data,
        "rows": rows,
        "environment": environment(),
        "seconds": time.time() - t0,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n| method | runtime | top-1 % | drop vs float (pts) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r.get('runtime', 'torch')} | {r['top1']:.2f} | {r['drop']:+.2f} |")
    print(f"\nwrote {args.out / 'summary.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
