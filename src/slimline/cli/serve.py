"""``slimline serve`` (HTTP server with dynamic batching) and ``slimline loadtest`` (a bounded load on it)."""

from __future__ import annotations

from pathlib import Path

import typer

from slimline.cli.app import JSON_OPTION, app, dump_json, friendly
from slimline.cli.common import DOWNLOAD_OPTION
from slimline.progress import console
from slimline.serving import ServeSettings

_D = ServeSettings()


@app.command()
@friendly
def serve(
    artifact: Path = typer.Argument(..., help="artifact folder (torch, onnx or openvino)"),
    runtime: str | None = typer.Option(
        None,
        "--runtime",
        "-r",
        help="runtime[:option=value,...], e.g. openvino:hint=latency "
        "(default: the artifact's; options saved by `slimline tune` apply first)",
    ),
    host: str = typer.Option(_D.host, help="address to bind; 127.0.0.1 keeps the server on this machine"),
    port: int = typer.Option(_D.port, help="port to listen on"),
    max_batch: int = typer.Option(_D.max_batch, help="rows run together at most (1: no batching)"),
    max_wait_ms: float = typer.Option(_D.max_wait_ms, help="how long a batch waits for more requests"),
    queue_size: int = typer.Option(_D.queue_size, help="requests waiting at most; beyond: 503 + Retry-After"),
    instances: int = typer.Option(_D.instances, help="model instances, each its own session and thread"),
    workers: int = typer.Option(
        _D.workers, help="server processes on one port, each with its own model instances (/metrics: per process)"
    ),
    max_body_mb: float = typer.Option(_D.max_body_bytes / 2**20, help="largest request body (MiB): beyond, 413"),
    stats: Path | None = typer.Option(None, help="write accepted/answered request counts and ids here at exit"),
) -> None:
    """Serve an artifact over HTTP until SIGTERM or Ctrl-C (then: stop accepting, answer what was accepted, exit 0).

    Example: slimline serve runs/q56/02_quantize --max-batch 32 --instances 2

    POST /predict with JSON {"id": "a1", "inputs": {"input": [[...]]}} or a .npy body
    (content-type application/x-npy) for a single-input model, .npz (application/x-npz) for several;
    GET /health, /ready, /metadata (signature), /metrics (Prometheus). See docs/howto/serving.md.
    """
    from slimline.bench.harness import RuntimeSpec
    from slimline.serving import serve as run_server

    spec = RuntimeSpec.parse(runtime) if runtime else None
    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        queue_size=queue_size,
        max_body_bytes=int(max_body_mb * 2**20),
        instances=instances,
        workers=workers,
        host=host,
        port=port,
    )
    run_server(
        artifact,
        spec.name if spec else None,
        spec.options if spec else None,
        settings,
        stats,
        on_ready=lambda url: console.print(
            f"serving {artifact} on {url} (ready after warm-up: {url}/ready)", highlight=False
        ),
    )
    console.print("server stopped: every accepted request was answered", highlight=False)


@app.command()
@friendly
def loadtest(
    url: str = typer.Argument("http://127.0.0.1:8000", help="the server (loopback only); /predict is appended"),
    data: str = typer.Option("cifar10-sample", "--data", "-d", help="dataset whose samples are sent"),
    split: str = typer.Option("test", help="train or test"),
    data_dir: Path | None = typer.Option(None),
    download: bool = DOWNLOAD_OPTION,
    count: int = typer.Option(1000, min=1, help="requests sent at most"),
    concurrency: list[int] = typer.Option(
        [16], "--concurrency", "-c", min=1, help="requests in flight at most; repeat for a sweep (one run each)"
    ),
    rate: float | None = typer.Option(None, help="requests per second (open loop); default: as fast as answered"),
    time_limit: float = typer.Option(60.0, help="stop sending after this many seconds"),
    timeout: float = typer.Option(30.0, help="seconds one request may take before it counts as lost"),
    json_path: Path | None = JSON_OPTION,
) -> None:
    """Load-test a `slimline serve` endpoint with real samples; print throughput, p50/p90/p99, errors, lost.

    Example: slimline loadtest http://127.0.0.1:8000 -d cifar10-sample --count 2000 --concurrency 200

    JSON keys (of the last run; every run under "runs"): sent, ok, errors, lost, refused, seconds, concurrency,
    rate, throughput_rps, p50_ms, p90_ms, p99_ms, mean_ms, statuses, url, data. Saved as RUN/serving/NAME.json,
    `slimline report RUN` plots latency and throughput against concurrency.
    """
    from slimline.data import load_dataset
    from slimline.loadtest import check_loopback, run_load

    target = check_loopback(url)
    samples = load_dataset(data, split, data_dir, limit=count, download=download).inputs()
    runs = []
    for c in concurrency:
        res = run_load(target, samples, count, c, rate, time_limit, timeout).to_dict()
        runs.append(res)
        console.print(
            f"concurrency {c}: {res['ok']}/{res['sent']} answered in {res['seconds']} s: {res['throughput_rps']} "
            f"req/s, p50 {res['p50_ms']} ms, p90 {res['p90_ms']} ms, p99 {res['p99_ms']} ms; errors "
            f"{res['errors']}, lost {res['lost']}, refused {res['refused']}",
            highlight=False,
        )
    dump_json(json_path, runs[-1] | {"url": target, "data": data, "runs": runs})
