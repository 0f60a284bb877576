"""Clients cannot steer a model's policy: the rollback rule counts only the version's own
failures, and the result cache answers only what the same model computed for the same input
(issue #25, findings 6, 9 and 10). In-process app, real ONNX sessions, real gRPC client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.grpc.aio as grpcaio
from modelkit import colour_model, publish, solid_png
from onnx import numpy_helper
from servers import sample
from tritonclient.utils import InferenceServerException

from service.protocols.http import classify as classify_api
from service.runtime.classifier import OnnxClassifier
from service.runtime.decode.pillow import PillowDecoder

PNG = {"content-type": "image/png"}
RED, BLUE = solid_png((250, 10, 10)), solid_png((10, 10, 250))
CANARY_WATCHED = {
    "version_labels": {"stable": 1, "canary": 2},
    "traffic": {"stable": 50, "canary": 50},
    "rollback": {"label": "canary", "min_requests": 4, "max_error_ratio": 0.2},
}


async def rollbacks(roost: Any) -> float:
    text = (await roost.client.get("/metrics")).text
    return sample(text, "roost_rollbacks_total", label="canary")


async def test_server_errors_caused_by_a_clients_input_never_roll_a_canary_back(
    repo: Path, start_app: Any, monkeypatch: pytest.MonkeyPatch, reliability: Any
) -> None:
    """A crafted file that makes the server fail (here: a decoder bug, answered 500) says
    nothing about the canary's model; aimed at the canary 25 times, it used to roll it back."""
    publish(repo, "colours", 1, config=CANARY_WATCHED)
    publish(repo, "colours", 2)
    crafted = solid_png((10, 250, 10), size=(47, 39))
    decode = PillowDecoder.decode

    def buggy(self: PillowDecoder, data: bytes, *args: Any) -> np.ndarray:
        if data == crafted:
            raise TypeError("a decoder bug reached by crafted input")
        return decode(self, data, *args)

    monkeypatch.setattr(PillowDecoder, "decode", buggy)
    roost = await start_app(repo, raise_app_exceptions=False)
    await roost.wait_ready()
    path = "/v1/models/colours/versions/canary/classify"
    codes = [
        (await roost.client.post(path, content=crafted, headers=PNG)).status_code for _ in range(25)
    ]
    assert codes == [500] * 25
    assert (await roost.client.post(path, content=RED, headers=PNG)).status_code == 200
    assert await rollbacks(roost) == 0
    detail = (await roost.client.get("/v1/models/colours")).json()
    assert detail["routing"]["rolled_back"] == {}
    reliability.add(
        "hostile input",
        "input answered 500 aimed at a watched canary",
        25,
        "no rollback: only the version's own failures count",
    )


async def test_a_clients_short_grpc_deadline_never_rolls_a_canary_back(
    repo: Path, start_app: Any, monkeypatch: pytest.MonkeyPatch, reliability: Any
) -> None:
    """gRPC calls whose own deadline is shorter than the model takes end in 504 (or are
    cancelled): the client's choice, not the canary's failure. The server's own deadline
    passing still counts, so a canary that is really too slow is still rolled back."""
    publish(repo, "colours", 1, config=CANARY_WATCHED)
    publish(repo, "colours", 2)
    run = OnnxClassifier.run

    def slow(self: OnnxClassifier, *args: Any, **kwargs: Any) -> np.ndarray:
        time.sleep(0.05)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(OnnxClassifier, "run", slow)  # before the batchers take it
    roost = await start_app(repo, grpc_port=0, request_timeout_s=10.0)
    await roost.wait_ready()
    client = grpcaio.InferenceServerClient(f"127.0.0.1:{roost.app.state.grpc.port}")
    try:
        tensor = grpcaio.InferInput("IMAGE", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([RED], dtype=np.object_))
        refused = 0
        for _ in range(25):
            try:
                await client.infer("colours", [tensor], model_version="canary", client_timeout=0.01)
            except InferenceServerException as exc:
                # or UNAVAILABLE: the slow batches fill the queue
                assert exc.status() in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE")
                refused += 1
        assert refused == 25
        await asyncio.sleep(0.2)  # the last calls' handlers finish on the server
    finally:
        await client.close()
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_requests_total", version="2", code="504") > 0
    assert await rollbacks(roost) == 0
    reliability.add(
        "hostile input",
        "gRPC calls with a 10 ms deadline aimed at a watched canary",
        25,
        "no rollback: a client's own deadline is not the version's failure",
    )


