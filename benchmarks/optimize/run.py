"""``slimline optimize`` must-shows (issue 24); see run.sh. Writes ``OUT/results.json``.

Keys: ``search_items_per_s``, ``demo_best_items_per_s``, ``drop`` (demo); ``dask_same_best``, ``trials_lost``
(dask); ``chosen_items_per_s``, ``peer_items_per_s``, ``test_drop`` (cifar); ``must_show`` (pass/fail per
must-show, None when not run); ``details`` (per part: the figures behind them, n and 95% intervals);
``settings``; ``environment``. Throughputs are items/s at batch 64, each the median of fresh processes, the
candidates of one comparison measured in one bench session.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
BATCH = 64


def bench(targets: list[tuple[str, list[str]]], quick: bool) -> list[dict[str, Any]]:
    """Each (artifact folder, runtimes) at batch 64, one after the other in this session (each artifact its own
    target, so an ONNX artifact is measured on OpenVINO too), each figure the median of fresh processes."""
    from slimline.api import Artifact, BenchTarget, bench_targets

    rows = []
    for path, runtimes in targets:
        out = bench_targets(
            [BenchTarget.from_artifact(Artifact.load(path))],
            runtimes,
            [BATCH],
            min_runs=5 if quick else 20,
            min_seconds=0.2 if quick else 1.0,
            repeats=1 if quick else 3,
            peak=False,
            tuned_batch=False,
        )
        for r in out["results"]:
            if r.get("status") == "ok" and r.get("throughput"):
                rows.append({k: r[k] for k in ("artifact", "artifact_path", "runtime", "throughput", "file_bytes")})
    return rows


def search_kwargs(quick: bool) -> dict[str, Any]:
    return {"min_runs": 5, "min_seconds": 0.2} if quick else {"min_runs": 10, "min_seconds": 0.5}


def part_demo(out: Path, quick: bool) -> dict[str, Any]:
    import slimline
    from slimline.api import demo_recipe, is_artifact_dir, run_search

    recipe = demo_recipe(quick)
    demo_dir = out / ("demo-quick" if quick else "demo")
    if not (demo_dir / "results.json").exists():
        slimline.run(recipe | {"benchmark": None}, demo_dir)
    trained = demo_dir / "01_train"
    opt_dir = out / "demo-search"
    budget = "90s" if quick else "10m"
    report = run_search(
        trained,
        recipe["data"],
        opt_dir,
        resume=(opt_dir / "study.db").exists(),
        max_drop=1.0,
        runtime="openvino",
        batch=BATCH,
        budget=budget,
        seed=0,
        proxy_epochs=1,
        full_epochs=2,
        **search_kwargs(quick),
    )
    chosen = report["chosen"]
    stages = [p for p in sorted(demo_dir.iterdir()) if is_artifact_dir(p) and p.name != "00_baseline"]
    targets = [(str(p), ["torch", "onnxruntime", "openvino", "openvino:hint=throughput"]) for p in stages]
    if chosen:
        targets.append((chosen["artifact"], [chosen["runtime"]]))
    rows = bench(targets, quick)
    demo_rows = [r for r in rows if Path(r["artifact_path"]).parent == demo_dir]
    best_demo = max(demo_rows, key=lambda r: r["throughput"]) if demo_rows else None
    mine = [r for r in rows if chosen and Path(r["artifact_path"]) == Path(chosen["artifact"])]
    return {
        "search_items_per_s": mine[0]["throughput"] if mine else None,
        "demo_best_items_per_s": best_demo["throughput"] if best_demo else None,
        "drop": chosen["test_drop"] if chosen else None,
        "details": {
            "budget": budget,
            "demo_best": best_demo,
            "bench": rows,
            "chosen": chosen,
            "front": report["front"],
            "stopped": report["stopped"],
            "trials": report["trials"],
            "failed": report["failed"],
        },
    }


def _loopback(addr: Any) -> bool:
    return not addr or ipaddress.ip_address(addr.ip).is_loopback


def part_dask(out: Path, quick: bool) -> dict[str, Any]:
    import psutil
    from distributed import Client, LocalCluster

    from slimline.api import demo_recipe, run_search

    recipe = demo_recipe(quick=True)  # the demo-quick data slice: the comparison is of the search, not the model
    demo_dir = out / "demo-quick"
    if not (demo_dir / "results.json").exists():
        import slimline

        slimline.run(recipe | {"benchmark": None}, demo_dir)
    trials = 4 if quick else 8
    common = {
        "max_drop": 1.0,
        "runtime": "openvino",
        "batch": BATCH,
        "trials": trials,
        "seed": 0,
        "parallel": 2,
        "proxy_epochs": 1,
        "full_epochs": 1,
        **search_kwargs(quick),
    }
    for name in ("dask-local", "dask-cluster"):
        import shutil

        shutil.rmtree(out / name, ignore_errors=True)
    local = run_search(demo_dir / "01_train", recipe["data"], out / "dask-local", **common)
    bad: list[str] = []
    kill: dict[str, Any] = {}
    with (
        LocalCluster(
            host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        done = threading.Event()

        def watch() -> None:
            trials_dir = out / "dask-cluster" / "trials"
            me = psutil.Process()
            while not done.is_set():
                for p in [me, *me.children(recursive=True)]:
                    try:
                        for c in p.net_connections(kind="inet"):
                            if not (_loopback(c.laddr) and _loopback(c.raddr)):
                                bad.append(f"pid {p.pid}: {c}")
                    except psutil.Error:
                        pass
                recs = [json.loads(f.read_text()) for f in trials_dir.glob("*.json")] if trials_dir.exists() else []
                complete = sorted(r["number"] for r in recs if r.get("state") == "complete")
                busy = {a: list(k) for a, k in client.processing().items() if k}
                if complete and busy and not kill:  # a worker running a trial: killed mid-trial
                    addr = sorted(busy)[0]
                    victim = client.run(os.getpid)[addr]
                    kill.update(
                        {
                            "after_complete": complete,
                            "pid": victim,
                            "worker": addr,
                            "running": [str(k) for k in busy[addr]],
                            "at": time.time(),
                        }
                    )
                    os.kill(victim, signal.SIGKILL)
                time.sleep(1.0)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        try:
            dask = run_search(
                demo_dir / "01_train",
                recipe["data"],
                out / "dask-cluster",
                executor="dask",
                scheduler=cluster.scheduler_address,
                **common,
            )
        finally:
            done.set()
            th.join()
    recs = {int(f.stem): json.loads(f.read_text()) for f in (out / "dask-cluster" / "trials").glob("*.json")}
    lost = [n for n in kill.get("after_complete", []) if recs.get(n, {}).get("state") != "complete"]
    lb, db = local["chosen"], dask["chosen"]
    return {
        "dask_same_best": bool(lb and db and lb["params"] == db["params"]),
        "trials_lost": len(lost),
        "details": {
            "local_best": lb and {k: lb[k] for k in ("number", "params", "items_per_s", "drop")},
            "dask_best": db and {k: db[k] for k in ("number", "params", "items_per_s", "drop")},
            "kill": kill,
            "dask_complete": dask["complete"],
            "dask_failed": dask["failed"],
            "local_complete": local["complete"],
            "trials": trials,
            "non_loopback": bad[:20],
            "machines": sorted({r["machine"]["kind"] for r in recs.values() if "machine" in r}),
        },
    }


def part_cifar(out: Path, quick: bool) -> dict[str, Any]:
    import slimline
    from slimline.api import Artifact, is_artifact_dir, run_search

    data = {"name": "cifar10-sample", "val_size": 200}
    weights = DATA / "cifar10" / "resnet56-4bfd9763.th"
    work = out / "cifar"
    base_dir = work / "00_baseline"
    if not is_artifact_dir(base_dir):  # a recipe with no steps writes the baseline artifact (public API only)
        slimline.run(
            {
                "name": "baseline",
                "model": {"name": "cifar_resnet56", "weights": str(weights)},
                "data": data,
                "steps": [],
                "benchmark": None,
            },
            work,
        )
    base = Artifact.load(base_dir)
    peer_dir = work / "peer_nncf_int8"
    if not is_artifact_dir(peer_dir):  # the by-hand peer: fuse, ONNX, OpenVINO IR, NNCF int8 (300 calibration)
        fused = slimline.apply_step("fuse", base, work / "peer_fuse", layout="nchw")
        onnx = slimline.apply_step("export_onnx", fused, work / "peer_onnx")
        ir = slimline.apply_step("export_openvino", onnx, work / "peer_ir")
        slimline.apply_step("quantize", ir, peer_dir, data, backend="openvino")
    budget = "5m" if quick else "90m"
    report = run_search(
        base_dir,
        data,
        work / "search",
        resume=(work / "search" / "study.db").exists(),
        max_drop=1.0,
        runtime="openvino",
        batch=BATCH,
        budget=budget,
        seed=0,
        prune_methods=["channel", "block", "block+channel"],
        proxy_epochs=2 if not quick else 1,
        full_epochs=40 if not quick else 1,
        **search_kwargs(quick),
    )
    chosen = report["chosen"]
    rts = ["openvino", "openvino:hint=throughput"]
    targets = [(str(peer_dir), rts)] + ([(chosen["artifact"], [chosen["runtime"]])] if chosen else [])
    rows = bench(targets, quick)
    peer = [r for r in rows if Path(r["artifact_path"]) == peer_dir]
    mine = [r for r in rows if chosen and Path(r["artifact_path"]) == Path(chosen["artifact"])]
    return {
        "chosen_items_per_s": mine[0]["throughput"] if mine else None,
        "peer_items_per_s": max(r["throughput"] for r in peer) if peer else None,
        "test_drop": chosen["test_drop"] if chosen else None,
        "details": {
            "budget": budget,
            "bench": rows,
            "chosen": chosen,
            "front": report["front"],
            "stopped": report["stopped"],
            "trials": report["trials"],
        },
    }


PARTS = {"demo": part_demo, "dask": part_dask, "cifar": part_cifar}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "optimize")
    ap.add_argument(
        "--only",
        nargs="*",
        default=["demo", "dask"],
        choices=list(PARTS),
        help="parts to run (default: demo dask; cifar takes about 2 hours)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny budgets and data: checks the script, not the claims")
    args = ap.parse_args()
    from slimline.api import environment, write_json

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    prev = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    doc: dict[str, Any] = {
        k: prev.get(k)
        for k in (
            "search_items_per_s",
            "demo_best_items_per_s",
            "drop",
            "chosen_items_per_s",
            "peer_items_per_s",
            "test_drop",
            "dask_same_best",
            "trials_lost",
        )
    }
    doc["details"] = prev.get("details", {})
    t0 = time.time()
    for name in args.only:
        print(f"== part {name}{' (quick)' if args.quick else ''}", flush=True)
        got = PARTS[name](out, args.quick)
        doc["details"][name] = got.pop("details") | {"quick": args.quick, "seconds": round(time.time() - t0, 1)}
        doc.update(got)

    def ge(a: Any, b: Any, f: float = 1.0) -> bool | None:
        return None if a is None or b is None else bool(a >= f * b)

    doc["must_show"] = {
        "demo_as_fast_within_drop": None
        if doc["drop"] is None
        else bool(ge(doc["search_items_per_s"], doc["demo_best_items_per_s"]) and doc["drop"] <= 1.0),
        "cifar_2x_peer_within_drop": None
        if doc["test_drop"] is None
        else bool(ge(doc["chosen_items_per_s"], doc["peer_items_per_s"], 2.0) and doc["test_drop"] <= 1.0),
        "dask_same_best_no_loss": None
        if doc["dask_same_best"] is None
        else bool(doc["dask_same_best"] and doc["trials_lost"] == 0),
    }
    doc["settings"] = {"batch": BATCH, "parts": args.only, "quick": args.quick}
    doc["environment"] = environment()
    write_json(out / "results.json", doc)
    print(json.dumps({k: v for k, v in doc.items() if k not in ("details", "environment")}, indent=1))
    print(f"wrote {out / 'results.json'} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
