"""Serving benchmark: a pruned + int8 CIFAR ResNet-56 behind `slimline serve`, loaded by `slimline loadtest`'s
client.

1. the artifact: ``--artifact``, else the pruned (-40% MACs, short KD on training images) + OpenVINO int8 ResNet-56
   built through ``slimline.api.run`` into OUT/work/p56 (kept for reruns; its test top-1 with n is reported);
2. served with dynamic batching and with ``--max-batch 1``: ``--count`` requests of real CIFAR test images at
   ``--concurrency`` each (rps, p50/p90/p99, errors, lost; mean batch size from the server's stats file);
3. `slimline bench` offline throughput of the same artifact at the server's mean batch size, and at batch 1
   (their ratio bounds what batching can gain for this model on this CPU);
4. SIGTERM to the server during a load test: every request the server accepted (its stats file lists their ids)
   must be answered to the client (``lost_on_shutdown``) and the server must exit 0.

Writes OUT/results.json with rps_batched, rps_unbatched, p99_ms, errors, lost, offline_items_per_s,
lost_on_shutdown, accuracy (the artifact's test top-1, n, 95% interval), client_cpu_share (the client's part of
the CPU seconds spent during the batched load), server_cpu_ms_per_request vs offline_ms_per_item, their n and
95% intervals (bootstrap over requests), must_show pass/fail, environment.
Server and client share this machine and talk over 127.0.0.1 only; every process is bounded by a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
WEIGHTS = ROOT.parent / "shared" / "data" / "cifar10" / "resnet56-4bfd9763.th"


def log(msg: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def slimline(*args: str, timeout: float = 1800) -> None:
    env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "SLIMLINE_PROGRESS": "0"}
    log("slimline " + " ".join(args))
    subprocess.run([PY, "-m", "slimline", *args], check=True, cwd=ROOT, env=env, timeout=timeout)


def pruned_int8_recipe(quick: bool) -> dict[str, Any]:
    """The pruned + int8 ResNet-56 this benchmark serves: blocks and stage-3 channels out (-40% MACs, allocated
    from sensitivity curves on training images), a short KD recovery from the unpruned model on the training
    images, BN folded, ONNX, OpenVINO int8 (NNCF, calibrated on training images); test top-1 of each stage."""
    return {
        "name": "serve_resnet56",
        "model": {"name": "cifar_resnet56", "weights": str(WEIGHTS)},
        "data": {"name": "cifar10-sample", "val_size": 200},
        "seed": 0,
        "steps": [
            {"evaluate": {"split": "test"}},
            {
                "prune": {
                    "method": ["block", "channel"],
                    "channel_layers": ["layer3.*.conv1"],
                    "max_ratio": 0.5,
                    "target": {"macs": 0.4},
                    "sensitivity": {"samples": 32 if quick else 64},
                    "finetune": {
                        "epochs": 1 if quick else 3,
                        "lr": 0.01,
                        "batch_size": 64,
                        "kd": True,
                        "temperature": 4.0,
                    },
                }
            },
            {"evaluate": {"split": "test"}},
            {"fuse": {"layout": "auto"}},
            {"export_onnx": {}},
            {"quantize": {"backend": "openvino"}},
            {"evaluate": {"split": "test"}},
        ],
    }


def find_artifact(out: Path, given: str | None, quick: bool) -> tuple[Path, str, dict[str, Any]]:
    """(artifact folder, how it was found, its test accuracy record). Built once into OUT/work/p56, then reused."""
    if given:
        return Path(given), "given with --artifact", {}
    run_dir = out / "work" / "p56"
    acc_file = out / "work" / "p56_accuracy.json"
    if not acc_file.is_file():
        from slimline import api

        log("building the pruned + int8 ResNet-56 (slimline.api.run; cached in " + str(run_dir) + ")")
        res = api.run(pruned_int8_recipe(quick), run_dir)
        acc_file.write_text(json.dumps(_accuracies(res, run_dir), indent=1))
    acc = json.loads(acc_file.read_text())
    return Path(acc["artifact"]), "built here through slimline.api.run (pruned -40% MACs + KD, OpenVINO int8)", acc


def final_accuracy(acc: dict[str, Any]) -> dict[str, Any] | None:
    """{top1, n, top1_ci95, runtime} of the last evaluation in a build record (None when not built here)."""
    evals = acc.get("evaluations") or []
    if not evals:
        return None
    m = evals[-1]["metrics"]
    return {k: m.get(k) for k in ("top1", "n", "top1_ci95", "runtime", "top1_agreement")}


def _accuracies(res: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Test top-1 (with n) after each evaluate step, and the int8 artifact's folder."""
    metas = sorted(run_dir.glob("*/artifact.json"))
    q = [m.parent for m in metas if "quantize" in m.parent.name]
    evals = []
    for rec in sorted(run_dir.glob("*evaluate*/record.json")):
        doc = json.loads(rec.read_text())
        evals.append({"step": rec.parent.name, "metrics": doc.get("metrics", doc.get("result", {}))})
    return {"artifact": str(q[-1]), "evaluations": evals}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`slimline serve` in its own process, stopped by SIGTERM (killed after a bound)."""

    def __init__(self, artifact: Path, max_batch: int, stats: Path, extra: list[str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = os.environ | {"PYTHONPATH": str(ROOT / "src"), "SLIMLINE_PROGRESS": "0"}
        cmd = [
            PY,
            "-m",
            "slimline",
            "serve",
            str(artifact),
            "--port",
            str(self.port),
            "--max-batch",
            str(max_batch),
            "--stats",
            str(stats),
            *extra,
        ]
        log(" ".join(cmd[1:]))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode} before it was ready")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200 and self.workers_up() >= workers:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("server not ready within 120 s")

    def metric(self, name: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else float("nan")

    def workers_up(self, tries: int = 20) -> int:
        """How many worker processes answer (each listens once warmed up): pids seen over fresh connections."""
        pids = set()
        for _ in range(tries):
            with httpx.Client() as c:
                pids.add(c.get(self.url + "/metadata", timeout=5).json().get("pid"))
        return len(pids)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server process and its workers so far."""
        import psutil

        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def bootstrap(values: np.ndarray, stat: Any, n: int = 1000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    if len(values) == 0:
        return [float("nan")] * 2
    s = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return [round(float(np.percentile(s, 2.5)), 3), round(float(np.percentile(s, 97.5)), 3)]


def load_once(art: Path, samples: np.ndarray, max_batch: int, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    from slimline.api import run_load

    stats = Path(args.out) / "work" / f"stats_{tag}.json"
    srv = Server(art, max_batch, stats, args.serve_args)
    try:
        c0, s0, w0 = os.times(), srv.cpu_seconds(), time.perf_counter()
        res = run_load(srv.url, samples, args.count, args.concurrency, time_limit=args.time_limit, id_prefix=tag)
        c1, s1, wall = os.times(), srv.cpu_seconds(), time.perf_counter() - w0
    finally:
        rc = srv.stop()
    served = json.loads(stats.read_text()) if stats.is_file() else {}
    rows, batches = served.get("rows", 0), served.get("batches", 0)  # summed over the server's workers
    client_cpu = (c1.user + c1.system) - (c0.user + c0.system)
    server_cpu = s1 - s0
    d = res.to_dict()
    lat = np.asarray(res.latencies_ms)
    d |= {
        "mean_batch": round(rows / batches, 2) if batches else None,
        "server_exit": rc,
        # CPU seconds used during the load: the client (this process) and the server (all its processes), and the
        # client's share of both and of the machine (wall seconds x cores)
        "client_cpu_s": round(client_cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "client_cpu_share": round(client_cpu / (client_cpu + server_cpu), 3) if client_cpu + server_cpu else None,
        "client_cpu_of_machine": round(client_cpu / (wall * (os.cpu_count() or 1)), 3),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, res.ok), 3),
        "n": res.sent,
        "p99_ms_ci95": bootstrap(lat, lambda a: np.percentile(a, 99)),
        "rps_ci95": [round(1000 * args.concurrency / x, 1) for x in bootstrap(lat, np.mean)[::-1]],
    }
    log(
        f"{tag}: {d['throughput_rps']} req/s, p99 {d['p99_ms']} ms, errors {d['errors']}, lost {d['lost']}, "
        f"mean batch {d['mean_batch']}"
    )
    return d


def offline(art: Path, batch: int, out: Path) -> float | None:
    path = out / "work" / f"offline_b{batch}.json"
    slimline(
        "bench",
        str(art),
        "-b",
        str(batch),
        "--no-peak",
        "--runtime",
        json.loads((art / "artifact.json").read_text()).get("meta", {}).get("runtime") or "openvino",
        "--json",
        str(path),
        timeout=900,
    )
    doc = json.loads(path.read_text())
    found = [r["throughput"] for r in doc.get("results", []) if r.get("status") == "ok"]
    return round(float(found[0]), 1) if found else None


def text_part(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The pretrained all-MiniLM-L6-v2 exported with its tokenizer, served with raw text in (JSON 'texts', one
    sentence per request) and embeddings out: held-out fortunes sentences at concurrency 16; the served
    embeddings compared with the same artifact run offline on the same text."""
    from concurrent.futures import ThreadPoolExecutor

    from slimline.api import Artifact, hf_text, load_fortunes, open_session

    folder = out / "work" / "minilm_text"
    if not (folder / "artifact.json").is_file():
        model, tok = hf_text.load_hf_encoder(hf_text.minilm_folder())
        hf_text.export_text_onnx(hf_text.SentenceEmbedder(model), tok, folder)
    art = Artifact.load(folder)
    texts = load_fortunes("test").texts[: 50 if args.quick else 400]
    name = art.meta["text"]["output"]
    srv = Server(folder, 16, out / "work" / "stats_text.json", ["--max-wait-ms", "5"])
    try:
        with httpx.Client(timeout=60) as client:

            def one(i: int) -> tuple[int, float, Any]:
                t = time.perf_counter()
                r = client.post(srv.url + "/predict", json={"texts": [texts[i]], "id": str(i)})
                ok = r.status_code == 200 and r.json().get("id") == str(i)
                return (
                    r.status_code,
                    1000 * (time.perf_counter() - t),
                    np.asarray(r.json()["outputs"][name][0]) if ok else None,
                )

            t0 = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(one, range(len(texts))))
            seconds = time.perf_counter() - t0
        mean_batch = srv.metric("slimline_batch_size_sum") / max(1.0, srv.metric("slimline_batch_size_count"))
    finally:
        rc = srv.stop()
    session = open_session(art, "onnxruntime")
    k = min(len(texts), 64)
    want = session.run_named(hf_text.encode_texts(folder, texts[:k], pad_to_max=True))[name]
    got = [a[2] for a in answers[:k]]
    cos = [
        float(np.dot(g, w) / (np.linalg.norm(g) * np.linalg.norm(w))) if g is not None else float("nan")
        for g, w in zip(got, want, strict=True)
    ]
    errors = sum(1 for a in answers if a[0] != 200)
    lat = np.asarray([a[1] for a in answers if a[0] == 200])
    d = {
        "artifact": str(folder),
        "requests": len(texts),
        "errors": errors,
        "rps": round(len(texts) / seconds, 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "mean_batch": round(mean_batch, 2),
        "min_cosine_vs_offline": round(min(cos), 6),
        "compared": k,
        "server_exit": rc,
    }
    log(f"text: {d}")
    return d


def shutdown_test(art: Path, samples: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from slimline.api import run_load

    stats = Path(args.out) / "work" / "stats_shutdown.json"
    stats.unlink(missing_ok=True)
    srv = Server(art, args.max_batch, stats, args.serve_args)
    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.setdefault(
            "res",
            # more requests than the server answers before the signal, so that the signal lands mid-load
            run_load(srv.url, samples, 20 * args.count, args.concurrency, time_limit=args.time_limit, id_prefix="s"),
        )
    )
    t.start()
    time.sleep(args.sigterm_after)
    log(f"SIGTERM to the server {args.sigterm_after} s into the load")
    rc = srv.stop()
    t.join(args.time_limit + 60)
    res = box["res"]
    served = json.loads(stats.read_text()) if stats.is_file() else {"accepted_ids": None}
    accepted = set(served.get("accepted_ids") or [])
    lost = len(accepted - set(res.answered_ids)) if served["accepted_ids"] is not None else None
    d = {
        "server_exit": rc,
        "accepted_by_server": len(accepted),
        "answered": res.ok,
        "signal_mid_load": res.ok < res.sent,  # requests were still being sent when the server stopped
        "refused_after_signal": res.refused,
        "client_lost": res.lost,
        "client_errors": res.errors,
        "sent": res.sent,
        "lost_on_shutdown": lost,
    }
    log(f"shutdown: {d}")
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/benchmarks/serve")
    ap.add_argument("--artifact")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--sigterm-after", type=float, default=1.0)
    ap.add_argument("--serve-args", nargs="*", default=["--max-wait-ms", "5", "--queue-size", "4096"])
    ap.add_argument("--workers", type=int, default=1, help="server processes (slimline serve --workers)")
    ap.add_argument("--quick", action="store_true", help="300 requests at concurrency 50 (a correctness run)")
    args = ap.parse_args()
    if args.workers > 1:
        args.serve_args = [*args.serve_args, "--workers", str(args.workers)]
    if args.quick:
        args.count, args.concurrency = 300, 50
    out = ROOT / args.out
    (out / "work").mkdir(parents=True, exist_ok=True)
    log(f"repo {ROOT}, writing {out / 'results.json'}")
    t0 = time.time()
    sys.path.insert(0, str(ROOT / "src"))
    from slimline.api import environment, load_dataset, write_json

    art, how, accuracy = find_artifact(out, args.artifact, args.quick)
    log(f"serving {art} ({how})")
    samples = load_dataset("cifar10-sample", "test").inputs()
    batched = load_once(art, samples, args.max_batch, args, "b")
    unbatched = load_once(art, samples, 1, args, "u")
    mean_b = max(1, round(batched["mean_batch"] or 1))
    offline_tput = offline(art, mean_b, out)
    offline_b1 = offline(art, 1, out) if mean_b != 1 else offline_tput
    shut = shutdown_test(art, samples, args)
    text = text_part(out, args)
    ratio = batched["throughput_rps"] / unbatched["throughput_rps"] if unbatched["throughput_rps"] else None
    frac = batched["throughput_rps"] / offline_tput if offline_tput else None
    doc = {
        "rps_batched": batched["throughput_rps"],
        "rps_unbatched": unbatched["throughput_rps"],
        "p99_ms": batched["p99_ms"],
        "errors": batched["errors"],
        "lost": batched["lost"],
        "offline_items_per_s": offline_tput,
        "lost_on_shutdown": shut["lost_on_shutdown"],
        "n": batched["n"],
        # the served artifact's CIFAR-10 test top-1 (n images, 95% interval), from its build's last evaluate step
        "accuracy": final_accuracy(accuracy),
        # the load-test client runs on the same cores: its share of the CPU seconds used during the batched load
        "client_cpu_share": batched["client_cpu_share"],
        # where the server's time goes: its CPU per request against the model's offline time per item
        "server_cpu_ms_per_request": batched["server_cpu_ms_per_request"],
        "offline_ms_per_item": offline_tput and round(1000 / offline_tput, 3),
        "intervals": {
            "p99_ms_ci95": batched["p99_ms_ci95"],
            "rps_batched_ci95": batched["rps_ci95"],
            "rps_unbatched_ci95": unbatched["rps_ci95"],
        },
        "offline_items_per_s_batch1": offline_b1,
        "ratios": {
            "batched_over_unbatched": ratio and round(ratio, 2),
            "served_over_offline": frac and round(frac, 3),
            # what batching can gain at most for this model on this CPU, offline
            "offline_batched_over_batch1": offline_tput and offline_b1 and round(offline_tput / offline_b1, 2),
        },
        "must_show": {
            "no_errors_no_lost": batched["errors"] == 0 and batched["lost"] == 0 and batched["sent"] == args.count,
            "batched_3x_unbatched": bool(ratio and ratio >= 3),
            "served_60pct_of_offline": bool(frac and frac >= 0.6),
            "lost_on_shutdown_0": shut["lost_on_shutdown"] == 0
            and shut["server_exit"] == 0
            and shut["signal_mid_load"],
            "text_artifact": text["errors"] == 0 and text["min_cosine_vs_offline"] >= 0.999,
        },
        "batched": batched,
        "unbatched": unbatched,
        "shutdown": shut,
        "text": text,
        "artifact": str(art),
        "artifact_how": how,
        "artifact_accuracy": accuracy,
        "settings": {
            "count": args.count,
            "concurrency": args.concurrency,
            "max_batch": args.max_batch,
            "serve_args": args.serve_args,
            "workers": args.workers,
            "offline_batch": mean_b,
            "quick": args.quick,
        },
        "seconds": round(time.time() - t0, 1),
        "environment": environment(),
    }
    write_json(out / "results.json", doc)
    print(
        json.dumps(
            {
                k: doc[k]
                for k in (
                    "rps_batched",
                    "rps_unbatched",
                    "p99_ms",
                    "errors",
                    "lost",
                    "offline_items_per_s",
                    "offline_items_per_s_batch1",
                    "lost_on_shutdown",
                    "ratios",
                    "must_show",
                )
            },
            indent=1,
        )
    )
    log(f"wrote {out / 'results.json'} in {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
