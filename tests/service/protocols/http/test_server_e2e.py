"""HTTP behaviour with real photos and real ONNX models, the app run in-process.

Most tests reach the app through `start_app` (tests/service/conftest.py): `create_app`, its
lifespan entered, httpx over ASGI; no sockets, no subprocess. One test stays on a real uvicorn
server (`python -m service` in a subprocess on 127.0.0.1, via `start_server`) as an end-to-end
smoke: `test_real_server_classifies_real_photos` (JPEG), which also covers what only a real server
does: the command line, ROOST_* variables read from the environment, multipart over a socket.
`test_concurrent_requests_share_batches` moved in-process: batching needs concurrent requests in
the app's event loop, which `asyncio.gather` over ASGI gives as well as sockets do.
"""

from __future__ import annotations

import asyncio
import io
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from modelkit import COLOUR_LABELS, colour_model, publish, solid_png
from PIL import Image
from servers import sample
from skimage import data as photos


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, quality=90)
    return buffer.getvalue()


def expected_colour(array: np.ndarray, size: tuple[int, int] = (32, 32)) -> str:
    """What the colour model must answer: the channel with the highest mean after resizing."""
    small = np.asarray(Image.fromarray(array).resize(size[::-1], Image.Resampling.BILINEAR))
    return COLOUR_LABELS[int(np.argmax(small.reshape(-1, 3).mean(axis=0)))]


PHOTOS = {"chelsea": photos.chelsea(), "coffee": photos.coffee(), "astronaut": photos.astronaut()}


def publish_colours(repo: Path) -> None:
    publish(repo, "colours", 1, config={"version_policy": "all"})
    publish(repo, "colours", 2, size=(24, 24))
    publish(repo, "other", 1)
    publish(
        repo,
        "other",
        2,
        labels=["a", "b", "c", "d"],
        size=(16, 16),
        model=colour_model((16, 16), 4),
    )


@pytest.fixture
async def colours_app(repo: Path, start_app):  # type: ignore[no-untyped-def]
    publish_colours(repo)
    app = await start_app(repo, max_upload_bytes=1024 * 1024)
    await app.wait_ready()
    return app


@pytest.fixture
def colours_server(repo: Path, start_server):  # type: ignore[no-untyped-def]
    publish_colours(repo)
    server = start_server(repo, ROOST_MAX_UPLOAD_BYTES=str(1024 * 1024))
    server.wait_ready()
    return server


def photo_upload(name: str, array: np.ndarray, fmt: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (f"{name}.{fmt.lower()}", encode(array, fmt), f"image/{fmt.lower()}")}


