"""Edge benchmark (issue 23): CIFAR ResNet-56 as fp32 and full-integer int8 ``.tflite``, accuracy, size, latency.

For each model (the pretrained ResNet-56; the pruned one of ``examples/cifar_resnet56.yaml`` when
``runs/cifar_resnet56`` holds its prune stage): export to ``.tflite`` (litert-torch, parity-checked), quantize
with the ``litert`` backend (ai-edge-quantizer static int8, calibrated on 300 images of the training sample),
evaluate PyTorch, fp32 .tflite and int8 .tflite on the test sample (top-1, n, 95% interval), then time both
.tflite files in one ``slimline bench`` run (runtime ``litert``, batch 1, ``--threads``, fresh processes).

Writes ``OUT/results.json``: the first model's ``fp32_top1``, ``int8_top1``, ``size_ratio``, ``litert_fp32_ms``,
``litert_int8_ms`` at the top level, every model's figures under ``models``, ``checks`` (each must-show of the
issue with its figure, limit and ``passed``), ``n``, ``settings`` and ``environment``. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"
PRUNED_RUN = ROOT / "runs" / "cifar_resnet56"
CALIBRATION = 300


def pruned_artifact() -> Path | None:
    """The last prune stage of the example's run folder, when it exists."""
    if not PRUNED_RUN.is_dir():
        return None
    stages = sorted(p for p in PRUNED_RUN.glob("*_prune") if (p / "artifact.json").exists())
    return stages[-1] if stages else None


def build(name: str, work: Path, source: Path | None) -> Any:
    """The torch artifact of ``name`` in ``work`` (pretrained weights) or the pruned one at ``source``."""
    from slimline.api import Artifact, load_model, save_torch

    if source is not None:
        return Artifact.load(source)
    model = load_model("cifar_resnet56", WEIGHTS)
    meta = {"model": "cifar_resnet56", "input_shape": [3, 32, 32], "num_classes": 10}
    return save_torch(model, work / name / "torch", meta, [{"step": "baseline", "weights": str(WEIGHTS)}])


def run_model(name: str, torch_art: Any, work: Path, test: Any, calib: Any, threads: int) -> dict[str, Any]:
    from slimline.api import (
        FloatModel,
        QuantConfig,
        evaluate,
        evaluate_artifact,
        export_tflite_artifact,
        get_backend,
        load_torch,
        write_quantized,
    )

    model = load_torch(torch_art)
    meta = dict(torch_art.meta)
    t0 = time.perf_counter()
    fp32, rec = export_tflite_artifact(model, work / name / "fp32_tflite", meta, list(torch_art.lineage))
    t1 = time.perf_counter()
    print(
        f"{name}: fp32 .tflite {rec['file_bytes'] / 1e6:.2f} MB in {t1 - t0:.1f} s, parity max abs diff "
        f"{rec['parity']['max_abs_diff']:.2e}",
        flush=True,
    )
    qdir = work / name / "int8_work"
    src = FloatModel(tuple(meta["input_shape"]), qdir, torch_model=model)
    qres = get_backend("litert").quantize(src, calib, QuantConfig(), [], qdir)
    report: dict[str, Any] = {"backend": "litert", "calibration": {"samples": len(calib), "source": "training split"}}
    qmeta = {**meta, **qres.meta, "quantization": {"backend": "litert", "precision": "int8", "mode": "static"}}
    int8 = write_quantized(
        work / name / "int8_tflite", qres, qdir, qmeta, list(torch_art.lineage), report, fp32.size_bytes()
    )
    t2 = time.perf_counter()
    print(
        f"{name}: int8 .tflite {int8.size_bytes() / 1e6:.2f} MB in {t2 - t1:.1f} s; left in float: "
        f"{len(qres.left_float)}",
        flush=True,
    )
    pt = evaluate(model, test)
    f32 = evaluate_artifact(fp32, test, runtime="litert", threads=threads)
    i8 = evaluate_artifact(int8, test, runtime="litert", threads=threads)
    print(
        f"{name}: top-1 PyTorch {pt['top1']:.2f}  fp32 .tflite {f32['top1']:.2f}  int8 .tflite {i8['top1']:.2f} "
        f"(n={i8['n']})",
        flush=True,
    )
    return {
        "artifacts": {"fp32": str(fp32.path), "int8": str(int8.path)},
        "torch_top1": pt["top1"],
        "torch_top1_ci95": pt["top1_ci95"],
        "fp32_top1": f32["top1"],
        "fp32_top1_ci95": f32["top1_ci95"],
        "int8_top1": i8["top1"],
        "int8_top1_ci95": i8["top1_ci95"],
        "n": i8["n"],
        "fp32_bytes": fp32.size_bytes(),
        "int8_bytes": int8.size_bytes(),
        "size_ratio": fp32.size_bytes() / int8.size_bytes(),
        "left_float": qres.left_float,
        "int8_verification": qres.verification,
        "export_parity": rec["parity"],
    }


