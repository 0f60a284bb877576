"""bench/lean_server.py, the CPU floor as a server, answers as a classifier must."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from modelkit import publish, solid_png

from bench.lean_server import create_app

COLOURS = {"red": (250, 10, 10), "green": (10, 250, 10), "blue": (10, 10, 250)}


async def test_lean_server_answers_every_request_with_its_own_top_classes(tmp_path: Path) -> None:
    folder = publish(tmp_path, "colours", 1)
    async with LifespanManager(create_app(folder)) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lean") as client:
            names = list(COLOURS) * 4  # concurrent: the workers take them two at a time
            replies = await asyncio.gather(
                *(
                    client.post(
                        "/v1/classify",
                        content=solid_png(COLOURS[name]),
                        headers={"content-type": "image/png"},
                    )
                    for name in names
                )
            )
    for name, reply in zip(names, replies, strict=True):
        assert reply.status_code == 200
        predictions = reply.json()["predictions"]
        assert [p["label"] for p in predictions][0] == name
        assert len(predictions) == 3  # every class of a three-class model, best first
        scores = [p["score"] for p in predictions]
        assert scores == sorted(scores, reverse=True)


async def test_lean_server_fails_a_batch_with_a_broken_image_and_keeps_serving(
    tmp_path: Path,
) -> None:
    folder = publish(tmp_path, "colours", 1)
    async with LifespanManager(create_app(folder)) as manager:
        transport = httpx.ASGITransport(app=manager.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://lean") as client:
            headers = {"content-type": "image/png"}
            broken = await client.post("/v1/classify", content=b"no image", headers=headers)
            assert broken.status_code == 500
            good = await client.post(
                "/v1/classify", content=solid_png(COLOURS["green"]), headers=headers
            )
            assert good.status_code == 200
            assert good.json()["predictions"][0]["label"] == "green"
