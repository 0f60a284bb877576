"""Payload logging (config.json `payload_log`): sampled records of answers into a folder or to
an HTTP endpoint as CloudEvents, and a labelling inbox of uncertain images by predicted label;
a full queue drops and counts, a failing sink is counted and logged, and no request waits or
fails for any of it."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modelkit import publish, solid_png
from PIL import Image
from pydantic import ValidationError
from servers import sample

from service.model_config import ModelConfigFile
from service.observability.metrics import ServiceMetrics
from service.serving.payloads import Answered, PayloadLog, image_file
from training.data import find_splits

CLEAR = solid_png((250, 5, 5))  # the colour model is sure of these
MUDDY = solid_png((120, 110, 115))  # and unsure of these


def post(image: bytes) -> dict[str, Any]:
    return {"content": image, "headers": {"content-type": "image/png"}}


async def until(condition: Any, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


def records(folder: Path, model: str = "colours") -> list[dict[str, Any]]:
    lines = []
    for file in sorted((folder / model).glob("*.jsonl")):
        lines += [json.loads(line) for line in file.read_text().splitlines()]
    return lines


async def start_recording(repo: Path, tmp_path: Path, start_app: Any) -> tuple[Any, Path, Path]:
    """`colours` 1 served, every answer recorded with its image into a folder, the uncertain
    ones (top-1 below 0.6) into an inbox: the app, the folder and the inbox."""
    payloads, inbox = tmp_path / "payloads", tmp_path / "inbox"
    config = {
        "min_confidence": 0.6,
        "payload_log": {"sample": 1.0, "folder": str(payloads), "images": True,
                        "inbox": str(inbox)},
    }  # fmt: skip
    publish(repo, "colours", 1, config=config)
    roost = await start_app(repo)
    await roost.wait_ready()
    return roost, payloads, inbox


async def test_records_images_and_the_inbox_of_uncertain_answers(
    repo: Path, tmp_path: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    roost, payloads, inbox = await start_recording(repo, tmp_path, start_app)
    answers = [await roost.client.post("/v1/classify", **post(png)) for png in
               (CLEAR, MUDDY, CLEAR, MUDDY, MUDDY)]  # fmt: skip
    flags = [a.json()["results"][0]["uncertain"] for a in answers]
    assert flags == [False, True, False, True, True], "the model is sure of one colour only"
    await until(lambda: len(records(payloads)) == 5, "five records")
    written = records(payloads)
    assert [r["request_id"] for r in written] == [a.headers["x-request-id"] for a in answers]
    for record, answer in zip(written, answers, strict=True):
        top = answer.json()["results"][0]["predictions"][0]
        assert record["label"] == top["label"] and record["version"] == 1
        assert record["predictions"][0]["score"] == pytest.approx(top["score"])
        assert (payloads / "colours" / record["image"]).read_bytes() in (CLEAR, MUDDY)
    await until(lambda: len(sorted((inbox / "colours").rglob("*.png"))) == 3, "three in the inbox")
    boxed = sorted((inbox / "colours").rglob("*.png"))
    muddy_label = answers[1].json()["results"][0]["predictions"][0]["label"]
    assert {p.parent.name for p in boxed} == {muddy_label}, "filed under the predicted label"
    assert all(p.read_bytes() == MUDDY for p in boxed)
    # A person corrects one answer by moving the image to its true class: the inbox is then
    # the layout `roost train --data` reads, class folders of images.
    corrected = inbox / "colours" / "grey"
    corrected.mkdir()
    boxed[0].rename(corrected / boxed[0].name)
    splits = find_splits(inbox / "colours", (1.0, 0.0, 0.0))
    assert sorted(splits.class_names) == sorted(["grey", muddy_label])
    assert len(splits.splits["train"]) == 3
    metrics = (await roost.client.get("/metrics")).text
    assert sample(metrics, "roost_payload_records_total", model="colours", outcome="written") == 5


async def test_decoded_pixel_tensors_are_recorded_as_png(
    repo: Path, tmp_path: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    """The v2 protocol's uint8 tensors are decoded images: recorded losslessly as PNG files,
    encoded by the writer, not the request."""
    roost, payloads, inbox = await start_recording(repo, tmp_path, start_app)
    pixels = np.stack([np.full((32, 32, 3), (250, 5, 5), np.uint8),
                       np.full((32, 32, 3), (120, 110, 115), np.uint8)])  # fmt: skip
    pixels[0, 0, 0] = (1, 2, 3)  # not a solid colour: the PNG must keep every pixel
    tensor = {"name": "PIXELS", "datatype": "UINT8", "shape": list(pixels.shape)}
    r = await roost.client.post(
        "/v2/models/colours/infer", json={"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}
    )
    assert r.status_code == 200, r.text
    await until(lambda: len(records(payloads)) == 2, "two records")
    written = records(payloads)
    assert all(r["request_id"] == written[0]["request_id"] for r in written)
    saved = [np.asarray(Image.open(payloads / "colours" / r["image"])) for r in written]
    assert sorted(a.tobytes() for a in saved) == sorted(p.tobytes() for p in pixels)
    assert all(r["image"].endswith(".png") for r in written)
    await until(lambda: len(list((inbox / "colours").rglob("*.png"))) == 1, "the unsure one")
    (boxed,) = (inbox / "colours").rglob("*.png")
    np.testing.assert_array_equal(np.asarray(Image.open(boxed)), pixels[1])


def test_an_upload_is_kept_as_sent_and_pixels_become_png() -> None:
    upload = solid_png((9, 9, 9))
    assert image_file(upload) is upload
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image_file(pixels)))), pixels)


async def test_images_the_shadow_version_answers_otherwise_go_to_the_inbox(
    repo: Path, tmp_path: Path, start_app
) -> None:  # type: ignore[no-untyped-def]
    inbox = tmp_path / "inbox"
    publish(repo, "colours", 1)
    # version 2 names the same outputs otherwise: its top-1 label differs on every image
    publish(repo, "colours", 2, labels=["blue", "red", "green"], config={
        "version_labels": {"stable": 1, "canary": 2},
        "traffic": {"stable": 100, "canary": 0},
        "shadow": {"label": "canary", "percent": 100},
        "payload_log": {"inbox": str(inbox)},
    })  # fmt: skip
    roost = await start_app(repo)
    await roost.wait_ready()
    answer = await roost.client.post("/v1/classify", **post(CLEAR))
    assert answer.json()["version"] == 1 and not answer.json()["results"][0]["uncertain"]
    await until(lambda: len(list(inbox.rglob("*.png"))) == 1, "the disagreement in the inbox")
    (saved,) = inbox.rglob("*.png")
    assert saved.parent == inbox / "colours" / "red", "filed under the answer clients got"
    assert saved.read_bytes() == CLEAR


class Receiver(BaseHTTPRequestHandler):
    """A CloudEvents sink on loopback: keeps what it is sent; waits while `hold` is set."""

    events: list[tuple[str, dict[str, Any]]] = []
    hold = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.hold.is_set():
            self.release.wait(30)
        type(self).events.append((self.headers["content-type"], json.loads(body)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.events = []
    Receiver.hold.clear()
    Receiver.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events"
    Receiver.release.set()
    server.shutdown()


async def test_records_go_to_an_http_endpoint_as_cloudevents(
    repo: Path, start_app, receiver: str
) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, config={"payload_log": {"sample": 1.0, "url": receiver}})
    roost = await start_app(repo)
    await roost.wait_ready()
    answer = await roost.client.post("/v1/classify", **post(CLEAR))
    await until(lambda: len(Receiver.events) == 1, "one event")
    content_type, event = Receiver.events[0]
    assert content_type.startswith("application/cloudevents+json")
    assert event["specversion"] == "1.0" and event["type"] == "org.roost.inference.payload"
    assert event["source"] == "roost/colours/1" and event["id"]
    assert event["data"]["request_id"] == answer.headers["x-request-id"]
    assert "image_base64" not in event["data"]


def answered(uncertain: bool = False) -> Answered:
    return Answered(CLEAR, "x.png", [("red", 0.9)], uncertain)


def counted(metrics: ServiceMetrics, outcome: str) -> float:
    return sample(metrics.exposition().decode(), "roost_payload_records_total",
                  model="m", outcome=outcome)  # fmt: skip


def test_a_full_queue_drops_and_counts_and_offer_never_waits(receiver: str) -> None:
    metrics = ServiceMetrics()
    log = PayloadLog(metrics, queue_size=1)
    config = ModelConfigFile.model_validate({"payload_log": {"sample": 1.0, "url": receiver}})
    Receiver.hold.set()  # the writer's first POST waits: the queue fills behind it
    for _ in range(5):
        log.offer(config.payload_log, "m", 1, "r", [answered()])
    dropped = counted(metrics, "dropped")
    assert dropped >= 3
    Receiver.release.set()
    log.close()
    assert counted(metrics, "written") == 5 - dropped == len(Receiver.events)


def test_a_failing_sink_is_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the sink's folder should be")
    metrics = ServiceMetrics()
    log = PayloadLog(metrics)
    config = ModelConfigFile.model_validate(
        {"payload_log": {"sample": 1.0, "folder": str(blocked)}}
    )
    for _ in range(3):
        log.offer(config.payload_log, "m", 1, None, [answered()])
    log.close()
    assert counted(metrics, "failed") == 3
    assert len([r for r in caplog.records if "payload log of m" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"payload_log": {"sample": 0.5}}, "needs a folder or a url"),
        ({"payload_log": {"sample": 0.5, "url": "ftp://x"}}, "http:// or https://"),
        ({"payload_log": {}}, "a sample above 0, an inbox, or both"),
        ({"payload_log": {"inbox": "/srv/inbox"}}, "set min_confidence"),
        ({"payload_log": {"sample": 2}}, "less than or equal to 1"),
    ],
)
def test_payload_log_configs_that_cannot_work_are_refused(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelConfigFile.model_validate(config)
