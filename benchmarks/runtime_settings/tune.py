"""``tune`` on every runtime: the best settings against the runtime defaults, for lowest latency at
batch 1 and for highest throughput under a p99 bound.

The model goes through ``fuse`` (PyTorch; its fuse/layout runtime_config competes as one more
candidate) and ``export_onnx`` + ``fuse`` (ONNX); then each artifact is tuned on each runtime that
runs it (torch; onnxruntime and openvino). The defaults are always among
the candidates and win unless beaten by 2% in a final head-to-head, so every ``gain_vs_defaults`` is
at least 1 (as measured, in the same time window).

    benchmarks/runtime_settings/run.sh tune   (cifar_resnet56 with its pretrained weights, --p99-ms 200)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def main() -> None:
    from slimline import apply_step, load_model, save_torch
    from slimline.api import model_meta, tune, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar_resnet56")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--p99-ms", type=float, default=200.0)
    ap.add_argument("--batches", default="1,4,16,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtimes", default=None, help="comma-separated (default: every available, torch-compile aside)")
    ap.add_argument("--out", type=Path, default=Path("runs/optimize/tune"))
    args = ap.parse_args()
    run = args.out
    run.mkdir(parents=True, exist_ok=True)
    base = save_torch(load_model(args.model, args.weights), run / "00_baseline", model_meta(args.model, None), [])

    fused = apply_step("fuse", base, run / "01_fuse", layout="nchw", fx_fuse=True)
    onnx_a = apply_step("export_onnx", fused, run / "02_export_onnx")
    onnx_a = apply_step("fuse", onnx_a, run / "03_fuse", openvino_batches=[])
    batches = [int(b) for b in args.batches.split(",")]
    runtimes = args.runtimes.split(",") if args.runtimes else None
    report: dict[str, Any] = {"model": args.model, "p99_ms": args.p99_ms, "results": {}}

    def show(line: str) -> None:
        print("   ", line, flush=True)

    for art in (fused, onnx_a):
        for target in ("latency", "throughput"):
            p99 = args.p99_ms if target == "throughput" else None
            res = tune(
                art,
                runtimes if art.kind != "torch" or not runtimes else [r for r in runtimes if r.startswith("torch")],
                target,
                p99,
                batch_sizes=batches,
                rounds=args.rounds,
                on_trial=show,
            )
            for rt, r in res.items():
                d = r.to_dict()
                report["results"][f"{art.kind}/{rt}/{target}"] = {k: d[k] for k in d if k != "trials"} | {
                    "n_trials": len(d["trials"])
                }
                b, df = r.best_stats, r.default_stats
                key = "median_ms" if target == "latency" else "throughput"
                print(
                    f"{art.kind:5s} {rt:12s} {target:10s} best {r.runtime_config()} {key} {b.get(key)} "
                    f"vs defaults {df.get(key)}  gain {r.gain()}",
                    flush=True,
                )
    write_json(run / "tune.json", report | {"note": "shared busy machine; each comparison made in one time window"})
    print(f"wrote {run / 'tune.json'}")


if __name__ == "__main__":
    main()
