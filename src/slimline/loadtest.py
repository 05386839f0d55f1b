"""``slimline loadtest``: a bounded HTTP load against a ``slimline serve`` endpoint (aiohttp, asyncio).

``count`` requests at most, for ``time_limit`` seconds at most, from ``concurrency`` callers (closed loop) or at
``rate`` requests per second (open loop, still at most ``concurrency`` in flight). Each request carries an id
(``X-Request-ID``) and is counted as answered only when the answer echoes it. A request is an *error* when the
server answered with a non-2xx status or the wrong id, *refused* when the connection was never accepted (the
server is gone or not listening; no new request starts after one), *lost* when it was sent and no answer came
(connection dropped or timed out).
Only loopback addresses are accepted: slimline contacts nothing beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from slimline.errors import SlimlineError


def check_loopback(url: str) -> str:
    """``url`` with ``/predict`` appended when it names no path; a SlimlineError for non-loopback hosts."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    host = parts.hostname or ""
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    if parts.scheme not in ("http", "https") or not loop:
        raise SlimlineError(
            f"loadtest: {url} is not a loopback http URL; slimline load-tests 127.0.0.1 only "
            "(e.g. http://127.0.0.1:8000)"
        )
    path = parts.path if parts.path not in ("", "/") else "/predict"
    return f"{parts.scheme}://{parts.netloc}{path}"


def npy_bodies(samples: np.ndarray) -> list[bytes]:
    """One ``.npy`` body per sample (each with its batch axis of 1)."""
    out = []
    for s in samples:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(s[None]), allow_pickle=False)
        out.append(buf.getvalue())
    return out


@dataclass
class LoadResult:
    """What a load test measured; ``to_dict`` is the JSON written."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    lost: int = 0
    refused: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    answered_ids: list[str] = field(default_factory=list)
    concurrency: int = 0
    rate: float | None = None

    def to_dict(self, ids: bool = False) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        d = {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "lost": self.lost,
            "refused": self.refused,
            "seconds": round(self.seconds, 3),
            "concurrency": self.concurrency,
            "rate": self.rate,
            "throughput_rps": round(self.ok / self.seconds, 2) if self.seconds > 0 else 0.0,
            "p50_ms": _r(np.percentile(lat, 50)),
            "p90_ms": _r(np.percentile(lat, 90)),
            "p99_ms": _r(np.percentile(lat, 99)),
            "mean_ms": _r(float(np.mean(lat))),
            "statuses": self.statuses,
        }
        return d | ({"answered_ids": self.answered_ids} if ids else {})


def _r(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 3)


async def _load(
    url: str,
    bodies: Sequence[bytes],
    content_type: str,
    count: int,
    concurrency: int,
    rate: float | None,
    time_limit: float,
    timeout: float,
    id_prefix: str,
) -> LoadResult:
    import aiohttp

    res = LoadResult(concurrency=concurrency, rate=rate)
    t_start = time.perf_counter()
    stop_at = t_start + time_limit
    next_index = 0
    sem = asyncio.Semaphore(concurrency)
    gone = asyncio.Event()

    async def one(client: aiohttp.ClientSession, i: int) -> None:
        rid = f"{id_prefix}{i}"
        t0 = time.perf_counter()
        try:
            async with client.post(
                url, data=bodies[i % len(bodies)], headers={"content-type": content_type, "x-request-id": rid}
            ) as r:
                await r.read()
                status, echoed = r.status, r.headers.get("x-request-id")
        except aiohttp.ClientConnectorError:
            res.refused += 1  # never accepted: nothing listens (any more), so no new request is started
            gone.set()
            return
        except (aiohttp.ClientError, TimeoutError):
            res.lost += 1  # sent, and no answer came
            return
        res.statuses[str(status)] = res.statuses.get(str(status), 0) + 1
        if status == 200 and echoed == rid:
            res.ok += 1
            res.latencies_ms.append((time.perf_counter() - t0) * 1000)
            res.answered_ids.append(rid)
        else:
            res.errors += 1

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
    ) as client:
        if rate is None:

            async def caller() -> None:
                nonlocal next_index
                while next_index < count and time.perf_counter() < stop_at and not gone.is_set():
                    i = next_index
                    next_index += 1
                    res.sent += 1
                    await one(client, i)

            await asyncio.gather(*(caller() for _ in range(concurrency)))
        else:
            tasks = []

            async def limited(i: int) -> None:
                async with sem:
                    await one(client, i)

            for i in range(count):
                due = t_start + i / rate
                now = time.perf_counter()
                if due >= stop_at or gone.is_set():
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                res.sent += 1
                tasks.append(asyncio.create_task(limited(i)))
            await asyncio.gather(*tasks)
    res.seconds = time.perf_counter() - t_start
    return res


def run_load(
    url: str,
    samples: np.ndarray,
    count: int = 1000,
    concurrency: int = 16,
    rate: float | None = None,
    time_limit: float = 60.0,
    timeout: float = 30.0,
    id_prefix: str = "r",
) -> LoadResult:
    """Send up to ``count`` requests (``samples`` cycled, one ``.npy`` body each) to the loopback ``url``.

    Stops after ``count`` requests or ``time_limit`` seconds, whichever comes first; requests in flight then
    finish (each within ``timeout``)."""
    if count < 1 or concurrency < 1 or time_limit <= 0 or (rate is not None and rate <= 0):
        raise SlimlineError("loadtest: count, concurrency, time-limit and rate must be positive")
    if len(samples) == 0:
        raise SlimlineError("loadtest: no samples to send")
    target = check_loopback(url)
    return asyncio.run(
        _load(
            target, npy_bodies(samples), "application/x-npy", count, concurrency, rate, time_limit, timeout, id_prefix
        )
    )
