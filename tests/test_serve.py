"""slimline serve over loopback: validation errors name the field (4xx), a full queue answers 503, a failing batch
fails only its requests, answers reach the right callers under concurrency, /metrics counts what was sent, and
loadtest counts answers, errors and lost requests. Servers bind 127.0.0.1 on a free port and stop in teardown."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("aiohttp")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from slimline.errors import SlimlineError  # noqa: E402
from slimline.loadtest import check_loopback, run_load  # noqa: E402
from slimline.runtimes.base import Session  # noqa: E402
from slimline.serving import ServeSettings, create_app  # noqa: E402
from slimline.signature import Signature, TensorSpec  # noqa: E402

SIG = Signature((TensorSpec("input", "float32", ("batch", 3, 4, 4)),), (TensorSpec("output", "float32", ("batch", 2)),))
NPY = {"content-type": "application/x-npy"}
POISON = -999.0  # a batch holding this value makes the fake runtime raise


class FakeSession(Session):
    """output[:, 0] = sum of each sample, output[:, 1] = the sample's first value; raises on POISON; records batches."""

    signature = SIG

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay, self.gate, self.batches = delay, gate, []

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.run_named({"input": batch})["output"]

    def run_named(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["input"]
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(len(x))
        if (x == POISON).any():
            raise RuntimeError("poisoned batch")
        flat = x.reshape(len(x), -1)
        return {"output": np.stack([flat.sum(1), flat[:, 0]], 1).astype(np.float32)}

    def describe(self) -> dict[str, Any]:
        return {"name": "fake"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(
        self, session: Session, sig: Signature = SIG, meta: dict[str, Any] | None = None, **settings: Any
    ) -> None:
        self.port = _free_port()
        self.settings = ServeSettings(port=self.port, warmup_batches=1, **settings)
        app = create_app([session], sig, self.settings, meta=meta)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise AssertionError("server did not become ready")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def server() -> Iterator[Running]:
    with Running(FakeSession(), max_batch=8, max_wait_ms=20, max_body_bytes=64 * 1024) as s:
        yield s


def _sample(v: float = 1.0, rows: int = 1) -> np.ndarray:
    return np.full((rows, 3, 4, 4), v, np.float32)


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def test_json_and_npy_predict_metadata_and_health(server: Running) -> None:
    r = httpx.post(server.url + "/predict", json={"id": "a1", "inputs": {"input": _sample(2).tolist()}})
    assert r.status_code == 200 and r.json()["id"] == "a1"
    assert r.json()["outputs"]["output"] == [[96.0, 2.0]]
    r = httpx.post(
        server.url + "/predict",
        content=_npy(_sample(1, rows=2)),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy", "x-request-id": "b"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "b"
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), [[48, 1], [48, 1]])
    r = httpx.post(server.url + "/predict", json={"inputs": {"input": _sample(1)[0].tolist()}})  # no batch axis
    assert r.status_code == 200 and r.json()["outputs"]["output"] == [[48.0, 1.0]]
    meta = httpx.get(server.url + "/metadata").json()
    assert meta["signature"] == SIG.to_dict() and meta["settings"]["max_batch"] == 8
    assert httpx.get(server.url + "/health").json() == {"status": "alive"}


@pytest.mark.parametrize(
    ("body", "ctype", "status", "named"),
    [
        (b"{not json", "application/json", 400, "body"),
        (json.dumps({"inputs": {"input": [[["a"] * 4] * 4] * 3}}).encode(), "application/json", 422, "inputs.input"),
        (_npy(np.array(["x"] * 48).reshape(1, 3, 4, 4)), "application/x-npy", 422, "inputs.input"),
        (
            json.dumps({"inputs": {"input": _sample(1)[:, :2].tolist()}}).encode(),
            "application/json",
            422,
            "inputs.input: shape [1, 2, 4, 4], dimension 1",
        ),
        (json.dumps({"inputs": {"input": [1.0, 2.0]}}).encode(), "application/json", 422, "inputs.input: shape"),
        (json.dumps({"inputs": {"pixels": _sample().tolist()}}).encode(), "application/json", 422, "inputs.pixels"),
        (json.dumps({"inputs": {}}).encode(), "application/json", 422, "inputs.input: missing"),
        (json.dumps({"data": 1}).encode(), "application/json", 422, "inputs"),
        (_npy(_sample(1, rows=9)), "application/x-npy", 413, "9 rows"),
        (b"x" * (65 * 1024), "application/x-npy", 413, "body"),
        (b"abc", "text/csv", 415, "content-type"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(
    server: Running, body: bytes, ctype: str, status: int, named: str
) -> None:
    r = httpx.post(server.url + "/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert named in r.json()["error"]
    ok = httpx.post(server.url + "/predict", content=_npy(_sample()), headers={"content-type": "application/x-npy"})
    assert ok.status_code == 200  # the server keeps serving


def test_runtime_failure_fails_only_its_batch(server: Running) -> None:
    r = httpx.post(server.url + "/predict", content=_npy(_sample(POISON)), headers=NPY)
    assert r.status_code == 500 and "poisoned batch" in r.json()["error"]
    r = httpx.post(server.url + "/predict", content=_npy(_sample(3)), headers=NPY)
    assert r.status_code == 200 and r.json()["outputs"]["output"] == [[144.0, 3.0]]


def test_full_queue_answers_503_with_retry_after() -> None:
    gate = threading.Event()
    gate.set()  # warm-up passes
    session = FakeSession(gate=gate)
    with Running(session, max_batch=1, max_wait_ms=0, queue_size=2) as s:
        gate.clear()  # the runtime blocks: one request runs, two wait, the rest find the queue full

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=20) as c:
                tasks = [
                    asyncio.create_task(
                        c.post("/predict", content=_npy(_sample(i)), headers={"content-type": "application/x-npy"})
                    )
                    for i in range(8)
                ]
                await asyncio.sleep(1.0)
                gate.set()
                return await asyncio.gather(*tasks)

        answers = asyncio.run(burst())
        codes = [r.status_code for r in answers]
        busy = [r for r in answers if r.status_code == 503]
    assert codes.count(503) >= 1 and codes.count(200) >= 2 and set(codes) <= {200, 503}
    assert busy and busy[0].headers["retry-after"] == "1"


def test_answers_reach_their_callers_and_metrics_count_them() -> None:
    session = FakeSession(delay=0.01)
    with Running(session, max_batch=16, max_wait_ms=10) as s:

        async def many() -> list[tuple[int, httpx.Response]]:
            async with httpx.AsyncClient(base_url=s.url, timeout=20) as c:

                async def one(i: int) -> tuple[int, httpx.Response]:
                    rows = 1 + i % 3
                    body = {"id": f"req-{i}", "inputs": {"input": _sample(float(i), rows).tolist()}}
                    return i, await c.post("/predict", json=body)

                return await asyncio.gather(*(one(i) for i in range(60)))

        answers = asyncio.run(many())
        metrics = httpx.get(s.url + "/metrics").text
    for i, r in answers:
        assert r.status_code == 200 and r.json()["id"] == f"req-{i}"
        assert r.json()["outputs"]["output"] == [[48.0 * i, float(i)]] * (1 + i % 3)
    assert max(session.batches) > 3  # requests were batched together
    assert 'slimline_requests_total{status="200"} 60.0' in metrics
    assert "slimline_batch_size_count" in metrics and "slimline_queue_depth" in metrics
    assert "slimline_request_latency_seconds_count 60.0" in metrics


def test_loadtest_counts_answers_and_refuses_remote_hosts() -> None:
    with Running(FakeSession(), max_batch=8, max_wait_ms=5) as s:
        res = run_load(s.url, _sample(1, rows=5), count=40, concurrency=8, time_limit=30)
        poisoned = run_load(s.url, _sample(POISON, rows=2), count=4, concurrency=2, time_limit=30)
    assert (res.sent, res.ok, res.errors, res.lost) == (40, 40, 0, 0)
    d = res.to_dict()
    assert d["p50_ms"] <= d["p99_ms"] and d["throughput_rps"] > 0
    assert (poisoned.ok, poisoned.errors) == (0, 4)
    gone = run_load(s.url, _sample(1, rows=1), count=3, concurrency=1, time_limit=10)
    assert gone.refused >= 1 and gone.ok == 0 and gone.sent <= 3
    with pytest.raises(SlimlineError, match="loopback"):
        check_loopback("http://example.com:8000")
    assert check_loopback("127.0.0.1:9") == "http://127.0.0.1:9/predict"


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_serves_an_onnx_artifact_and_sigterm_answers_every_accepted_request(tmp_path: Any, workers: int) -> None:
    """`slimline serve` in its own process on a real ONNX artifact: answers match ONNX Runtime; SIGTERM during a
    load stops it with exit 0, and every request its stats file lists as accepted was answered to the client.
    With --workers 2: two processes answer on the one port, and the stats file sums both."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from torch import nn

    from slimline.onnx_export import export_onnx_artifact, ort_run

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    art, _ = export_onnx_artifact(model.eval(), tmp_path / "tiny", {"input_shape": [3, 4, 4], "num_classes": 2}, [])
    port, stats = _free_port(), tmp_path / "stats.json"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "SLIMLINE_PROGRESS": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slimline",
            "serve",
            str(art.path),
            "--port",
            str(port),
            "--max-batch",
            "4",
            "--stats",
            str(stats),
            "--workers",
            str(workers),
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 40
        while time.time() < deadline:
            try:
                if httpx.get(url + "/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        pids: set[int] = set()
        while time.time() < deadline and len(pids) < workers:  # each worker listens once warmed up
            with httpx.Client() as c:  # a new connection each time: the kernel spreads them over the workers
                pids.add(c.get(url + "/metadata", timeout=5).json()["pid"])
        assert len(pids) == workers
        x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
        r = httpx.post(url + "/predict", content=_npy(x), headers=NPY | {"x-request-id": "first"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "first"
        np.testing.assert_allclose(
            r.json()["outputs"]["output"], ort_run(art.model_file, {"input": x})[0], rtol=1e-4, atol=1e-5
        )
        assert httpx.get(url + "/metadata").json()["kind"] == "onnx"
        box: dict[str, Any] = {}
        t = threading.Thread(
            target=lambda: box.setdefault("res", run_load(url, x, count=100_000, concurrency=16, time_limit=20))
        )
        t.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        t.join(40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res, served = box["res"], json.loads(stats.read_text())
    assert served["accepted"] > 0 and served["accepted"] == served["answered"]
    assert set(served["accepted_ids"]) - {"first"} <= set(res.answered_ids)
    assert served.get("workers", 1) == workers


def test_loadtest_cli_sweeps_concurrency_on_cifar_images_and_the_report_plots_it(cifar_dir: Any, tmp_path: Any) -> None:
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from slimline.cli import app
    from slimline.report.plots import serving_latency

    sig = Signature((TensorSpec("input", "float32", ("batch", 3, 32, 32)),), SIG.outputs)
    assert serving_latency(SimpleNamespace(run_dir=tmp_path)) == []  # no load test: no serving section
    with Running(FakeSession(), sig, max_batch=8) as s:
        out = tmp_path / "serving" / "fake.json"
        r = CliRunner().invoke(
            app,
            [
                "loadtest",
                s.url,
                "-d",
                "cifar10-sample",
                "--data-dir",
                str(cifar_dir),
                "--count",
                "30",
                "-c",
                "1",
                "-c",
                "6",
                "--json",
                str(out),
            ],
        )
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert [x["concurrency"] for x in doc["runs"]] == [1, 6] and doc["concurrency"] == 6
    assert all((x["sent"], x["ok"], x["errors"], x["lost"]) == (30, 30, 0, 0) for x in doc["runs"])
    plots = serving_latency(SimpleNamespace(run_dir=tmp_path))
    assert len(plots) == 1 and plots[0].svg and plots[0].svg.startswith("<svg")
    r = CliRunner().invoke(app, ["loadtest", "http://10.1.2.3:80", "--count", "1"])
    assert r.exit_code == 1 and "loopback" in r.output


def test_png_images_are_preprocessed_as_the_artifacts_data_and_answers_name_the_class(cifar_dir: Any) -> None:
    from PIL import Image

    from slimline.data import load_dataset
    from slimline.data.base import ArrayDataset, DataSpec

    ds = load_dataset("cifar10-sample", "test", cifar_dir, limit=2)
    data = ds.spec.to_dict() | {"num_classes": 2, "class_names": ["small", "large"]}
    sig = Signature((TensorSpec("input", "float32", ("batch", 3, 32, 32)),), SIG.outputs)
    buf = io.BytesIO()
    Image.fromarray(ds.x[1]).save(buf, format="PNG")
    with Running(FakeSession(), sig, {"data": data}, max_batch=4) as s:
        r = httpx.post(s.url + "/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
        bad = httpx.post(s.url + "/predict", content=b"not an image", headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    want = ArrayDataset(ds.x[1:2], np.zeros(1, np.int64), DataSpec.from_dict(data)).inputs()
    np.testing.assert_allclose(r.json()["outputs"]["output"][0], [want.sum(), want.flat[0]], rtol=1e-4)
    assert r.json()["labels"] == [["small", "large"][int(np.argmax([want.sum(), want.flat[0]]))]]
    assert bad.status_code == 400 and "body: not a readable image" in bad.json()["error"]


def test_serve_cli_errors_are_one_line(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from slimline.cli import app

    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing"), "--port", str(_free_port())])
    assert r.exit_code == 1 and r.output.startswith("error:") and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["serve", str(tmp_path), "--max-batch", "0"])
    assert r.exit_code == 1 and "max-batch must be at least 1" in r.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", str(busy.getsockname()[1])])
    assert r.exit_code == 1 and "choose another --port" in r.output


def test_requests_of_different_shapes_are_batched_apart() -> None:
    sig = Signature((TensorSpec("input", "float32", ("batch", "n")),), SIG.outputs)
    session = FakeSession(delay=0.02)
    session.signature = sig
    with Running(session, sig, max_batch=16, max_wait_ms=30) as s:

        async def mixed() -> list[tuple[int, httpx.Response]]:
            async with httpx.AsyncClient(base_url=s.url, timeout=20) as c:

                async def one(i: int) -> tuple[int, httpx.Response]:
                    x = np.full((1, 2 + i % 3), float(i), np.float32)
                    return i, await c.post("/predict", json={"id": str(i), "inputs": {"input": x.tolist()}})

                return await asyncio.gather(*(one(i) for i in range(24)))

        answers = asyncio.run(mixed())
    for i, r in answers:
        assert r.status_code == 200 and r.json()["outputs"]["output"] == [[float(i) * (2 + i % 3), float(i)]]
    assert sum(session.batches) == 24 + 16  # 24 requests, plus the warm-up batch of 16 rows


def test_npy_bodies_read_as_numpy_loads_them() -> None:
    """The cached-header .npy reader gives np.load's arrays (C and Fortran order, 0-d, big-endian) and refuses
    truncated bodies and object arrays as np.load does."""
    import io

    from slimline.serving import read_npy

    def body(a: np.ndarray) -> bytes:
        b = io.BytesIO()
        np.save(b, a, allow_pickle=True)
        return b.getvalue()

    cases = [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array(5, np.int64),
        np.arange(4, dtype=">i4"),
    ]
    for a in cases * 2:  # the second pass reads cached headers
        got = read_npy(body(a))
        assert got.dtype == a.dtype and got.shape == a.shape
        np.testing.assert_array_equal(got, a)
    with pytest.raises(ValueError):
        read_npy(body(np.zeros(4))[:-3])
    with pytest.raises(ValueError):
        read_npy(body(np.array([{"a": 1}], dtype=object)))


def test_labels_come_from_the_data_or_a_text_classifiers_class_names() -> None:
    """Answers name the top-1 class from meta.data.class_names, else meta.text.class_names (text classifiers);
    no names, or scores that do not match them: no labels."""
    from slimline.serving import class_labels

    scores = {"logits": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    assert class_labels(scores, {"data": {"class_names": ["a", "b"]}}) == ["b", "a"]
    assert class_labels(scores, {"text": {"class_names": ["neg", "pos"], "output": "logits"}}) == ["pos", "neg"]
    assert class_labels(scores, {"text": {"output": "embedding"}}) is None
    assert class_labels(scores, {"text": {"class_names": ["x", "y", "z"]}}) is None
