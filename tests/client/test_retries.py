"""The clients retry 503 and 429 (Retry-After, else backoff) and connections never made, and
nothing else: against a real Roost server whose queue is full, and a scripted HTTP server for
what a real one cannot be made to answer on cue (a 503 and then a 200, a 429, a 500)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import email.utils
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from modelkit import publish, solid_png
from servers import free_port, sample

from roost.client import AsyncRoostClient, RoostClient, RoostError
from roost.client.command import add_classify_parser

RED = solid_png((250, 10, 10))
ANSWER = {
    "model": "colours",
    "version": 1,
    "results": [
        {
            "filename": "red.png",
            "predictions": [{"label": "red", "index": 0, "score": 0.9, "url": None}],
            "uncertain": False,
        }
    ],
}
MODELS = {
    "models": [
        {"name": "colours", "default_version": 1, "versions": [{"version": 1, "state": "ready"}]}
    ]
}
Answer = tuple[int, dict[str, str], bytes]


def answer(status: int, body: object = None, **headers: str) -> Answer:
    error = {"error": {"code": "overloaded" if status == 503 else "x", "message": "busy"}}
    return status, headers, json.dumps(error if body is None else body).encode()


class ScriptedServer:
    """uvicorn on 127.0.0.1 in a thread, answering each POST with the next scripted answer (the
    last one for ever) and GET /v1/models with one model; `posts` are the POSTs' arrival times."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.posts: list[float] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        if scope["method"] == "GET":
            status, headers, body = answer(200, MODELS)
        else:
            self.posts.append(time.monotonic())
            status, headers, body = (
                self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            )
        raw = [(b"content-type", b"application/json")]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the scripted server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def waits(self) -> list[float]:
        return [b - a for a, b in zip(self.posts, self.posts[1:], strict=False)]


@pytest.fixture
def full_queue(repo: Path, start_server) -> object:
    """A real server whose queue holds one image: a request with two is refused with 503
    `overloaded` and Retry-After: 1, every time."""
    publish(repo, "colours", 1)
    server = start_server(repo, ROOST_MAX_QUEUE_SIZE="1")
    server.wait_ready()
    return server


def refused(server: Any) -> float:
    return sample(server.metrics(), "roost_requests_total", code="503")


@pytest.mark.slow
def test_a_full_queue_is_retried_after_retry_after_then_raised(full_queue: Any) -> None:
    with RoostClient(full_queue.url, retries=2) as roost:
        assert roost.classify(RED, model="colours").results[0].top.label == "red"  # one fits
        started = time.monotonic()
        with pytest.raises(RoostError) as error:
            roost.classify(RED, RED, model="colours")
        waited = time.monotonic() - started

    assert (error.value.status, error.value.code, error.value.retry_after) == (
        503,
        "overloaded",
        "1",
    )
    assert refused(full_queue) == 3  # the first try and two retries
    assert 2.0 <= waited < 5.0  # Retry-After: 1, twice


@pytest.mark.slow
def test_async_client_retries_a_full_queue_too(full_queue: Any) -> None:
    async def main() -> RoostError:
        async with AsyncRoostClient(full_queue.url, retries=1) as roost:
            with pytest.raises(RoostError) as error:
                await roost.classify(RED, RED, model="colours")
            return error.value

    assert asyncio.run(main()).status == 503
    assert refused(full_queue) == 2


@pytest.mark.slow
def test_no_retry_when_off_or_when_retry_after_is_past_the_max_wait(full_queue: Any) -> None:
    for client in (
        RoostClient(full_queue.url, retries=0),
        RoostClient(full_queue.url, max_retry_wait_s=0.5),  # the server asks for 1 s
    ):
        started = time.monotonic()
        with client, pytest.raises(RoostError):
            client.classify(RED, RED, model="colours")
        assert time.monotonic() - started < 0.9
    assert refused(full_queue) == 2


@pytest.mark.slow
def test_other_errors_of_a_real_server_are_not_retried(full_queue: Any) -> None:
    with RoostClient(full_queue.url, retries=3) as roost:
        with pytest.raises(RoostError) as error:
            roost.classify(b"not an image", model="colours")
    assert error.value.status == 415
    assert sample(full_queue.metrics(), "roost_requests_total", code="415") == 1


