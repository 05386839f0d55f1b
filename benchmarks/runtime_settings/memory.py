"""Peak memory at inference per runtime and batch, and the effect of ONNX Runtime's memory arena and
memory pattern settings.

Every (artifact, runtime, batch) runs in its own fresh process through the benchmark harness
(``slimline.bench.bench_artifacts``), which reports the worker's peak resident memory
(``ru_maxrss``: model, runtime, buffers and libraries). The model goes through ``fuse`` and
``export_onnx`` first; ONNX Runtime is run with each combination of ``enable_mem_arena`` and
``enable_mem_pattern``.

    benchmarks/runtime_settings/run.sh memory --model resnet18 --batches 1,16
"""

from __future__ import annotations

import argparse
from pathlib import Path

ORT_VARIANTS = [
    "onnxruntime",
    "onnxruntime:enable_mem_arena=false",
    "onnxruntime:enable_mem_pattern=false",
    "onnxruntime:enable_mem_arena=false,enable_mem_pattern=false",
]


def main() -> None:
    from slimline import apply_step, load_model, save_torch
    from slimline.api import bench_artifacts, model_meta, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/optimize/memory"))
    args = ap.parse_args()
    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    base = save_torch(load_model(args.model, args.weights), run / "00_baseline", model_meta(args.model, None), [])

    fused = apply_step("fuse", base, run / "01_fuse", layout="channels_last")
    onnx_a = apply_step("export_onnx", fused, run / "02_export_onnx")
    fused_onnx = apply_step("fuse", onnx_a, run / "03_fuse", openvino_batches=[])
    batches = [int(b) for b in args.batches.split(",")]
    common = {"threads": args.threads, "peak": False, "min_runs": 5, "min_seconds": 0.5, "max_seconds": 15.0}
    doc = bench_artifacts([base, fused], ["torch", "torch:fuse,channels_last"], batches, **common)
    doc["results"] += bench_artifacts([fused_onnx], [*ORT_VARIANTS, "openvino"], batches, **common)["results"]
    rows = []
    for r in doc["results"]:
        lat = (r.get("latency_ms") or {}).get("median")
        rows.append(
            {
                "artifact": r["artifact"],
                "runtime": r["runtime"],
                "batch": r["batch_size"],
                "status": r["status"],
                "peak_rss_mb": r.get("peak_rss_mb"),
                "median_ms": lat,
                "error": r.get("error"),
            }
        )
        rss = r.get("peak_rss_mb")
        print(
            f"{r['artifact']:14s} {r['runtime']:62s} bs {r['batch_size']:3d} {r['status']:5s} "
            f"peak RSS {rss and round(rss):>5} MiB  median {lat and round(lat, 1)} ms"
        )
    write_json(
        run / "memory.json",
        {
            "model": args.model,
            "rows": rows,
            "environment": doc["environment"],
            "note": "peak RSS of one fresh worker process per row; shared busy machine",
        },
    )
    print(f"wrote {run / 'memory.json'}")


if __name__ == "__main__":
    main()
