"""ONNX and OpenVINO exports of pretrained cifar_resnet56 against PyTorch on the 1,000 CIFAR-10 sample test images.

Usage: benchmarks/export_parity/run.sh [--weights PATH] [--keep DIR]

Through the public API only: ``slimline.save_torch`` of the pretrained model, ``slimline.apply_step``
``export_onnx`` and ``export_openvino`` (each step checks parity against PyTorch on a small batch and records
it), then ``slimline.evaluate_model`` of each artifact on its runtime, with the PyTorch artifact as the
reference (top-1 with n and its 95% interval, top-1 agreement and logit cosine against PyTorch); the largest
absolute logit difference from PyTorch over all test images comes from ``slimline.runtimes.open_session`` on each
artifact.

Prints one line per runtime to stderr and a JSON summary as the last line of stdout (``--json FILE`` also
writes it): {"n", "top1": {torch, onnxruntime, openvino}, "top1_ci95": {...}, "top1_agreement": {...},
"logit_cosine": {...}, "max_abs_logit_diff": {...}, "parity": {onnx, openvino}, "checks": {...}}. ``checks``
holds what the study must show, each true or false: the same top-1 on every runtime, 100% agreement with
PyTorch, both export parity checks passed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"
META = {"model": "cifar_resnet56", "input_shape": [3, 32, 32], "num_classes": 10}


def max_abs_logit_diff(arts: dict[str, Any], batch: int = 100) -> dict[str, float]:
    """The largest |logit - PyTorch logit| over the cifar10-sample test images, per runtime (its own artifact)."""
    import numpy as np

    import slimline
    from slimline.api import open_session

    ds = slimline.load_dataset("cifar10-sample", "test")
    batches = [np.ascontiguousarray(ds.normalize(ds.x[i : i + batch]).numpy()) for i in range(0, len(ds), batch)]
    logits = {}
    for rt, art in arts.items():
        session = open_session(art, rt)
        logits[rt] = np.concatenate([np.asarray(session.run(b)) for b in batches])
    return {rt: float(np.abs(lg - logits["torch"]).max()) for rt, lg in logits.items()}


def main() -> None:
    import slimline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--keep", type=Path, default=None, help="keep the artifacts here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary to this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        base = slimline.save_torch(slimline.load_model("cifar_resnet56", args.weights), out / "torch", META, [])
        arts = {
            "torch": base,
            "onnxruntime": slimline.apply_step("export_onnx", base, out / "onnx"),
            "openvino": slimline.apply_step("export_openvino", base, out / "openvino"),
        }
        results = {
            rt: slimline.evaluate_model(art, "cifar10-sample", reference=base, runtime=rt) for rt, art in arts.items()
        }
        max_diff = max_abs_logit_diff(arts)
        parity = {"onnx": arts["onnxruntime"].lineage[-1]["parity"], "openvino": arts["openvino"].lineage[-1]["parity"]}
    summary: dict[str, Any] = {"n": results["torch"]["n"]}
    for key in ("top1", "top1_ci95", "top1_agreement", "logit_cosine"):
        summary[key] = {rt: r[key] for rt, r in results.items()}
    summary["max_abs_logit_diff"] = max_diff
    summary["parity"] = parity
    for rt, r in results.items():
        print(
            f"{rt:12s} top-1 {r['top1']:.2f}% (n={r['n']})  agreement with PyTorch {r['top1_agreement']:.2f}%  "
            f"logit cosine {r['logit_cosine']:.6f}  max |logit diff| {max_diff[rt]:.2e}",
            file=sys.stderr,
        )
    summary["checks"] = {
        "same_top1_every_runtime": len(set(summary["top1"].values())) == 1,
        "agreement_100_every_runtime": all(a == 100.0 for a in summary["top1_agreement"].values()),
        "export_parity_passed": all(p.get("passed") for p in parity.values()),
    }
    if args.json:
        from slimline.api import write_json

        write_json(args.json, summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
