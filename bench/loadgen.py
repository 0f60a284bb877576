"""An async load generator: closed loop at fixed concurrency, open loop at fixed arrival rate.

Bounded in requests and in time; it only ever talks to the URL it is given (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import numpy as np

from bench.http11 import Connection, HttpError


@dataclass(frozen=True)
class Request:
    """One prepared POST, sent as it is (bench/protocols.py builds them per protocol)."""

    path: str
    body: bytes
    content_type: str = "image/jpeg"
    headers: tuple[tuple[str, str], ...] = ()


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


def _host_port(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    return host, int(port or 80)


async def _post(connection: Connection, request: Request) -> bool:
    try:
        status, _ = await connection.post(
            request.path, request.body, request.content_type, request.headers
        )
    except (OSError, HttpError, asyncio.IncompleteReadError):
        return False
    return status == 200


async def closed_loop(
    url: str,
    prepared: list[Request],
    concurrency: int,
    requests: int,
    time_limit_s: float,
) -> LoadResult:
    """`concurrency` clients, each sending its next request when the last one returns."""
    host, port = _host_port(url)
    connections = [Connection(host, port) for _ in range(concurrency)]

    def client(connection: Connection) -> Callable[[int], Awaitable[bool]]:
        async def send(n: int) -> bool:
            return await _post(connection, prepared[n % len(prepared)])

        return send

    try:
        return await closed_loop_calls([client(c) for c in connections], requests, time_limit_s)
    finally:
        await asyncio.gather(*(c.close() for c in connections))


async def closed_loop_calls(
    clients: list[Callable[[int], Awaitable[bool]]], requests: int, time_limit_s: float
) -> LoadResult:
    """The closed loop for any transport: each client callable sends request `n`, says if it
    succeeded, and is called again when it returns (bench/grpc_load.py drives gRPC with it)."""
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    stop_at = started + time_limit_s

    async def client_loop(send: Callable[[int], Awaitable[bool]]) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            n = next(counter)
            if n >= requests:
                return
            t0 = time.perf_counter()
            if await send(n):
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(client_loop(c) for c in clients))
    seconds = time.perf_counter() - started
    return _summarize("closed", len(clients), latencies, errors, seconds)


async def open_loop(
    url: str,
    prepared: list[Request],
    rate_per_s: float,
    duration_s: float,
) -> LoadResult:
    """Requests start on a fixed schedule whatever the server does (arrivals do not wait)."""
    latencies: list[float] = []
    errors = 0
    total = int(rate_per_s * duration_s)
    host, port = _host_port(url)
    idle: list[Connection] = []  # a request takes an idle connection or opens one
    opened: list[Connection] = []
    started = time.perf_counter()

    async def one(n: int) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, started + n / rate_per_s - time.perf_counter()))
        if idle:
            connection = idle.pop()
        else:
            connection = Connection(host, port)
            opened.append(connection)
        t0 = time.perf_counter()
        if await _post(connection, prepared[n % len(prepared)]):
            latencies.append(time.perf_counter() - t0)
        else:
            errors += 1
        idle.append(connection)

    try:
        await asyncio.gather(*(one(n) for n in range(total)))
    finally:
        seconds = time.perf_counter() - started
        await asyncio.gather(*(c.close() for c in opened))
    return _summarize("open", rate_per_s, latencies, errors, seconds)
