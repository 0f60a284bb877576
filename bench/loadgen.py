"""An async load generator: closed loop at fixed concurrency, open loop at fixed arrival rate.

Bounded in requests and in time; it only ever talks to the URL it is given (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import asdict, dataclass

import httpx
import numpy as np


@dataclass
class LoadResult:
    mode: str
    level: float
    """Concurrency (closed loop) or arrival rate per second (open loop)."""
    requests: int
    errors: int
    seconds: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _summarize(
    mode: str, level: float, latencies: list[float], errors: int, seconds: float
) -> LoadResult:
    ms = np.array(latencies) * 1000 if latencies else np.array([0.0])
    return LoadResult(
        mode,
        level,
        len(latencies) + errors,
        errors,
        seconds,
        len(latencies) / seconds if seconds else 0.0,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        float(np.percentile(ms, 99)),
    )


async def _post(client: httpx.AsyncClient, path: str, body: bytes) -> bool:
    try:
        r = await client.post(path, content=body, headers={"content-type": "image/jpeg"})
    except httpx.TransportError:
        return False
    return r.status_code == 200


async def closed_loop(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    requests: int,
    time_limit_s: float,
    path: str = "/v1/classify",
) -> LoadResult:
    """`concurrency` clients, each sending its next request when the last one returns."""
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        stop_at = started + time_limit_s

        async def client_loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                n = next(counter)
                if n >= requests:
                    return
                t0 = time.perf_counter()
                if await _post(client, path, bodies[n % len(bodies)]):
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return _summarize("closed", concurrency, latencies, errors, seconds)


async def open_loop(
    url: str,
    bodies: list[bytes],
    rate_per_s: float,
    duration_s: float,
    path: str = "/v1/classify",
) -> LoadResult:
    """Requests start on a fixed schedule whatever the server does (arrivals do not wait)."""
    latencies: list[float] = []
    errors = 0
    total = int(rate_per_s * duration_s)
    async with httpx.AsyncClient(
        base_url=url, timeout=60, limits=httpx.Limits(max_connections=None)
    ) as client:
        started = time.perf_counter()

        async def one(n: int) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, started + n / rate_per_s - time.perf_counter()))
            t0 = time.perf_counter()
            if await _post(client, path, bodies[n % len(bodies)]):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

        await asyncio.gather(*(one(n) for n in range(total)))
        seconds = time.perf_counter() - started
    return _summarize("open", rate_per_s, latencies, errors, seconds)
