"""Overload, faults, shutdown and access control against a real server on 127.0.0.1.

Every load here is bounded in requests and time and goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import signal
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from modelkit import colour_model, failing_model, publish, solid_png
from PIL import Image
from servers import ADMIN_KEY, RoostServer, sample
from skimage import data as photos

from bench.harness import resident_bytes

pytestmark = pytest.mark.slow

CAT_PNG = (lambda b: (Image.fromarray(photos.chelsea()).save(b, "PNG"), b.getvalue())[1])(
    io.BytesIO()
)


async def burst(
    url: str, count: int, body: bytes, fresh_connections: bool = False
) -> list[tuple[int | str, float, httpx.Response | None]]:
    """`count` concurrent POSTs; each outcome is (status or error name, seconds, response)."""
    limits = httpx.Limits(
        max_keepalive_connections=0 if fresh_connections else 20, max_connections=None
    )
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> tuple[int | str, float, httpx.Response | None]:
            started = time.perf_counter()
            try:
                r = await client.post(
                    "/v1/classify", content=body, headers={"content-type": "image/png"}
                )
            except httpx.TransportError as exc:
                return type(exc).__name__, time.perf_counter() - started, None
            return r.status_code, time.perf_counter() - started, r

        return list(await asyncio.gather(*(one() for _ in range(count))))


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.99) - 1)] if values else 0.0


def test_burst_of_ten_times_capacity(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, model=colour_model((512, 512)), size=(512, 512))
    server = start_server(
        repo, ROOST_MAX_QUEUE_SIZE="4", ROOST_MAX_BATCH_SIZE="2", ROOST_DECODE_THREADS="1"
    )
    server.wait_ready()
    outcomes = asyncio.run(burst(server.url, 40, CAT_PNG))
    accepted = [(s, r) for s, _, r in outcomes if s == 200]
    refused = [(s, r) for s, _, r in outcomes if s == 503]
    assert len(accepted) + len(refused) == 40, sorted({str(s) for s, _, _ in outcomes})
    assert accepted and refused
    for _, r in refused:
        assert r is not None and r.json()["error"]["code"] == "overloaded"
        assert int(r.headers["Retry-After"]) >= 1
    for _, r in accepted:
        assert r is not None and r.json()["results"][0]["predictions"][0]["label"] == "red"
    accepted_s = [t for s, t, _ in outcomes if s == 200]
    refused_s = [t for s, t, _ in outcomes if s == 503]
    assert p99(accepted_s) < 10.0
    assert server.client.get("/healthz").status_code == 200
    reliability.add(
        "overload",
        "burst of 40 concurrent requests, queue of 4 images (10x capacity)",
        40,
        f"{len(accepted)} answered 200 (p99 {p99(accepted_s) * 1000:.0f} ms), {len(refused)} "
        f"refused 503 + Retry-After (median {statistics.median(refused_s) * 1000:.0f} ms), 0 dropped",
    )


def test_memory_stays_flat_over_a_bounded_soak(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo)
    server.wait_ready()
    body = solid_png((200, 30, 30), (320, 240))

    async def rounds(n: int) -> None:
        for _ in range(n):
            outcomes = await burst(server.url, 10, body)
            assert {s for s, _, _ in outcomes} == {200}

    asyncio.run(rounds(30))  # warm-up: 300 requests
    before = resident_bytes(server.process.pid)
    asyncio.run(rounds(150))  # soak: 1500 requests
    growth = resident_bytes(server.process.pid) - before
    assert growth < 20 * 1024 * 1024, f"resident memory grew {growth / 2**20:.1f} MiB"
    reliability.add(
        "soak",
        "resident memory after 300 warm-up requests, then 1,500 more",
        1800,
        f"grew {growth / 2**20:+.1f} MiB (from {before / 2**20:.0f} MiB)",
    )


def test_inference_error_fails_only_its_batch(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "fragile", 1, model=failing_model(), references=[])
    server = start_server(repo)
    server.wait_ready()
    bad = server.client.post(
        "/v1/classify", content=solid_png((250, 0, 0)), headers={"content-type": "image/png"}
    )
    assert bad.status_code == 503 and bad.json()["error"]["code"] == "inference_failed"
    assert "Gather" not in bad.text  # no internals in the response
    good = server.client.post(
        "/v1/classify", content=solid_png((90, 0, 0)), headers={"content-type": "image/png"}
    )
    assert good.status_code == 200
    assert server.client.get("/readyz").status_code == 200
    assert "inference failed for a batch" in server.log()
    reliability.add(
        "faults",
        "inference error in one batch (onnxruntime raises)",
        2,
        "that request 503 inference_failed, the next 200, server ready",
    )


def _hammer(url: str, stop: threading.Event, outcomes: list[int]) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            r = client.post(
                "/v1/classify?model=colours",
                content=solid_png((10, 200, 10)),
                headers={"content-type": "image/png"},
            )
            outcomes.append(r.status_code)


def under_load(server: RoostServer, action, threads: int = 4) -> list[int]:  # type: ignore[no-untyped-def]
    stop, outcomes = threading.Event(), []  # type: ignore[var-annotated]
    workers = [
        threading.Thread(target=_hammer, args=(server.url, stop, outcomes)) for _ in range(threads)
    ]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 20
        while len(outcomes) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        action()
        seen = len(outcomes)
        while len(outcomes) < seen + 20 and time.monotonic() < deadline + 20:
            time.sleep(0.01)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    return outcomes


def test_corrupt_model_published_under_load(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo)
    server.wait_ready()

    def publish_corrupt() -> None:
        publish(repo, "colours", 2, model=colour_model()[:-40])  # a cut-off file
        assert server.reload().status_code == 200

    outcomes = under_load(server, publish_corrupt)
    assert outcomes and set(outcomes) == {200}
    states = {
        v["version"]: v for v in server.client.get("/v1/models").json()["models"][0]["versions"]
    }
    assert states[1]["state"] == "ready" and states[2]["state"] == "failed"
    assert "colours version 2 failed to load" in server.log()
    assert sample(server.metrics(), "roost_model_load_failures_total", model="colours") == 1
    reliability.add(
        "faults",
        "corrupt model version published under load",
        len(outcomes),
        "all 200 from the previous version; version failed with metric and log line",
    )


def test_version_removed_during_requests(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    publish(repo, "colours", 2)
    server = start_server(repo)
    server.wait_ready()

    def remove_latest() -> None:
        shutil.rmtree(repo / "colours" / "2")
        assert server.reload().status_code == 200

    outcomes = under_load(server, remove_latest)
    assert outcomes and set(outcomes) == {200}
    assert server.client.get("/v1/models/colours").json()["default_version"] == 1
    reliability.add(
        "faults",
        "serving version removed during requests",
        len(outcomes),
        "in-flight requests finished, later ones went to version 1; all 200",
    )


def test_sigterm_under_load_drains_and_exits_zero(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, model=colour_model((512, 512)), size=(512, 512))
    server = start_server(repo, ROOST_DECODE_THREADS="1")
    server.wait_ready()

    async def load_then_term() -> list[tuple[int | str, float, httpx.Response | None]]:
        task = asyncio.ensure_future(burst(server.url, 30, CAT_PNG, fresh_connections=True))
        await asyncio.sleep(0.15)
        server.process.send_signal(signal.SIGTERM)
        return await task

    started = time.monotonic()
    outcomes = asyncio.run(load_then_term())
    code = server.process.wait(timeout=40)
    took = time.monotonic() - started
    statuses = [s for s, _, _ in outcomes]
    answered = [s for s in statuses if s == 200]
    # Connections the closed listener refused were never accepted; nothing accepted may fail.
    assert all(s == 200 or s == "ConnectError" for s in statuses), statuses
    assert answered
    assert code == 0
    reliability.add(
        "shutdown",
        "SIGTERM during a burst of 30 requests",
        30,
        f"{len(answered)} accepted and answered 200, {len(statuses) - len(answered)} "
        f"refused at connect, exit 0 after {took:.1f} s",
    )


def test_api_keys_and_cors(repo: Path, start_server, reliability) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    locked = start_server(repo, ROOST_API_KEYS="k1,k2", ROOST_CORS_ORIGINS="https://app.example")
    locked.wait_ready()
    png = {"content": solid_png((200, 1, 1)), "headers": {"content-type": "image/png"}}
    c = locked.client
    assert c.post("/v1/classify", **png).status_code == 401
    wrong = c.post(
        "/v1/classify", content=png["content"], headers={**png["headers"], "X-API-Key": "k3"}
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert (
        c.post(
            "/v1/classify", content=png["content"], headers={**png["headers"], "X-API-Key": "k2"}
        ).status_code
        == 200
    )
    assert (
        c.post(
            "/v1/classify",
            content=png["content"],
            headers={**png["headers"], "Authorization": "Bearer k1"},
        ).status_code
        == 200
    )
    assert c.get("/v1/models").status_code == 401
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert (
        c.post("/v1/repository/reload", headers={"X-API-Key": "k1"}).status_code == 401
    )  # not an admin key
    assert locked.reload().status_code == 200
    allowed = c.options(
        "/v1/classify",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
    other = c.options(
        "/v1/classify",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers

    open_server = start_server(repo, ROOST_ADMIN_API_KEYS="")
    open_server.wait_ready()
    c = open_server.client
    assert c.post("/v1/classify", **png).status_code == 200  # classification open by default
    disabled = c.post("/v1/repository/reload", headers={"X-API-Key": ADMIN_KEY})
    assert disabled.status_code == 403  # admin on by default: no admin key configured, no reload
    preflight = c.options(
        "/v1/classify",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers  # CORS closed by default
    reliability.add(
        "access control",
        "classify and admin keys, CORS allowed and foreign origins, defaults",
        14,
        "401 without or with a wrong key, 403 admin when unset, CORS only for listed origins",
    )