async def test_a_version_missing_the_servers_deadline_is_still_rolled_back(
    repo: Path, start_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(repo, "colours", 1, config=CANARY_WATCHED)
    publish(repo, "colours", 2)
    run = OnnxClassifier.run

    def slow(self: OnnxClassifier, *args: Any, **kwargs: Any) -> np.ndarray:
        time.sleep(0.1)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(OnnxClassifier, "run", slow)  # before the batchers take it
    roost = await start_app(repo, request_timeout_s=0.05)
    await roost.wait_ready()
    path = "/v1/models/colours/versions/canary/classify"
    codes = [
        (await roost.client.post(path, content=RED, headers=PNG)).status_code for _ in range(4)
    ]
    assert codes == [504] * 4
    assert await rollbacks(roost) == 1


async def test_the_same_bytes_as_pixels_and_as_an_image_are_different_answers(
    repo: Path, start_app: Any, reliability: Any
) -> None:
    """A PNG padded to H*W*3 bytes is also a valid PIXELS tensor: sent that way first, it must
    not poison the cache for a later /v1 classify of the same file."""
    publish(repo, "colours", 1, config={"cache": {"max_mib": 1}})
    roost = await start_app(repo)
    await roost.wait_ready()
    padded = BLUE + bytes(32 * 32 * 3 - len(BLUE))  # a PNG decoder stops at IEND
    pixels = {
        "name": "PIXELS",
        "shape": [1, 32, 32, 3],
        "datatype": "UINT8",
        "parameters": {"binary_data_size": len(padded)},
    }
    header = json.dumps({"inputs": [pixels]}).encode()
    v2 = await roost.client.post(
        "/v2/models/colours/infer",
        content=header + padded,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert v2.status_code == 200, v2.text
    v1 = await roost.client.post("/v1/classify?model=colours", content=padded, headers=PNG)
    assert v1.status_code == 200, v1.text
    assert v1.json()["results"][0]["predictions"][0]["label"] == "blue"
    image = {
        "name": "IMAGE",
        "shape": [1],
        "datatype": "BYTES",
        "data": [base64.b64encode(padded).decode()],
        "parameters": {"content_type": "base64"},
    }
    again = await roost.client.post("/v2/models/colours/infer", json={"inputs": [image]})
    assert again.status_code == 200, again.text
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_cache_requests_total", result="miss") == 2  # pixels, image
    assert sample(text, "roost_cache_requests_total", result="hit") == 1  # image again
    reliability.add(
        "hostile input",
        "cache poisoning: a PNG padded to H*W*3 bytes sent as PIXELS, then as an image",
        2,
        "separate cache entries; the image answer is the image's",
    )


async def test_files_replaced_in_place_are_never_answered_from_the_old_models_cache(
    repo: Path, start_app: Any, reliability: Any
) -> None:
    publish(repo, "colours", 1, config={"cache": {"max_mib": 1}})
    roost = await start_app(repo)
    await roost.wait_ready()

    async def top1() -> str:
        r = await roost.client.post("/v1/classify?model=colours", content=RED, headers=PNG)
        assert r.status_code == 200, r.text
        return str(r.json()["results"][0]["predictions"][0]["label"])

    assert await top1() == "red"
    # The same version number, another model: red now scores as class 1 ("green").
    model = onnx.load_from_string(colour_model())
    weights = next(t for t in model.graph.initializer if t.name == "W")
    weights.CopyFrom(numpy_helper.from_array(np.eye(3, dtype=np.float32)[[1, 0, 2]], "W"))
    replaced = model.SerializeToString()
    folder = repo / "colours" / "1"
    (folder / "model.onnx").write_bytes(replaced)
    card = json.loads((folder / "card.json").read_text())
    card["sha256"] = hashlib.sha256(replaced).hexdigest()
    card["references"] = []
    (folder / "card.json").write_text(json.dumps(card))
    assert (await roost.reload()).status_code == 200
    assert await top1() == "green"
    reliability.add(
        "faults",
        "a cached version's files replaced in place, then reloaded",
        1,
        "answers come from the new model, not the cache of the old",
    )


async def test_a_large_answer_is_built_off_the_event_loop(
    repo: Path, start_app: Any, monkeypatch: pytest.MonkeyPatch, reliability: Any
) -> None:
    """64 tiny images with top_k = 1,000 classes ask for 64,000 predictions: 0.2 s of work
    for a 10 KB request. Built on the event loop, it stalled every other request."""
    classes = [f"class {i}" for i in range(1000)]
    publish(repo, "many", 1, model=colour_model(num_classes=1000), labels=classes, references=[])
    built_on: list[str] = []
    build = classify_api.classify_response

    def recorded(*args: Any) -> Any:
        built_on.append(threading.current_thread().name)
        return build(*args)

    monkeypatch.setattr(classify_api, "classify_response", recorded)
    roost = await start_app(repo)
    await roost.wait_ready()
    files = [("file", (f"{i}.png", RED, "image/png")) for i in range(64)]
    large = await roost.client.post("/v1/classify?model=many&top_k=1000", files=files)
    small = await roost.client.post("/v1/classify?model=many&top_k=3", files=files[:2])
    assert large.status_code == 200 and small.status_code == 200, (large.text, small.text)
    loop_thread = threading.current_thread().name  # the in-process app runs on this loop
    assert built_on[0] != loop_thread and built_on[1] == loop_thread
    answers = large.json()["results"]
    assert len(answers) == 64 and all(len(a["predictions"]) == 1000 for a in answers)
    assert answers[0]["predictions"][:3] == small.json()["results"][0]["predictions"]
    reliability.add(
        "hostile input",
        "64 tiny images with top_k = 1,000 (64,000 predictions from a 10 KB request)",
        1,
        "the answer is built and serialized on a decode thread, not the event loop",
    )
