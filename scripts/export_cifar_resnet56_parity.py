"""ONNX and OpenVINO exports of pretrained cifar_resnet56 against PyTorch on the 1,000 CIFAR-10 sample test images.

Usage: .venv/bin/python scripts/export_cifar_resnet56_parity.py [--weights PATH] [--out DIR]

Prints one line per runtime to stderr and a JSON summary as the last line of stdout:
{"n", "top1": {torch, onnxruntime, openvino}, "top1_agreement": {...}, "max_abs_logit_diff": {...}, "parity": {...}}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from slimline.data import load_dataset
from slimline.evaluate import accuracy_metrics, fidelity, predict_logits
from slimline.models import load_model
from slimline.onnx_export import export_onnx_artifact
from slimline.openvino_export import export_openvino_artifact
from slimline.runtimes import open_session

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--out", type=Path, default=None, help="keep the exports here (default: a temporary folder)")
    args = ap.parse_args()
    ds = load_dataset("cifar10-sample", "test")
    model = load_model("cifar_resnet56", args.weights)
    meta = {"model": "cifar_resnet56", "input_shape": list(ds.spec.input_shape), "num_classes": 10}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        onnx_art, onnx_rec = export_onnx_artifact(model, out / "onnx", meta, [])
        ov_art, ov_rec = export_openvino_artifact(model, out / "openvino", meta, [])  # from the PyTorch module
        ref = predict_logits(model, ds)
        logits = {"torch": ref}
        logits["onnxruntime"] = predict_logits(open_session(onnx_art, "onnxruntime").run, ds)
        logits["openvino"] = predict_logits(open_session(ov_art, "openvino").run, ds)
    summary: dict = {
        "n": len(ds),
        "top1": {},
        "top1_agreement": {},
        "max_abs_logit_diff": {},
        "parity": {"onnx": onnx_rec["parity"], "openvino": ov_rec["parity"]},
    }
    for name, lg in logits.items():
        acc = accuracy_metrics(lg, ds.y)
        fid = fidelity(lg, ref)
        summary["top1"][name] = acc["top1"]
        summary["top1_agreement"][name] = fid["top1_agreement"]
        summary["max_abs_logit_diff"][name] = float(np.abs(lg - ref).max())
        print(
            f"{name:12s} top-1 {acc['top1']:.2f}% (n={acc['n']})  agreement with PyTorch "
            f"{fid['top1_agreement']:.2f}%  max |logit diff| {summary['max_abs_logit_diff'][name]:.2e}",
            file=sys.stderr,
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
