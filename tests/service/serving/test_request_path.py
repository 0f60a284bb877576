"""The request path refuses early: admission before the body, a vanished client is a 499.

In-process (httpx over ASGI, the app's lifespan); the socket-level behaviour (the 413 a plain
urllib client reads) is in test_reliability_input.py against a real server.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modelkit import publish, solid_png
from PIL import Image
from servers import sample
from skimage import data as photos
from starlette.types import Message, Receive, Scope, Send

from service.runtime.decode.pillow import PillowDecoder

REPO_ROOT = Path(__file__).resolve().parents[3]


async def test_refused_requests_read_no_body(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, config={"max_queue_size": 1})
    roost = await start_app(repo)
    await roost.wait_ready()
    body = solid_png((200, 10, 10), (400, 300))
    delivered: list[int] = []

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                delivered.append(len(message.get("body", b"")))
            return message

        await roost.app(scope, counted_receive, send)

    headers = {"content-type": "image/png", "expect": "100-continue"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=counting), base_url="http://roost"
    ) as client:
        # Hold the whole queue, as images still being decoded would.
        batcher = roost.app.state.roost.registry.get("colours").batcher
        with batcher.reserve(1):
            refused = [
                await client.post("/v1/classify?model=colours", content=body, headers=headers)
                for _ in range(5)
            ]
        assert {r.status_code for r in refused} == {503}
        assert all(r.headers["retry-after"] for r in refused)
        assert {r.json()["error"]["code"] for r in refused} == {"overloaded"}
        assert delivered == []  # not one body byte reached the app
        text = (await client.get("/metrics")).text
        assert sample(text, "roost_request_body_bytes_total", model="colours") == 0
        assert sample(text, "roost_requests_total", model="colours", code="503") == 5

        accepted = await client.post("/v1/classify?model=colours", content=body, headers=headers)
        assert accepted.status_code == 200
        text = (await client.get("/metrics")).text
        assert sample(text, "roost_request_body_bytes_total", model="colours") == len(body)
        assert sum(delivered) == len(body)


async def test_client_that_vanishes_mid_upload_is_a_499_logged_without_traceback(
    repo: Path, start_app, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    roost = await start_app(repo)
    await roost.wait_ready()
    messages = [
        {"type": "http.request", "body": solid_png((1, 2, 3))[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/classify",
        "raw_path": b"/v1/classify",
        "query_string": b"model=colours",
        "root_path": "",
        "headers": [(b"host", b"roost"), (b"content-type", b"image/png")],
        "client": ("127.0.0.1", 5000),
        "server": ("roost", 80),
    }
    with caplog.at_level(logging.INFO):
        await roost.app(scope, receive, send)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]
    assert any("client went away" in r.getMessage() for r in caplog.records)
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_requests_total", model="colours", code="499") == 1
    assert sample(text, "roost_requests_total", model="colours", code="500") == 0


async def test_a_plain_multipart_upload_without_a_model_uses_the_shipped_default(
    start_app,
) -> None:  # type: ignore[no-untyped-def]
    roost = await start_app(REPO_ROOT / "model_repo")
    await roost.wait_ready()
    jpeg = io.BytesIO()
    Image.fromarray(photos.chelsea()).save(jpeg, "JPEG", quality=90)
    # What `curl -F file=@photo.jpg localhost:8000/v1/classify` sends.
    r = await roost.client.post(
        "/v1/classify", files={"file": ("photo.jpg", jpeg.getvalue(), "image/jpeg")}
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == "imagenet"
    assert answer["results"][0]["predictions"][0]["label"] in {"Egyptian cat", "tiger cat", "tabby"}


@pytest.mark.parametrize(
    ("cpu_decode", "decoding_thread"), [("inference", "roost-infer"), ("pool", "roost-decode")]
)
async def test_on_the_cpu_images_are_decoded_where_roost_cpu_decode_says(
    repo: Path, start_app, monkeypatch: pytest.MonkeyPatch, cpu_decode: str, decoding_thread: str
) -> None:  # type: ignore[no-untyped-def]
    threads: list[str] = []
    decode = PillowDecoder.decode

    def recording(self: PillowDecoder, *args: Any) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return decode(self, *args)

    monkeypatch.setattr(PillowDecoder, "decode", recording)
    publish(repo, "colours", 1)
    roost = await start_app(repo, cpu_decode=cpu_decode)
    await roost.wait_ready()
    threads.clear()  # the load's reference checks decode on the loading thread
    red, blue = solid_png((250, 10, 10)), solid_png((10, 10, 250))
    files = [("file", ("red.png", red, "image/png")), ("file", ("blue.png", blue, "image/png"))]
    r = await roost.client.post("/v1/classify", files=files)
    assert r.status_code == 200, r.text
    assert [x["predictions"][0]["label"] for x in r.json()["results"]] == ["red", "blue"]
    assert len(threads) == 2 and all(t.startswith(decoding_thread) for t in threads), threads
    # A broken image fails its own request (415, named), and nothing else.
    broken = [
        ("file", ("red.png", red, "image/png")),
        ("file", ("bad.png", b"no image", "image/png")),
    ]
    bad, good = await asyncio.gather(
        roost.client.post("/v1/classify", files=broken),
        roost.client.post("/v1/classify", content=blue, headers={"content-type": "image/png"}),
    )
    assert bad.status_code == 415 and "bad.png" in bad.text
    assert (
        good.status_code == 200 and good.json()["results"][0]["predictions"][0]["label"] == "blue"
    )