def check_photo_result(r: httpx.Response, name: str, array: np.ndarray, fmt: str) -> None:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "colours" and body["version"] == 1
    (result,) = body["results"]
    assert result["filename"] == f"{name}.{fmt.lower()}"
    scores = [p["score"] for p in result["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert result["predictions"][0]["label"] == expected_colour(array), name


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_classifies_real_photos(colours_app, fmt: str) -> None:  # type: ignore[no-untyped-def]
    for name, array in PHOTOS.items():
        r = await colours_app.client.post(
            "/v1/classify?model=colours&version=1", files=photo_upload(name, array, fmt)
        )
        check_photo_result(r, name, array, fmt)


@pytest.mark.slow
def test_real_server_classifies_real_photos(colours_server) -> None:  # type: ignore[no-untyped-def]
    """The end-to-end smoke: the same checks against `python -m service` over a socket."""
    for name, array in PHOTOS.items():
        r = colours_server.client.post(
            "/v1/classify?model=colours&version=1", files=photo_upload(name, array, "JPEG")
        )
        check_photo_result(r, name, array, "JPEG")
    access = (
        r"roost\.access: POST /v1/classify 200 [\d.]+ ms \[request_id=\w+ model=colours version=1\]"
    )
    colours_server.wait_for(lambda: re.search(access, colours_server.log()) is not None, 10, "log")


@pytest.mark.slow
def test_access_log_can_be_left_out(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    publish_colours(repo)
    server = start_server(repo, ROOST_ACCESS_LOG="false")
    server.wait_ready()
    upload = photo_upload("coffee", PHOTOS["coffee"], "PNG")
    assert server.client.post("/v1/classify?model=colours", files=upload).status_code == 200
    server.stop()  # flushed and closed: the whole log is there
    assert "Application startup complete" in server.log()
    assert "POST /v1/classify" not in server.log()


async def test_several_files_raw_body_and_top_k(colours_app) -> None:  # type: ignore[no-untyped-def]
    c = colours_app.client
    files = [
        ("file", (f"{c_}.png", solid_png(rgb), "image/png"))
        for c_, rgb in [("r", (240, 5, 5)), ("g", (5, 240, 5)), ("b", (5, 5, 240))]
    ]
    r = await c.post("/v1/models/colours/classify?top_k=2", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["predictions"][0]["label"] for x in results] == ["red", "green", "blue"]
    assert all(len(x["predictions"]) == 2 for x in results)
    raw = await c.post(
        "/v1/classify?model=colours&top_k=1",
        content=solid_png((5, 5, 240)),
        headers={"content-type": "image/png"},
    )
    assert raw.status_code == 200
    assert raw.json()["results"][0]["filename"] is None
    assert [p["label"] for p in raw.json()["results"][0]["predictions"]] == ["blue"]


async def test_routing_by_name_and_version(colours_app) -> None:  # type: ignore[no-untyped-def]
    c = colours_app.client
    png = {"file": ("x.png", solid_png((10, 200, 10)), "image/png")}
    assert (await c.post("/v1/models/colours/classify", files=png)).json()["version"] == 2
    assert (await c.post("/v1/models/colours/versions/1/classify", files=png)).json()[
        "version"
    ] == 1
    other = (await c.post("/v1/classify?model=other", files=png)).json()
    assert other["model"] == "other"
    assert len(other["results"][0]["predictions"]) == 4  # top_k defaults to 5, capped at C
    models = (await c.get("/v1/models")).json()["models"]
    assert {m["name"]: [v["version"] for v in m["versions"]] for m in models} == {
        "colours": [1, 2],
        "other": [2],
    }  # other has the default policy: latest 1
    detail = (await c.get("/v1/models/colours")).json()
    assert detail["labels"] == COLOUR_LABELS and detail["image_size"] == [24, 24]
    assert detail["card"]["metrics"] == {"test_accuracy": 1.0}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        (
            "/v1/classify?model=nope",
            {"content": b"x", "headers": {"content-type": "image/png"}},
            404,
            "model_not_found",
        ),
        (
            "/v1/models/colours/versions/7/classify",
            {"content": b"x", "headers": {"content-type": "image/png"}},
            404,
            "version_not_found",
        ),
        (
            "/v1/classify?model=colours",
            {"content": b"just text", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "/v1/classify?model=colours",
            {"content": b"<html></html>", "headers": {"content-type": "image/jpeg"}},
            415,
            "invalid_image",
        ),
        (
            "/v1/classify?model=colours",
            {"content": solid_png((1, 1, 1))[:60], "headers": {"content-type": "image/png"}},
            415,
            "invalid_image",
        ),
        (
            "/v1/classify?model=colours",
            {"content": b"", "headers": {"content-type": "image/png"}},
            415,
            "invalid_image",
        ),
        (
            "/v1/classify?model=colours&top_k=0",
            {"content": solid_png((1, 1, 1)), "headers": {"content-type": "image/png"}},
            422,
            "invalid_parameter",
        ),
        (
            "/v1/classify?model=colours&top_k=4",
            {"content": solid_png((1, 1, 1)), "headers": {"content-type": "image/png"}},
            422,
            "invalid_parameter",
        ),
        (
            "/v1/classify?model=colours&version=1.5",
            {"content": solid_png((1, 1, 1)), "headers": {"content-type": "image/png"}},
            422,
            "invalid_parameter",
        ),
        (
            "/v1/classify?model=colours",
            {"files": {"other": ("x.png", b"123", "image/png")}},
            400,
            "bad_request",
        ),
        (
            "/v1/classify",
            {"content": solid_png((1, 1, 1)), "headers": {"content-type": "image/png"}},
            404,
            "model_not_found",
        ),
        (
            "/v1/classify?model=colours",
            {"content": b"\0" * (1024 * 1024 + 1), "headers": {"content-type": "image/png"}},
            413,
            "payload_too_large",
        ),
    ],
)
async def test_error_statuses(colours_app, path, kwargs, status, code) -> None:  # type: ignore[no-untyped-def]
    r = await colours_app.client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert "Traceback" not in r.text and "/tmp" not in r.text


async def test_too_many_pixels_and_files(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = await start_app(repo, max_image_pixels=10000, max_files_per_request=2)
    await server.wait_ready()
    big = await server.client.post(
        "/v1/classify",
        content=solid_png((1, 2, 3), (200, 200)),
        headers={"content-type": "image/png"},
    )
    assert big.status_code == 413 and "pixels" in big.json()["error"]["message"]
    files = [("file", (f"{i}.png", solid_png((1, 2, 3)), "image/png")) for i in range(3)]
    many = await server.client.post("/v1/classify", files=files)
    assert many.status_code == 413 and "too many files" in many.json()["error"]["message"]
    assert (await server.client.get("/healthz")).status_code == 200


async def test_metrics_move_after_requests(colours_app) -> None:  # type: ignore[no-untyped-def]
    c = colours_app.client
    before = (await c.get("/metrics")).text
    for _ in range(3):
        await c.post(
            "/v1/classify?model=colours",
            files={"file": ("x.png", solid_png((9, 9, 9)), "image/png")},
        )
    await c.post(
        "/v1/classify?model=secret-name", content=b"x", headers={"content-type": "image/png"}
    )
    after = (await c.get("/metrics")).text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("roost_requests_total", model="colours", version="2", code="200") == 3
    assert delta("roost_images_total", model="colours") == 3
    assert delta("roost_request_duration_seconds_count", model="colours") == 3
    assert delta("roost_decode_duration_seconds_count", model="colours") == 3
    assert delta("roost_inference_duration_seconds_count", model="colours") >= 1
    assert delta("roost_requests_total", model="_unknown", code="404") == 1
    assert "secret-name" not in after
    assert sample(after, "roost_model_version_ready", model="colours", version="2") == 1
    assert sample(after, "roost_models_loaded") == 2


async def test_readiness_before_and_after_load(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    server = await start_app(repo)
    not_ready = await server.client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["reasons"]
    publish(repo, "colours", 1)
    assert (await server.client.get("/v1/models/colours/ready")).status_code == 404
    reloaded = await server.reload()
    assert reloaded.status_code == 200
    assert reloaded.json()["models"][0]["versions"][0]["state"] == "ready"
    assert (await server.client.get("/readyz")).status_code == 200
    assert (await server.client.get("/v1/models/colours/ready")).status_code == 200


async def test_broken_versions_are_reported_and_skipped(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "good", 1)
    publish(repo, "badsha", 1, card_extra={"sha256": "0" * 64})
    publish(repo, "badref", 1, references=[(solid_png((250, 0, 0)), 2)])
    publish(repo, "badlabels", 1, labels=["a", "b"], model=colour_model((32, 32), 3))
    publish(repo, "notonnx", 1, model=b"this is not a model")
    server = await start_app(repo)
    models: list[dict] = []  # type: ignore[type-arg]
    for _ in range(3000):  # hang guard: 30 s
        models = (await server.client.get("/v1/models")).json()["models"]
        if len(models) == 5 and all(
            m["versions"] and m["versions"][0]["state"] != "loading" for m in models
        ):
            break
        await asyncio.sleep(0.01)
    states = {m["name"]: m["versions"][0] for m in models}
    assert states["good"]["state"] == "ready"
    assert "sha256" in states["badsha"]["reason"]
    assert "reference" in states["badref"]["reason"]
    assert "labels.txt has 2" in states["badlabels"]["reason"]
    assert "does not load" in states["notonnx"]["reason"]
    assert all(states[n]["state"] == "failed" for n in ("badsha", "badref", "badlabels", "notonnx"))
    assert (await server.client.get("/readyz")).status_code == 503  # failed models are not served
    ok = await server.client.post(
        "/v1/classify?model=good",
        content=solid_png((1, 200, 1)),
        headers={"content-type": "image/png"},
    )
    assert ok.status_code == 200
    bad = await server.client.post(
        "/v1/classify?model=badsha",
        content=solid_png((1, 200, 1)),
        headers={"content-type": "image/png"},
    )
    assert bad.status_code == 503 and "sha256" in bad.json()["error"]["message"]
    metrics = (await server.client.get("/metrics")).text
    assert sample(metrics, "roost_model_load_failures_total") == 4


async def _hammer(
    client: httpx.AsyncClient,
    model: str,
    stop: asyncio.Event,
    outcomes: list[int],
    versions: set[int],
) -> None:
    while not stop.is_set():
        r = await client.post(
            f"/v1/classify?model={model}",
            content=solid_png((200, 10, 10)),
            headers={"content-type": "image/png"},
        )
        outcomes.append(r.status_code)
        if r.status_code == 200:
            versions.add(r.json()["version"])


async def _wait_for_outcomes(outcomes: list[int], count: int, guard_s: float = 20.0) -> None:
    """Until `count` requests have answered; the guard only ends a wait that would hang."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while len(outcomes) < count and loop.time() - started < guard_s:
        await asyncio.sleep(0.01)


async def test_new_and_corrupt_versions_published_under_load(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = await start_app(repo)
    await server.wait_ready()
    stop, outcomes, versions = asyncio.Event(), [], set()  # type: ignore[var-annotated]
    listing: dict = {}  # type: ignore[type-arg]

    async def publish_under_load() -> None:
        nonlocal listing
        try:
            await _wait_for_outcomes(outcomes, 10)
            publish(repo, "colours", 2)
            assert (await server.reload()).status_code == 200
            publish(repo, "colours", 3, model=b"garbage, not onnx")
            listing = (await server.reload()).json()["models"][0]
            await _wait_for_outcomes(outcomes, len(outcomes) + 20)
        finally:
            stop.set()

    hammers = (_hammer(server.client, "colours", stop, outcomes, versions) for _ in range(4))
    await asyncio.wait_for(asyncio.gather(publish_under_load(), *hammers), timeout=120)
    assert outcomes and set(outcomes) == {200}, sorted(set(outcomes))
    assert versions == {1, 2}
    states = {v["version"]: v["state"] for v in listing["versions"]}
    assert states[2] == "ready" and states[3] == "failed"
    assert 1 not in states or states[1] == "unloading"
    after = await server.client.post(
        "/v1/classify?model=colours",
        content=solid_png((1, 1, 200)),
        headers={"content-type": "image/png"},
    )
    assert after.json()["version"] == 2


async def test_removed_version_unloads_and_latest_takes_over(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    publish(repo, "colours", 2, config={"version_policy": "all"})
    server = await start_app(repo)
    await server.wait_ready()
    shutil.rmtree(repo / "colours" / "2")
    await server.reload()
    r = await server.client.post(
        "/v1/classify", content=solid_png((1, 1, 200)), headers={"content-type": "image/png"}
    )
    assert r.json()["version"] == 1
    gone = await server.client.post(
        "/v1/models/colours/versions/2/classify",
        content=solid_png((1, 1, 200)),
        headers={"content-type": "image/png"},
    )
    assert gone.status_code == 404


async def test_concurrent_requests_share_batches(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, config={"max_queue_delay_ms": 50, "max_batch_size": 16})
    server = await start_app(repo)
    await server.wait_ready()
    png = solid_png((1, 200, 1))

    async def one() -> int:
        r = await server.client.post(
            "/v1/classify", content=png, headers={"content-type": "image/png"}
        )
        return r.status_code

    codes = list(await asyncio.gather(*(one() for _ in range(32))))
    assert set(codes) == {200}
    text = (await server.client.get("/metrics")).text
    batches = sample(text, "roost_batch_size_count", model="colours")
    images = sample(text, "roost_batch_size_sum", model="colours")
    assert images == 32
    assert batches < 32, "no two requests shared a batch"
    assert sample(text, "roost_batch_size_bucket", model="colours", le="1.0") < batches
