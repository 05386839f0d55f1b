"""``slimline serve``: an HTTP server (FastAPI + uvicorn) over any artifact, with dynamic batching.

Requests wait in one bounded asyncio queue; each model instance (a runtime session with its own worker thread)
takes the first waiting request, then more, up to ``max_batch`` rows or ``max_wait_ms``, runs them as one batch
and routes each slice of the outputs back to its caller. Requests whose non-batch shapes or dtypes differ from
the batch being gathered start the next batch (bucketing), so a batch always stacks. When the queue is full the
server answers 503 with ``Retry-After``; a runtime failure fails the requests of that batch only (500).

Endpoints: ``POST /predict`` (JSON ``{"id": ..., "inputs": {name: nested list}}``, or a ``.npy`` body for a
single-input model / ``.npz`` with one array per input name), ``GET /health`` (alive), ``GET /ready`` (200 once
every instance has run its warm-up batches), ``GET /metadata`` (signature, runtime, settings) and ``GET /metrics``
(Prometheus). How a request body becomes named arrays is chosen per content type in ``DECODERS``: one function
each, so a task's own input (raw text, images) is one more entry.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request) at runtime

import asyncio
import functools
import io
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimline.errors import SlimlineError
from slimline.runtimes.base import Session
from slimline.signature import BATCH, Signature, TensorSpec

NPY_TYPES = ("application/x-npy", "application/octet-stream")
NPZ_TYPE = "application/x-npz"


class RequestError(SlimlineError):
    """A request the server refuses: ``status`` is the HTTP code, the message names the field."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServeSettings:
    """How the server batches, bounds and binds."""

    max_batch: int = 32  # rows run together at most
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for more
    queue_size: int = 1024  # requests waiting at most; beyond it 503 + Retry-After
    max_body_bytes: int = 16 * 1024 * 1024
    instances: int = 1  # model instances, each with its own session and worker thread
    workers: int = 1  # server processes sharing one listening socket, each with its own instances
    host: str = "127.0.0.1"
    port: int = 8000
    warmup_batches: int = 2

    def check(self) -> None:
        """Raise one SlimlineError naming the first setting out of range."""
        for name in ("max_batch", "queue_size", "max_body_bytes", "instances", "workers"):
            if int(getattr(self, name)) < 1:
                raise SlimlineError(f"serve: {name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise SlimlineError(f"serve: max-wait-ms must be 0 or more, not {self.max_wait_ms}")
        if not 0 <= self.port < 65536:
            raise SlimlineError(f"serve: port must lie in 0..65535, not {self.port}")


# ---------------------------------------------------------------------------------------------- decoding


def _json_inputs(body: bytes, signature: Signature, meta: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(f'body: not valid JSON ({e}); send {{"inputs": {{name: array}}}}', 400) from None
    if isinstance(doc, dict) and "texts" in doc and "inputs" not in doc:
        return _encode_texts(doc["texts"], meta), None if doc.get("id") is None else str(doc.get("id"))
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        raise RequestError(
            f"inputs: the JSON body needs an object 'inputs' mapping {', '.join(signature.input_names)} to arrays", 422
        )
    rid = doc.get("id")
    return doc["inputs"], None if rid is None else str(rid)


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of a version 1.0 .npy header (numpy parses it; cached: clients send the same
    header again and again, and parsing it is a Python literal_eval)."""
    f = io.BytesIO(header)
    np.lib.format.read_magic(f)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    return shape, fortran, dtype


def read_npy(body: bytes) -> np.ndarray:
    """The array of a .npy body, as ``np.load(allow_pickle=False)`` reads it; version 1.0 headers are parsed once
    and the data is used in place (read-only, no copy)."""
    if body[:8] == b"\x93NUMPY\x01\x00" and len(body) >= 10:
        end = 10 + int.from_bytes(body[8:10], "little")
        shape, fortran, dtype = _npy_header(body[:end])
        count = int(np.prod(shape, dtype=np.int64))
        if not dtype.hasobject and len(body) - end == count * dtype.itemsize:
            return np.frombuffer(body, dtype, count, end).reshape(shape, order="F" if fortran else "C")
    return np.load(io.BytesIO(body), allow_pickle=False)  # other versions, and the errors, as numpy words them


def _npy_inputs(body: bytes, signature: Signature, meta: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    if len(signature.inputs) != 1:
        raise RequestError(
            f"body: a .npy body fits single-input models; this one takes "
            f"{', '.join(signature.input_names)}: send .npz ({NPZ_TYPE}) or JSON",
            415,
        )
    try:
        arr = read_npy(body)
    except Exception as e:  # noqa: BLE001 - any unreadable body is the client's
        raise RequestError(f"body: not a readable .npy array ({type(e).__name__}: {e})", 400) from None
    return {signature.inputs[0].name: arr}, None


def _npz_inputs(body: bytes, signature: Signature, meta: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, None
    except Exception as e:  # noqa: BLE001 - any unreadable body is the client's
        raise RequestError(f"body: not a readable .npz archive ({type(e).__name__}: {e})", 400) from None


def _image_inputs(body: bytes, signature: Signature, meta: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """One encoded image (PNG, JPEG, ...) -> the model's single input, preprocessed as the artifact's data
    (``meta["data"]``: mean, std, layout) after a resize to its H x W."""
    from PIL import Image, UnidentifiedImageError

    from slimline.data.base import ArrayDataset, DataSpec

    data = meta.get("data")
    if len(signature.inputs) != 1 or not isinstance(data, dict):
        raise RequestError(
            "body: image bodies fit single-input image artifacts that record their data "
            "preprocessing; send the preprocessed array as .npy or JSON",
            415,
        )
    spec = DataSpec.from_dict(data)
    c, h, w = (
        spec.input_shape
        if not spec.preprocess or spec.preprocess.layout != "NHWC"
        else (spec.input_shape[2], spec.input_shape[0], spec.input_shape[1])
    )
    try:
        img: Image.Image = Image.open(io.BytesIO(body))
        img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(f"body: not a readable image ({e})", 400) from None
    x = np.array(img, dtype=np.uint8)[None]  # a writable copy
    return {signature.inputs[0].name: ArrayDataset(x, np.zeros(1, np.int64), spec).inputs()}, None


def decoder_meta(art: Any) -> dict[str, Any]:
    """What the body decoders read of an artifact: its meta, plus the folder of the tokenizer a text artifact
    carries (``meta["text"]``), so that it takes raw text."""
    return dict(art.meta) | ({"text_folder": str(art.path)} if "text" in art.meta else {})


def _encode_texts(texts: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    if "text_folder" not in meta:
        raise RequestError("texts: this artifact takes no raw text (it carries no tokenizer); send 'inputs'", 415)
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError("texts: give a non-empty list of strings", 422)
    from slimline.models.hf_text import encode_texts

    return encode_texts(str(meta["text_folder"]), texts, pad_to_max=True)  # padded: requests batch together


def _plain_text_inputs(body: bytes, signature: Signature, meta: Mapping[str, Any]) -> tuple[dict[str, Any], None]:
    """A text/plain body: one text per non-empty line, for artifacts that carry their tokenizer."""
    try:
        lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise RequestError(f"body: not UTF-8 text ({e})", 400) from None
    return _encode_texts(lines, meta), None


Decoder = Callable[[bytes, Signature, Mapping[str, Any]], tuple[dict[str, Any], "str | None"]]
# content type -> body decoder (named raw inputs, request id or None) given the signature and the artifact's meta.
# A task's own input (raw text for a text artifact) is one more function and one more line here.
DECODERS: dict[str, Decoder] = {"application/json": _json_inputs, NPZ_TYPE: _npz_inputs}
DECODERS.update({t: _npy_inputs for t in NPY_TYPES})
DECODERS["text/plain"] = _plain_text_inputs
DECODERS.update({t: _image_inputs for t in ("image/png", "image/jpeg", "image/webp", "image/bmp")})


def class_labels(outputs: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> list[str] | None:
    """The top-1 class name per row when the artifact names its classes and its first output scores them.

    The names come from ``meta["data"]["class_names"]`` (image and array tasks: the dataset's), else
    ``meta["text"]["class_names"]`` (a text classification artifact: the labels it was trained on, in score order;
    the hook for text classifiers, whose answers then carry ``labels`` as image classifiers' do)."""
    names = None
    for part in ("data", "text"):
        sub = meta.get(part)
        if isinstance(sub, dict) and sub.get("class_names"):
            names = sub["class_names"]
            break
    first = next(iter(outputs.values()), None)
    if not names or first is None or first.ndim != 2 or first.shape[1] != len(names):
        return None
    return [str(names[i]) for i in first.argmax(1)]


def _as_array(value: Any, spec: TensorSpec) -> np.ndarray:
    want = np.dtype(spec.dtype)
    if isinstance(value, np.ndarray):
        if not np.can_cast(value.dtype, want, "same_kind"):
            raise RequestError(f"inputs.{spec.name}: dtype {value.dtype} does not convert to the model's {want}")
        return value.astype(want, copy=False)
    try:
        arr = np.asarray(value)
    except ValueError:
        raise RequestError(f"inputs.{spec.name}: ragged nested lists; every row needs the same length") from None
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "f" and want.kind in "biu"):
        raise RequestError(f"inputs.{spec.name}: values of type {_kind_name(arr.dtype)} do not fit the model's {want}")
    return arr.astype(want)


def _kind_name(dt: np.dtype) -> str:
    names = {"U": "string", "O": "mixed/object", "f": "float", "b": "bool", "i": "int", "u": "uint"}
    return names.get(dt.kind, str(dt))


def validate_inputs(raw: Mapping[str, Any], signature: Signature, max_rows: int) -> dict[str, np.ndarray]:
    """Named arrays shaped [rows, ...] for ``signature`` from decoded ``raw``; one sample without its batch axis
    gains one. Raises RequestError (422) naming the field: unknown or missing name, dtype, rank, fixed dim,
    rows beyond ``max_rows`` or rows differing between inputs."""
    unknown = [k for k in raw if k not in signature.input_names]
    if unknown:
        raise RequestError(
            f"inputs.{unknown[0]}: the model has no such input; its inputs: {', '.join(signature.input_names)}"
        )
    missing = [n for n in signature.input_names if n not in raw]
    if missing:
        raise RequestError(f"inputs.{missing[0]}: missing ({signature.describe()})")
    out: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        arr = _as_array(raw[spec.name], spec)
        if spec.shape and arr.ndim == len(spec.shape) - 1:
            arr = arr[None]
        if spec.shape and arr.ndim != len(spec.shape):
            raise RequestError(
                f"inputs.{spec.name}: shape {list(arr.shape)} has {arr.ndim} dimensions; the model "
                f"wants {len(spec.shape)} ({spec.describe()})"
            )
        for i, d in enumerate(spec.shape):
            if i and isinstance(d, int) and arr.shape[i] != d:
                raise RequestError(
                    f"inputs.{spec.name}: shape {list(arr.shape)}, dimension {i} must be {d} ({spec.describe()})"
                )
        out[spec.name] = arr
    rows = {a.shape[0] if a.ndim else 1 for a in out.values()}
    if len(rows) > 1:
        raise RequestError(f"inputs: inputs differ in rows ({sorted(rows)}); every input needs the same batch size")
    n = rows.pop() if rows else 1
    if n < 1 or n > max_rows:
        raise RequestError(
            f"inputs: {n} rows; one request carries 1..{max_rows} (the server's max-batch)",
            413 if n > max_rows else 422,
        )
    return out


# ---------------------------------------------------------------------------------------------- batching


@dataclass
class _Item:
    feeds: dict[str, np.ndarray]
    future: asyncio.Future[dict[str, np.ndarray]]
    rows: int
    key: tuple[Any, ...]
    enqueued: float = field(default_factory=time.perf_counter)


def _bucket(feeds: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
    return tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items()))


class Metrics:
    """The server's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "slimline_requests", "predict requests answered, by HTTP status", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "slimline_request_latency_seconds",
            "predict latency, arrival to answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "slimline_batch_size",
            "rows per batch run",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.queue_depth = Gauge("slimline_queue_depth", "requests waiting to be batched", registry=self.registry)
        self.errors = Counter("slimline_errors", "failed predict requests, by kind", ["kind"], registry=self.registry)
        self.rows = 0
        self.batches = 0


def warmup_shapes(signature: Signature, batch: int) -> dict[str, tuple[int, ...]]:
    """Shapes for the warm-up batches: ``batch`` rows; dynamic dims by their usual defaults, else 8."""
    try:
        return signature.resolve(batch=batch)
    except SlimlineError:
        names = {d for t in signature.inputs for d in t.dynamic.values()} - {BATCH}
        return signature.resolve(batch=batch, dims=dict.fromkeys(names, 8))


class Batcher:
    """One bounded queue, one gathering task and worker thread per session."""

    def __init__(
        self, sessions: list[Session], signature: Signature, settings: ServeSettings, metrics: Metrics
    ) -> None:
        self.sessions, self.signature, self.settings, self.metrics = sessions, signature, settings, metrics
        self.queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=settings.queue_size)
        self.pool = ThreadPoolExecutor(max_workers=len(sessions), thread_name_prefix="slimline-serve")
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = False
        self.warm: dict[str, np.ndarray] | None = None  # warm-up feeds; default: example feeds of the signature

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        warm = self.warm or self.signature.example_feeds(warmup_shapes(self.signature, self.settings.max_batch))
        for s in self.sessions:
            for _ in range(self.settings.warmup_batches):
                await loop.run_in_executor(self.pool, s.run_named, warm)
        self.tasks = [asyncio.create_task(self._gather(s)) for s in self.sessions]
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.pool.shutdown(wait=True)

    def submit(self, feeds: dict[str, np.ndarray]) -> asyncio.Future[dict[str, np.ndarray]]:
        """Queue one request; raises RequestError 503 when the queue is full."""
        fut: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        rows = next(iter(feeds.values())).shape[0] if feeds else 1
        try:
            self.queue.put_nowait(_Item(feeds, fut, rows, _bucket(feeds)))
        except asyncio.QueueFull:
            raise RequestError(
                f"server busy: {self.settings.queue_size} requests waiting; retry shortly", 503
            ) from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return fut

    async def _gather(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        carry: _Item | None = None
        while True:
            first = carry or await self.queue.get()
            carry = None
            batch, rows = [first], first.rows
            deadline = loop.time() + self.settings.max_wait_ms / 1000
            while rows < self.settings.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self.queue.get(), left)
                    except TimeoutError:
                        break
                if nxt.key != first.key or rows + nxt.rows > self.settings.max_batch:
                    carry = nxt  # another bucket, or too many rows: it starts the next batch
                    break
                batch.append(nxt)
                rows += nxt.rows
            self.metrics.queue_depth.set(self.queue.qsize())
            await self._run(loop, session, batch, rows)

    async def _run(self, loop: asyncio.AbstractEventLoop, session: Session, batch: list[_Item], rows: int) -> None:
        feeds = {
            k: np.concatenate([it.feeds[k] for it in batch]) if len(batch) > 1 else batch[0].feeds[k]
            for k in batch[0].feeds
        }
        self.metrics.batch_size.observe(rows)
        self.metrics.rows += rows
        self.metrics.batches += 1
        try:
            out = await loop.run_in_executor(self.pool, session.run_named, feeds)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != rows for v in out.values()):
                raise SlimlineError(
                    f"the model returned {', '.join(f'{k}{list(np.shape(v))}' for k, v in out.items())}"
                    f" for a batch of {rows}; it does not keep the batch axis"
                )
        except Exception as e:  # noqa: BLE001 - a failed batch fails its own requests only
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        start = 0
        for it in batch:
            if not it.future.done():
                it.future.set_result({k: v[start : start + it.rows] for k, v in out.items()})
            start += it.rows


# ---------------------------------------------------------------------------------------------- the app


def _media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";")[0].strip().lower()


def create_app(
    sessions: list[Session],
    signature: Signature,
    settings: ServeSettings,
    info: Mapping[str, Any] | None = None,
    stats_path: Path | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Any:
    """The FastAPI app serving ``sessions`` (one per model instance, all of ``signature``).

    ``meta`` (the artifact's) tells decoders how to preprocess raw inputs and names classes (answers then carry
    ``labels``); ``info`` is added to ``/metadata``; ``stats_path`` receives, at shutdown, a JSON record of the requests
    accepted and answered (their ids), written to a temporary file and renamed.
    """
    from fastapi import FastAPI, Request, Response
    from fastapi.responses import JSONResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    settings.check()
    meta = dict(meta or {})
    metrics = Metrics()
    batcher_box: dict[str, Batcher] = {}
    stats: dict[str, Any] = {"accepted": 0, "answered": 0, "failed": 0, "accepted_ids": [], "answered_ids": []}

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        batcher = Batcher(sessions, signature, settings, metrics)
        if "text_folder" in meta:  # token ids within the vocabulary: warm up on tokenized text
            batcher.warm = _encode_texts(["warm-up"] * settings.max_batch, meta)
        batcher_box["b"] = batcher
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            if stats_path is not None:
                from slimline.fileio import write_json

                write_json(stats_path, stats | {"batches": metrics.batches, "rows": metrics.rows})

    app = FastAPI(title="slimline serve", lifespan=lifespan)

    def error(status: int, message: str, rid: str | None, kind: str) -> JSONResponse:
        metrics.requests.labels(str(status)).inc()
        metrics.errors.labels(kind).inc()
        headers = {"Retry-After": "1"} if status == 503 else {}
        if rid is not None:
            headers["X-Request-ID"] = rid
        return JSONResponse({"id": rid, "error": message}, status_code=status, headers=headers)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        b = batcher_box.get("b")
        ok = bool(b and b.ready)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {
            "signature": signature.to_dict(),
            "settings": asdict(settings),
            "content_types": sorted(DECODERS),
            **dict(info or {}),
        }

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def predict(request: Request) -> Response:
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id")
        b = batcher_box.get("b")
        if b is None or not b.ready:
            return error(503, "not ready: the model is warming up; retry shortly", rid, "not_ready")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return error(
                413, f"body: {length} bytes exceeds the server's limit of {settings.max_body_bytes}", rid, "too_large"
            )
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                return error(
                    413, f"body: more than the server's limit of {settings.max_body_bytes} bytes", rid, "too_large"
                )
        ctype = _media_type(request.headers.get("content-type"))
        decoder = DECODERS.get(ctype)
        try:
            if decoder is None:
                raise RequestError(
                    f"content-type: {ctype} is not served; use one of {', '.join(sorted(DECODERS))}", 415
                )
            raw, body_id = decoder(body, signature, meta)
            rid = body_id if body_id is not None else rid
            feeds = validate_inputs(raw, signature, settings.max_batch)
            fut = b.submit(feeds)
        except RequestError as e:
            return error(e.status, str(e), rid, "invalid" if e.status < 500 else "busy")
        stats["accepted"] += 1
        stats["accepted_ids"].append(rid)
        try:
            out = await fut
        except Exception as e:  # noqa: BLE001 - reported to this batch's callers only
            stats["failed"] += 1
            return error(500, f"the runtime failed on this request's batch: {type(e).__name__}: {e}", rid, "runtime")
        metrics.latency.observe(time.perf_counter() - t0)
        metrics.requests.labels("200").inc()
        stats["answered"] += 1
        stats["answered_ids"].append(rid)
        headers = {"X-Request-ID": rid} if rid is not None else {}
        accept = _media_type(request.headers.get("accept"))
        if accept == "application/x-npy" and len(out) == 1:
            buf = io.BytesIO()
            np.save(buf, next(iter(out.values())), allow_pickle=False)
            return Response(buf.getvalue(), media_type="application/x-npy", headers=headers)
        doc: dict[str, Any] = {"id": rid, "outputs": {k: v.tolist() for k, v in out.items()}}
        labels = class_labels(out, meta)
        if labels is not None:
            doc["labels"] = labels
        return JSONResponse(doc, headers=headers)

    # a plain Starlette route: the request is read by hand above, and FastAPI's per-request dependency solving and
    # telemetry were a third of the server's CPU per request
    app.add_route("/predict", predict, methods=["POST"])
    return app


def check_port(host: str, port: int) -> None:
    """A SlimlineError naming the fix when ``host:port`` cannot be bound (in use, or not an address here)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise SlimlineError(
            f"serve: cannot listen on {host}:{port} ({e.strerror or e}); choose another --port, or stop what uses it"
        ) from None


WORKER_ENV = "SLIMLINE_SERVE_WORKER"  # what each --workers process serves (JSON), set by serve() for its workers


def build_app(
    artifact_path: str | Path,
    runtime: str | None = None,
    options: Mapping[str, Any] | None = None,
    settings: ServeSettings | None = None,
    stats_path: Path | None = None,
) -> Any:
    """The app serving the artifact at ``artifact_path`` in ``settings.instances`` sessions of ``runtime``."""
    from slimline.artifact import Artifact
    from slimline.runtimes import default_runtime, open_session
    from slimline.signature import artifact_signature

    settings = settings or ServeSettings()
    art = Artifact.load(artifact_path)
    rt = runtime or default_runtime(art)
    sessions = [open_session(art, rt, **dict(options or {})) for _ in range(settings.instances)]
    signature = sessions[0].signature or artifact_signature(art)
    info = {"artifact": str(art.path), "kind": art.kind, "runtime": sessions[0].describe(), "pid": os.getpid()}
    return create_app(sessions, signature, settings, info, stats_path, decoder_meta(art))


def worker_stats_path(stats_path: Path, pid: int) -> Path:
    """Where worker ``pid`` of ``serve --workers N`` writes its own stats (merged into ``stats_path`` at exit)."""
    return stats_path.with_name(f"{stats_path.stem}.worker{pid}{stats_path.suffix}")


def worker_app() -> Any:
    """The app of one ``--workers`` process (a uvicorn app factory): what to serve comes from ``WORKER_ENV``."""
    spec = json.loads(os.environ[WORKER_ENV])
    stats = worker_stats_path(Path(spec["stats"]), os.getpid()) if spec["stats"] else None
    return build_app(spec["artifact"], spec["runtime"], spec["options"], ServeSettings(**spec["settings"]), stats)


def merge_worker_stats(stats_path: Path) -> dict[str, Any]:
    """Sum the stats the workers wrote next to ``stats_path`` into ``stats_path`` (their files are removed)."""
    from slimline.fileio import write_json

    total: dict[str, Any] = {"accepted": 0, "answered": 0, "failed": 0, "batches": 0, "rows": 0}
    total |= {"accepted_ids": [], "answered_ids": [], "workers": 0}
    for f in sorted(stats_path.parent.glob(f"{stats_path.stem}.worker*{stats_path.suffix}")):
        doc = json.loads(f.read_text())
        for k in ("accepted", "answered", "failed", "batches", "rows", "accepted_ids", "answered_ids"):
            total[k] += doc.get(k, 0 if not k.endswith("ids") else [])
        total["workers"] += 1
        f.unlink()
    write_json(stats_path, total)
    return total


def serve(
    artifact_path: str | Path,
    runtime: str | None = None,
    options: Mapping[str, Any] | None = None,
    settings: ServeSettings | None = None,
    stats_path: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Load the artifact into ``settings.instances`` sessions and serve it until SIGTERM/SIGINT (uvicorn's graceful
    shutdown: stop accepting, answer every accepted request, then return).

    With ``settings.workers`` > 1, that many processes (uvicorn's supervisor, spawned) share one listening socket,
    each loading the artifact and batching on its own; SIGTERM reaches every worker, each answers what it accepted.
    Each worker's ``/metrics`` counts its own requests; ``stats_path`` sums them all."""
    import signal
    import threading

    import uvicorn

    settings = settings or ServeSettings()
    settings.check()
    check_port(settings.host, settings.port)
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": None,
        "backlog": 2048,
    }
    if settings.workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ[WORKER_ENV] = json.dumps(
            {
                "artifact": str(artifact_path),
                "runtime": runtime,
                "options": dict(options or {}),
                "settings": asdict(settings),
                "stats": str(stats_path) if stats_path else None,
            }
        )
        config = uvicorn.Config(
            "slimline.serving:worker_app",
            factory=True,
            workers=settings.workers,
            timeout_worker_healthcheck=60,
            **common,
        )
        if stats_path is not None:
            for f in stats_path.parent.glob(f"{stats_path.stem}.worker*{stats_path.suffix}"):
                f.unlink()
        sock = config.bind_socket()
        if on_ready is not None:
            on_ready(f"http://{settings.host}:{settings.port}")
        try:
            Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
            if stats_path is not None:
                merge_worker_stats(stats_path)
        return
    app = build_app(artifact_path, runtime, options, settings, stats_path)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    if on_ready is not None:
        on_ready(f"http://{settings.host}:{settings.port}")
    # uvicorn re-raises the signal that stopped it once it has restored the handlers in force; a no-op handler
    # there makes a graceful shutdown return normally (exit 0) instead of being counted as an interruption.
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def load_test_runs(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The load tests saved in ``folder`` (``slimline loadtest --json folder/NAME.json``): NAME -> one row per
    concurrency (throughput_rps, p50_ms, p99_ms, ...). Files that are not load-test JSON are skipped."""
    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        rows = doc.get("runs", [doc]) if isinstance(doc, dict) else []
        rows = [
            r
            for r in rows
            if isinstance(r, dict)
            and {"concurrency", "p50_ms", "p99_ms", "throughput_rps"} <= r.keys()
            and r["p50_ms"] is not None
        ]
        if rows:
            out[f.stem] = rows
    return out
