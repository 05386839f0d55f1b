"""ResNet-18 at 224x224, batch 16: fp32 vs slimline's int8 artifacts, throughput only.

The zoo's resnet18 has no pretrained weights here, so this measures speed, not accuracy:
calibration uses 64 random inputs (ranges do not change the kernels that run). Artifacts:

* fp32 ONNX (ONNX Runtime) and int8 QDQ U8S8 per-channel (slimline's default ``onnxruntime`` backend);
* fp32 OpenVINO IR and int8 NNCF (``openvino`` backend);
* optionally ``--dynamic``: ONNX Runtime dynamic quantization, to check the warning's claim that it is
  far slower than fp32 on convolutions.

    benchmarks/resnet18_peers/run.sh quant

Compare with by-hand peers measured for this project (OpenVINO+NNCF ~132 img/s, ORT U8S8 QDQ ~110 img/s
at batch 16) only on the same machine: those were not measured here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/quant_resnet18"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--dynamic", action="store_true", help="also ONNX Runtime dynamic quantization")
    args = ap.parse_args()

    from slimline.api import (
        Artifact,
        ArtifactWriter,
        FloatModel,
        QuantConfig,
        bench_artifacts,
        environment,
        export_openvino,
        get_backend,
        load_model,
    )

    t0 = time.time()
    shape = (3, 224, 224)
    out = args.out
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    model = load_model("resnet18")
    model.slimline_source = {"zoo": "resnet18", "kwargs": {}}
    src = FloatModel(shape, work, torch_model=model)
    calib = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    meta = {"model": "resnet18", "input_shape": list(shape), "num_classes": 1000}

    def save(name: str, kind: str, files: dict[str, str], folder: Path) -> Artifact:
        with ArtifactWriter(out / name, kind, dict(meta), [{"step": name}]) as w:
            for role, f in files.items():
                shutil.copyfile(folder / f, w.add(role, f))
        assert w.artifact is not None
        return w.artifact

    arts: dict[str, Artifact] = {}
    fp32 = src.onnx()
    arts["fp32_onnx"] = save("fp32_onnx", "onnx", {"model": fp32.name}, fp32.parent)
    export_openvino(fp32, shape, work / "fp32.xml")
    arts["fp32_openvino"] = save("fp32_openvino", "openvino", {"model": "fp32.xml", "weights": "fp32.bin"}, work)
    records: dict[str, Any] = {}
    jobs = [("int8_onnxruntime", "onnxruntime", QuantConfig()), ("int8_openvino", "openvino", QuantConfig())]
    if args.dynamic:
        jobs.append(("int8_ort_dynamic", "onnxruntime", QuantConfig(mode="dynamic")))
    for name, backend, cfg in jobs:
        t = time.time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = get_backend(backend).quantize(src, calib, cfg, [], work / name)
        arts[name] = save(name, res.kind, res.files, work / name)
        records[name] = {
            "seconds": time.time() - t,
            "details": res.details,
            "left_float": res.left_float,
            "warnings": [str(c.message) for c in caught if "Quant" in type(c.message).__name__],
        }
        print(f"{name}: {arts[name].size_bytes() / 1e6:.1f} MB in {time.time() - t:.0f} s", flush=True)
    groups = [
        ("onnxruntime", ["fp32_onnx", "int8_onnxruntime"] + (["int8_ort_dynamic"] if args.dynamic else [])),
        ("openvino", ["fp32_openvino", "int8_openvino"]),
    ]
    rows = []
    for runtime, names in groups:
        doc = bench_artifacts(
            [arts[n] for n in names],
            [runtime],
            [args.batch],
            threads=args.threads,
            min_seconds=args.min_seconds,
            min_runs=5,
            peak=False,
        )
        for n, r in zip(names, doc["results"], strict=True):
            rows.append(
                {
                    "artifact": n,
                    "runtime": runtime,
                    "batch": args.batch,
                    "img_s": r["throughput"],
                    "latency_ms": (r["latency_ms"] or {}).get("median"),
                    "status": r["status"],
                    "error": r["error"],
                    "bytes": arts[n].size_bytes(),
                }
            )
            print(f"{n} on {runtime}: {r['throughput']} img/s", flush=True)
    summary = {
        "model": "resnet18 (random init: throughput only)",
        "input": list(shape),
        "rows": rows,
        "quantize": records,
        "environment": environment(),
        "seconds": time.time() - t0,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"\n| artifact | runtime | img/s (batch {args.batch}) | median latency ms | MB |\n|---|---|---|---|---|")
    for r in rows:
        tp = f"{r['img_s']:.1f}" if r["img_s"] else r["status"]
        lat = f"{r['latency_ms']:.1f}" if r["latency_ms"] else "-"
        print(f"| {r['artifact']} | {r['runtime']} | {tp} | {lat} | {r['bytes'] / 1e6:.1f} |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
