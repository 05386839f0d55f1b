"""One search trial: build a candidate from cached prefixes, score it on validation data, measure its speed.

:func:`run_trial` is a plain function of JSON-able arguments, so a local process pool or a Dask worker can run
it. Stages are cached in ``<run>/cache/<step>-<hash>``: a trial whose prune settings match an earlier one reuses
that pruned model (and its fp32 export); only the quantization and runtime settings are new. A stage is built in
a private temporary folder and renamed into place, so a trial that dies never leaves a half-written stage and
two workers building the same stage concurrently both end with one complete copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from slimline.artifact import Artifact
from slimline.errors import SlimlineError

CACHE_DIR = "cache"


def machine() -> dict[str, Any]:
    """Where a trial ran: host, CPU model and core count. ``kind`` is what trials are compared on."""
    from slimline.environment import cpu_info

    cpu = cpu_info()
    kind = f"{cpu['model']} x{cpu['cores']} {platform.machine()}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "cpu": cpu["model"], "cores": cpu["cores"], "kind": kind}


def _key(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _apply(
    step_name: str,
    history: list[Artifact],
    out_dir: Path,
    data: dict[str, Any] | None,
    seed: int,
    options: dict[str, Any],
) -> Artifact:
    """``step_name`` applied to the last of ``history`` (the earlier stages are the run's, as in a recipe: int8
    accuracy-aware quantization finds the PyTorch model its ONNX was exported from there)."""
    from slimline.context import DataBundle, RunContext
    from slimline.pipeline import apply_stage
    from slimline.recipe import DataConfig
    from slimline.steps import get_step
    from slimline.train import seed_everything

    step = get_step(step_name)(get_step(step_name).Config.model_validate(options))
    ctx = RunContext(
        run_dir=out_dir.parent,
        data=DataBundle(DataConfig.model_validate(data) if data else None, seed),
        seed=seed,
        out_dir=out_dir,
        artifacts=list(history),
    )
    seed_everything(seed)
    made, _ = apply_stage(step, history[-1], ctx, "search stage", where=str(history[-1].path))
    return made if made is not None else history[-1]


def cached_stage(
    cache: Path, step: str, parts: Any, history: list[Artifact], data: dict[str, Any] | None, seed: int, **options: Any
) -> tuple[Artifact, bool]:
    """``step`` applied to the last artifact of ``history`` with ``options``, from the cache when an identical
    stage was built before (``parts``: what the input was built from).

    Returns the artifact and whether it came from the cache.
    """
    from slimline.bench.harness import is_artifact_dir

    folder = cache / f"{step}-{_key([parts, step, options])}"
    if is_artifact_dir(folder):
        return Artifact.load(folder), True
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache))
    try:
        made = _apply(step, history, tmp / "stage", data, seed, options)
        try:
            os.rename(made.path, folder)
        except OSError:
            if not is_artifact_dir(folder):  # another worker won the race when it is there
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Artifact.load(folder), False


def build_candidate(params: dict[str, Any], spec: dict[str, Any]) -> tuple[Artifact, list[str]]:
    """The artifact ``params`` describe, built from ``spec['baseline']``; also the stages reused from the cache."""
    cache = Path(spec["run_dir"]) / CACHE_DIR
    data, seed = spec["data"], spec.get("seed", 0)
    history = [Artifact.load(spec["baseline"])]
    reused: list[str] = []
    chain: list[Any] = [str(spec["baseline"])]

    def stage(step: str, d: dict[str, Any] | None, **opts: Any) -> None:
        art, hit = cached_stage(cache, step, chain, history, d, seed, **opts)
        history.append(art)
        chain.append([step, opts])
        if hit:
            reused.append(art.path.name)

    if params.get("prune", "none") != "none":
        finetune = {
            "epochs": int(params.get("recovery_epochs", spec.get("proxy_epochs", 1))),
            "lr": 0.01,
            "batch_size": 128,
            "augment": False,
            "kd": bool(params.get("kd", True)),
        }
        method = params["prune"].split("+")
        stage(
            "prune",
            data,
            method=method[0] if len(method) == 1 else method,
            target={"macs": float(params["prune_macs"])},
            finetune=finetune,
            sensitivity={"samples": int(spec.get("sensitivity_samples", 256))},
        )
    stage("fuse", None, layout="nchw")
    stage("export_onnx", None)
    quant = params.get("quant", "fp32")
    if quant == "ort_int8":
        stage(
            "quantize",
            data,
            backend="onnxruntime",
            per_channel=bool(params["per_channel"]),
            activation_symmetric=bool(params["activation_symmetric"]),
            calibration=params["calibration"],
            calibration_size=int(params["calibration_size"]),
            accuracy_aware=bool(params["accuracy_aware"]),
            max_drop=float(spec["max_drop"]) / 2,
        )
    elif quant == "nncf_int8":
        stage("export_openvino", None)
        stage("quantize", data, backend="openvino", calibration_size=int(params["calibration_size"]))
    elif quant == "ov_fp32":
        stage("export_openvino", None)
    return history[-1], reused


def runtime_label(params: dict[str, Any], spec: dict[str, Any]) -> str:
    """The runtime with the trial's options, as the bench harness spells it (``openvino:hint=throughput``)."""
    name = spec["runtime"]
    opts = {k.removeprefix("rt_"): v for k, v in sorted(params.items()) if k.startswith("rt_")}
    return name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


def run_trial(params: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Build, score (validation top-1) and measure (items/s at ``spec['batch']``) one candidate.

    ``spec``: run_dir, baseline (artifact folder), data (a recipe ``data:`` mapping), seed, runtime, batch,
    threads, max_drop, min_runs, min_seconds, base_val_top1, proxy_epochs. Raises what the build raises; the
    study records the trial as failed.
    """
    from slimline.bench.harness import bench_artifacts
    from slimline.context import DataBundle
    from slimline.evaluate import evaluate_artifact
    from slimline.recipe import DataConfig

    if spec.get("fail_when") and all(params.get(k) == v for k, v in spec["fail_when"].items()):
        raise SlimlineError(f"trial settings {spec['fail_when']} are refused by this run's fail_when (a test hook)")
    t0 = time.perf_counter()
    art, reused = build_candidate(params, spec)
    built_s = time.perf_counter() - t0
    label = runtime_label(params, spec)
    bundle = DataBundle(DataConfig.model_validate(spec["data"]), spec.get("seed", 0))
    val = evaluate_artifact(art, bundle.val, runtime=spec["runtime"])
    bench = bench_artifacts(
        [art],
        [label],
        [int(spec["batch"])],
        threads=spec.get("threads"),
        min_runs=int(spec.get("min_runs", 10)),
        min_seconds=float(spec.get("min_seconds", 0.5)),
        warmup=3,
        peak=False,
        tuned_batch=False,
    )
    row = bench["results"][0]
    if row.get("status") != "ok" or not row.get("throughput"):
        raise SlimlineError(f"measuring {art.path.name} on {label} failed: {row.get('error') or row.get('status')}")
    return {
        "artifact": str(art.path),
        "runtime": label,
        "val_top1": float(val["top1"]),
        "val_n": int(val["n"]),
        "val_top1_ci95": val.get("top1_ci95"),
        "drop": float(spec["base_val_top1"]) - float(val["top1"]),
        "items_per_s": float(row["throughput"]),
        "latency_ms": row.get("latency_ms"),
        "size_bytes": int(art.size_bytes()),
        "build_seconds": round(built_s, 3),
        "seconds": round(time.perf_counter() - t0, 3),
        "reused_stages": reused,
        "machine": machine(),
    }
