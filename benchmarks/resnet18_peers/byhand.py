"""ResNet-18 (224x224) in plain ONNX Runtime / OpenVINO loops vs slimline's harness, in the same run.

Checks that the harness adds no overhead: slimline's throughput for each runtime should be at least
95% of a plain loop over the same file with the same settings (ORT: intra-op threads; OpenVINO: CPU,
latency hint, f32, inference threads). Every measurement is a fresh subprocess; the order alternates
between rounds (by hand first, then slimline first) so that drift on a shared machine cancels out.

Usage:
    benchmarks/resnet18_peers/run.sh byhand --threads 2 --batch 16 --rounds 2 --seconds 8

``--overhead-only`` prints what the harness's timing loop itself costs per call (microseconds).
Internal: ``--byhand ort|openvino --model FILE`` runs one plain loop and prints its JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def byhand_loop(kind: str, model: str, batch: int, threads: int, seconds: float, warmup: int) -> dict:
    """The plain loop: nothing but the runtime's own API."""
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    if kind == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name

        def call() -> None:
            sess.run(None, {name: x})
    else:
        from slimline.api import import_openvino  # telemetry off, then plain openvino

        ov = import_openvino()
        core = ov.Core()
        compiled = core.compile_model(
            model,
            "CPU",
            {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"},
        )
        req = compiled.create_infer_request()

        def call() -> None:
            req.infer({0: x})

    for _ in range(warmup):
        call()
    return timed_loop(call, batch, seconds)


def timed_loop(call: Callable[[], object], batch: int, seconds: float) -> dict:
    """A bare timing loop: at least 10 calls and ``seconds``; throughput and median latency."""
    times = []
    start = time.perf_counter()
    while len(times) < 10 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    return {
        "throughput": batch * len(times) / elapsed,
        "runs": len(times),
        "seconds": elapsed,
        "median_ms": 1e3 * statistics.median(times),
    }


def run_byhand(kind: str, model: Path, batch: int, threads: int, seconds: float, warmup: int) -> dict:
    from slimline.api import worker_env

    cmd = [
        sys.executable,
        __file__,
        "--byhand",
        kind,
        "--model",
        str(model),
        "--batch",
        str(batch),
        "--threads",
        str(threads),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
    ]
    out = subprocess.run(cmd, env=worker_env(threads), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_slimline(art_path: Path, runtime: str, batch: int, threads: int, seconds: float, warmup: int) -> dict:
    from slimline.api import bench_artifacts

    doc = bench_artifacts(
        [art_path], [runtime], [batch], threads=threads, warmup=warmup, min_runs=10, min_seconds=seconds, peak=False
    )
    r = doc["results"][0]
    if r["status"] != "ok":
        raise SystemExit(f"slimline {runtime} failed: {r['error']}")
    return {
        "throughput": r["throughput"],
        "runs": r["runs"],
        "seconds": r["seconds"],
        "median_ms": r["latency_ms"]["median"],
    }


def harness_overhead(calls: int = 200_000) -> dict:
    """What slimline's timing loop costs per call: measure() around a no-op vs a bare loop over it."""
    from slimline.api import measure

    def noop(batch: object) -> None:
        return None

    m = measure(noop, [0], warmup=10, min_runs=calls, min_seconds=0)
    start = time.perf_counter()
    for _ in range(calls):
        noop(None)
    bare = (time.perf_counter() - start) / calls
    per_call_us = 1e6 * m["seconds"] / m["runs"]
    return {
        "harness_per_call_us": per_call_us,
        "bare_loop_per_call_us": 1e6 * bare,
        "overhead_us": per_call_us - 1e6 * bare,
    }


def add_timing_args(ap: argparse.ArgumentParser) -> None:
    """Threads, batch, rounds, seconds and warm-up: shared with the other by-hand comparison scripts."""
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=int, default=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_args(ap)
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "bench_resnet18")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--byhand", choices=["ort", "openvino"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--overhead-only", action="store_true", help="only time the harness around a no-op call")
    args = ap.parse_args()
    if args.overhead_only:
        print(json.dumps(harness_overhead()))
        return
    if args.byhand:
        print(json.dumps(byhand_loop(args.byhand, args.model, args.batch, args.threads, args.seconds, args.warmup)))
        return

    from slimline.api import Artifact, environment, prepare_model

    folder = args.workdir / "resnet18"
    if (folder / "onnx" / "artifact.json").exists() and (folder / "openvino" / "artifact.json").exists():
        arts = {k: Artifact.load(folder / k) for k in ("onnx", "openvino")}
    else:
        arts = prepare_model("resnet18", {"onnx", "openvino"}, args.workdir).artifacts
    pairs = {"onnxruntime": ("ort", arts["onnx"]), "openvino": ("openvino", arts["openvino"])}
    measured: dict[str, dict[str, list[dict]]] = {rt: {"byhand": [], "slimline": []} for rt in pairs}
    for rnd in range(args.rounds):
        for rt, (kind, art) in pairs.items():
            order = ["byhand", "slimline"] if rnd % 2 == 0 else ["slimline", "byhand"]
            for who in order:
                if who == "byhand":
                    r = run_byhand(kind, art.model_file, args.batch, args.threads, args.seconds, args.warmup)
                else:
                    r = run_slimline(art.path, rt, args.batch, args.threads, args.seconds, args.warmup)
                measured[rt][who].append(r)
                print(
                    f"round {rnd + 1} {rt:12s} {who:9s} {r['throughput']:7.2f} img/s, median {r['median_ms']:.0f} ms "
                    f"({r['runs']} runs, {r['seconds']:.1f} s)",
                    flush=True,
                )
    summary = {}
    for rt, m in measured.items():
        bh = statistics.mean(x["throughput"] for x in m["byhand"])
        sl = statistics.mean(x["throughput"] for x in m["slimline"])
        # per-call medians resist the bursts of other processes on a shared machine
        bh_med = statistics.median(x["median_ms"] for x in m["byhand"])
        sl_med = statistics.median(x["median_ms"] for x in m["slimline"])
        summary[rt] = {
            "byhand_img_s": bh,
            "slimline_img_s": sl,
            "ratio": sl / bh,
            "byhand_median_ms": bh_med,
            "slimline_median_ms": sl_med,
            "median_ratio": bh_med / sl_med,
            "rounds": m,
        }
        print(
            f"{rt:12s} by hand {bh:7.2f} img/s   slimline {sl:7.2f} img/s   throughput ratio {sl / bh:.3f}   "
            f"median-latency ratio (by hand / slimline) {bh_med / sl_med:.3f}"
        )
    doc = {
        "model": "resnet18",
        "input": [3, 224, 224],
        "batch": args.batch,
        "threads": args.threads,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "summary": summary,
        "environment": environment(),
    }
    if args.json:
        from slimline.api import write_json

        write_json(args.json, doc)
    print(
        json.dumps(
            {
                rt: {"ratio": round(v["ratio"], 3), "median_ratio": round(v["median_ratio"], 3)}
                for rt, v in summary.items()
            }
        )
    )


if __name__ == "__main__":
    main()