def test_503_then_429_then_success_waits_as_told() -> None:
    script = (
        answer(503, **{"Retry-After": "0"}),
        answer(429, **{"Retry-After": "1"}),
        answer(200, ANSWER),
    )
    with ScriptedServer(*script) as server, RoostClient(server.url) as roost:
        result = roost.classify(RED)
    assert result.results[0].top.label == "red"
    assert len(server.posts) == 3
    first, second = server.waits()
    assert first < 0.5 and 1.0 <= second < 2.0


def test_an_http_date_retry_after_is_waited_for() -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s
    script = (answer(503, **{"Retry-After": when}), answer(200, ANSWER))
    with ScriptedServer(*script) as server, RoostClient(server.url) as roost:
        roost.classify(RED)
    (wait,) = server.waits()
    assert 0.9 <= wait < 2.5


def test_without_retry_after_the_backoff_grows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roost.client.http")

    async def main(url: str) -> None:
        async with AsyncRoostClient(url, retries=2) as roost:
            await roost.classify(RED)

    with ScriptedServer(answer(503), answer(503), answer(200, ANSWER)) as server:
        asyncio.run(main(server.url))
    first, second = server.waits()
    assert 0.25 <= first < 0.75 and 0.5 <= second < 1.25  # 0.5 x 2**n, jittered down to half
    assert ["retry 1 of 2" in m or "retry 2 of 2" in m for m in caplog.messages] == [True] * 2


@pytest.mark.parametrize("status", [500, 502, 504, 404, 400])
def test_other_statuses_are_never_retried(status: int) -> None:
    with ScriptedServer(answer(status, **{"Retry-After": "0"})) as server:
        with RoostClient(server.url, retries=5) as roost, pytest.raises(RoostError) as error:
            roost.classify(RED)
    assert error.value.status == status and len(server.posts) == 1


def test_a_connection_never_made_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="roost.client.http")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with RoostClient(url, retries=2) as roost, pytest.raises(httpx.ConnectError):
        roost.models()
    assert sum("ConnectError" in m for m in caplog.messages) == 2


@pytest.fixture
def hangs_up() -> Iterator[tuple[str, list[int]]]:
    """A server that takes each connection, reads the request and closes without an answer:
    the request may have been done, so it must not be sent again."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted = [0]
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted[0] += 1
            with connection:
                connection.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    done.set()
    thread.join(5)
    listener.close()


def test_a_request_sent_and_then_dropped_is_not_retried(hangs_up: tuple[str, list[int]]) -> None:
    url, accepted = hangs_up
    with RoostClient(url, retries=3) as roost, pytest.raises(httpx.RemoteProtocolError):
        roost.classify(RED)
    assert accepted[0] == 1


def test_retries_must_be_sane() -> None:
    with pytest.raises(ValueError, match="retries"):
        RoostClient(retries=-1)
    with pytest.raises(ValueError, match="max_retry_wait_s"):
        AsyncRoostClient(max_retry_wait_s=-1)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="roost")
    add_classify_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["classify", *argv])
    return int(args.func(args))


def test_roost_classify_retries_by_default(tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(RED)
    out = tmp_path / "out.csv"
    script = (answer(503, **{"Retry-After": "0"}), answer(429), answer(200, ANSWER))
    with ScriptedServer(*script) as server:
        assert run_cli(str(image), "--url", server.url, "--csv", str(out)) == 0
        assert len(server.posts) == 3
    (row,) = csv.DictReader(out.open(newline=""))
    assert (row["label_1"], row["error"]) == ("red", "")


def test_roost_classify_retries_0_fails_the_file(tmp_path: Path, capsys: Any) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(RED)
    with ScriptedServer(answer(503, **{"Retry-After": "0"}), answer(200, ANSWER)) as server:
        assert run_cli(str(image), "--url", server.url, "--retries", "0") == 1
        assert len(server.posts) == 1
    assert "overloaded: busy" in capsys.readouterr().err