def bench(models: dict[str, dict[str, Any]], out: Path, threads: int, quick: bool) -> dict[str, Any]:
    """One ``slimline bench`` run over every .tflite artifact: litert, batch 1, ``threads``."""
    targets = [m["artifacts"][k] for m in models.values() for k in ("fp32", "int8")]
    json_path = out / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "slimline",
        "bench",
        *targets,
        "-r",
        "litert",
        "-b",
        "1",
        "-t",
        str(threads),
        "--no-peak",
        "--json",
        str(json_path),
    ]
    cmd += ["--min-seconds", "0.5", "--repeats", "1"] if quick else ["--min-seconds", "3", "--repeats", "3"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    doc = json.loads(json_path.read_text())
    by_path = {str(Path(r["artifact_path"]).resolve()): r for r in doc["results"] if r.get("artifact_path")}
    for m in models.values():
        for k in ("fp32", "int8"):
            r = by_path.get(str(Path(m["artifacts"][k]).resolve()))
            if r is None:
                raise SystemExit(f"slimline bench gave no result for {m['artifacts'][k]}")
            m[f"litert_{k}_ms"] = r["latency_ms"]["median"]
            m[f"litert_{k}_describe"] = r.get("describe")
    return doc


def checks(m: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "fp32_top1_equals_pytorch": {
            "figure": m["fp32_top1"],
            "limit": m["torch_top1"],
            "passed": abs(m["fp32_top1"] - m["torch_top1"]) < 1e-9,
        },
        "int8_drop_at_most_0.5_points": {
            "figure": m["fp32_top1"] - m["int8_top1"],
            "limit": 0.5,
            "passed": m["fp32_top1"] - m["int8_top1"] <= 0.5,
        },
        "size_ratio_at_least_3.5": {"figure": m["size_ratio"], "limit": 3.5, "passed": m["size_ratio"] >= 3.5},
        "int8_latency_at_most_0.6x_fp32": {
            "figure": m["litert_int8_ms"] / m["litert_fp32_ms"],
            "limit": 0.6,
            "passed": m["litert_int8_ms"] <= 0.6 * m["litert_fp32_ms"],
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "edge")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="200 test images and short timing: a smoke test")
    ap.add_argument(
        "--pruned",
        type=Path,
        default=None,
        help=f"a pruned ResNet-56 torch artifact (default: the last prune stage in {PRUNED_RUN}, if any)",
    )
    args = ap.parse_args()
    from slimline.api import environment, load_dataset, write_json

    start = time.perf_counter()
    out: Path = args.out.resolve()
    work = out / "work"
    test = load_dataset("cifar10-sample", "test", limit=200 if args.quick else None)
    calib = load_dataset("cifar10-sample", "train").sample(CALIBRATION, seed=0).inputs()
    sources: dict[str, Path | None] = {"resnet56": None}
    pruned = args.pruned.resolve() if args.pruned else pruned_artifact()
    if pruned is not None:
        sources["resnet56_pruned"] = pruned
    else:
        print(f"no pruned ResNet-56 in {PRUNED_RUN} (run examples/cifar_resnet56.yaml first to include it)")
    models = {
        name: run_model(name, build(name, work, src), work, test, calib, args.threads) for name, src in sources.items()
    }
    bench(models, out, args.threads, args.quick)
    for m in models.values():
        m["checks"] = checks(m)
    first = models["resnet56"]
    keys = ("fp32_top1", "int8_top1", "size_ratio", "litert_fp32_ms", "litert_int8_ms")
    doc = {
        **{k: first[k] for k in keys},
        "n": first["n"],
        "fp32_top1_ci95": first["fp32_top1_ci95"],
        "int8_top1_ci95": first["int8_top1_ci95"],
        "torch_top1": first["torch_top1"],
        "checks": first["checks"],
        "passed": all(c["passed"] for m in models.values() for c in m["checks"].values()),
        "models": models,
        "settings": {
            "threads": args.threads,
            "batch_size": 1,
            "runtime": "litert",
            "quick": args.quick,
            "calibration_samples": CALIBRATION,
            "test_samples": first["n"],
            "pruned_source": str(pruned) if pruned else None,
        },
        "seconds": round(time.perf_counter() - start, 1),
        "environment": environment(),
    }
    write_json(out / "results.json", doc)
    print()
    print(f"{'model':<16} {'torch':>7} {'fp32':>7} {'int8':>7} {'ratio':>6} {'fp32 ms':>8} {'int8 ms':>8}  checks")
    for name, m in models.items():
        ok = ", ".join(f"{k}: {'pass' if c['passed'] else 'FAIL'}" for k, c in m["checks"].items())
        print(
            f"{name:<16} {m['torch_top1']:>7.2f} {m['fp32_top1']:>7.2f} {m['int8_top1']:>7.2f} "
            f"{m['size_ratio']:>6.2f} {m['litert_fp32_ms']:>8.3f} {m['litert_int8_ms']:>8.3f}  {ok}"
        )
    print(f"n={first['n']} test images; {doc['seconds']} s -> {out / 'results.json'}")
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
