"""The Open Inference Protocol over gRPC (ROOST_GRPC_PORT), with Triton's own Python client.

The app runs in-process (`start_app`: `create_app` and its lifespan, `grpc_port=0`), and its
gRPC server listens on a real socket on 127.0.0.1; the port it picked is
`app.state.grpc.port`. The client is `tritonclient.grpc` (sync, called through
`asyncio.to_thread` because the server runs on the test's event loop) and
`tritonclient.grpc.aio`; a few tests build `ModelInferRequest`s by hand with the generated stub,
for what tritonclient never sends (typed `contents`, bad parameters). Answers are checked
against /v1's for the same images. One test runs `python -m service` with ROOST_GRPC_PORT set.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from asgi_lifespan import LifespanManager
from modelkit import publish, solid_png
from PIL import Image
from servers import sample
from skimage import data as photos
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from roost.contract.images import decode_image
from service.app import create_app
from service.errors import InvalidParameter
from service.protocols.oip import core as oip
from service.protocols.oip.grpc_server import GrpcExtraMissing, grpc_code_name
from service.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[4]
PHOTOS = {"chelsea": photos.chelsea(), "coffee": photos.coffee(), "astronaut": photos.astronaut()}


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, quality=90)
    return buffer.getvalue()


def url(roost: Any) -> str:
    return f"127.0.0.1:{roost.app.state.grpc.port}"


def image_input(module: Any, images: list[bytes]) -> Any:
    tensor = module.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def pixels_input(module: Any, pixels: np.ndarray) -> Any:
    tensor = module.InferInput("PIXELS", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    return tensor


def parse_classes(strings: np.ndarray) -> list[list[tuple[str, int, str]]]:
    """Triton's "score:index:label" strings, row by row."""
    rows = []
    for row in strings:
        parsed = []
        for item in row:
            score, index, label = item.decode().split(":", 2)
            parsed.append((score, int(index), label))
        rows.append(parsed)
    return rows


async def v1_top_k(roost: Any, images: list[bytes], k: int, model: str) -> list[list[Any]]:
    """/v1's predictions for the same images: (score, index, label) per image, best first."""
    files = [
        ("file", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)
    ]
    r = await roost.client.post(f"/v1/classify?model={model}&top_k={k}", files=files)
    assert r.status_code == 200, r.text
    return [
        [(p["score"], p["index"], p["label"]) for p in result["predictions"]]
        for result in r.json()["results"]
    ]


def status_of(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status())


@pytest.fixture
async def roost(repo: Path, start_app: Any) -> Any:
    publish(repo, "colours", 1)
    app = await start_app(repo, grpc_port=0)
    await app.wait_ready()
    return app


@pytest.fixture
async def aio(roost: Any) -> AsyncIterator[Any]:
    client = grpcaio.InferenceServerClient(url(roost))
    yield client
    await client.close()


@pytest.fixture
def sync(roost: Any) -> Iterator[Any]:
    client = grpcclient.InferenceServerClient(url(roost))
    yield client
    client.close()


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A sync tritonclient call, off the event loop the server runs on."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def raw_infer(roost: Any, request: Any) -> Any:
    async with grpc.aio.insecure_channel(url(roost)) as channel:
        return await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)


def bytes_request(images: list[bytes], **fields: Any) -> Any:
    request = pb.ModelInferRequest(model_name="colours", **fields)
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[len(images)])
    request.raw_input_contents.append(oip.pack_bytes(images))
    return request


# --- health and metadata -------------------------------------------------------------------


async def test_health_and_server_metadata(roost: Any, sync: Any, aio: Any) -> None:
    assert await call(sync.is_server_live) and await aio.is_server_live()
    assert await call(sync.is_server_ready) and await aio.is_server_ready()
    assert await aio.is_model_ready("colours")
    assert await aio.is_model_ready("colours", "1")
    assert not await aio.is_model_ready("colours", "7")  # as Triton: false, not an error
    assert not await aio.is_model_ready("nope")
    with pytest.raises(InferenceServerException) as err:
        await aio.is_model_ready("colours", "1.5")  # neither a number nor a label
    assert status_of(err) == "StatusCode.INVALID_ARGUMENT"

    meta = await call(sync.get_server_metadata, as_json=True)
    assert meta["name"] == "roost" and meta["version"] == roost.app.version
    assert "classification" in meta["extensions"]


async def test_not_ready_while_no_model_serves(repo: Path, start_app: Any) -> None:
    empty = await start_app(repo, grpc_port=0)  # no models in the repository
    for _ in range(6000):  # a hang guard only
        if empty.app.state.roost.registry.initial_load_done:
            break
        await asyncio.sleep(0.01)
    client = grpcaio.InferenceServerClient(url(empty))
    try:
        assert await client.is_server_live()
        assert not await client.is_server_ready()
        with pytest.raises(InferenceServerException) as err:
            await client.get_model_metadata("colours")
        assert status_of(err) == "StatusCode.NOT_FOUND"
    finally:
        await client.close()


async def test_model_metadata(aio: Any) -> None:
    meta = await aio.get_model_metadata("colours", as_json=True)
    assert meta["name"] == "colours" and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    # Shapes are int64 in the proto: the JSON form gives them as strings.
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta["inputs"]] == [
        ("IMAGE", "BYTES", [-1]),
        ("PIXELS", "UINT8", [-1, 32, 32, 3]),
    ]
    (output,) = meta["outputs"]
    assert (output["name"], output["datatype"], [int(d) for d in output["shape"]]) == (
        "PROBABILITIES",
        "FP32",
        [-1, 3],
    )
    assert (await aio.get_model_metadata("colours", "1")).name == "colours"
    with pytest.raises(InferenceServerException) as err:
        await aio.get_model_metadata("nope")
    assert status_of(err) == "StatusCode.NOT_FOUND"


async def test_repository_index(aio: Any) -> None:
    index = await aio.get_model_repository_index(as_json=True)
    assert index["models"] == [{"name": "colours", "version": "1", "state": "READY"}]


async def test_rest_and_grpc_answer_the_same_repository_index(repo: Path, start_app: Any) -> None:
    """One index for both transports: every state a version can be in, with the same reasons."""
    publish(repo, "colours", 1)
    publish(repo, "broken", 1, model=b"this is not an ONNX model")
    publish(repo, "refused", 1)  # its policy names a version that is not there: not in force
    (repo / "refused" / "config.json").write_text(
        json.dumps({"version_labels": {"stable": 1, "canary": 2}, "traffic": {"stable": 100}})
    )
    (repo / "unreadable").mkdir()
    (repo / "unreadable" / "config.json").write_text("{ not json")
    app = await start_app(repo, grpc_port=0)
    expected = {
        ("broken", "UNAVAILABLE"),
        ("colours", "READY"),
        ("refused", "UNAVAILABLE"),
        ("unreadable", "UNAVAILABLE"),
    }
    for _ in range(3000):  # the first load runs in the background
        rows = (await app.client.post("/v2/repository/index")).json()
        if {(m["name"], m["state"]) for m in rows} == expected:
            break
        await asyncio.sleep(0.01)
    by_name = {m["name"]: m for m in rows}
    assert {(m["name"], m["state"]) for m in rows} == expected
    assert "no traffic policy in force" in by_name["refused"]["reason"]
    assert "names version 2" in by_name["refused"]["reason"]
    assert by_name["unreadable"]["version"] is None and by_name["unreadable"]["reason"]
    client = grpcaio.InferenceServerClient(url(app))
    try:
        for ready_only in (False, True):
            rest = await app.client.post("/v2/repository/index", json={"ready": ready_only})
            rest_rows = [
                (m["name"], m["version"] or "", m["state"], m["reason"]) for m in rest.json()
            ]
            answer = await client.get_model_repository_index(as_json=True)
            grpc_rows = [
                (m["name"], m.get("version", ""), m["state"], m.get("reason", ""))
                for m in answer.get("models", [])
                if not ready_only or m["state"] == "READY"
            ]
            assert rest_rows == grpc_rows
    finally:
        await client.close()


async def test_rpcs_roost_does_not_serve_are_unimplemented(aio: Any) -> None:
    with pytest.raises(InferenceServerException) as err:
        await aio.get_model_config("colours")
    assert status_of(err) == "StatusCode.UNIMPLEMENTED"


# --- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_encoded_photos_answer_as_v1(roost: Any, sync: Any, fmt: str) -> None:
    images = [encode(array, fmt) for array in PHOTOS.values()]  # three in one request
    expected = await v1_top_k(roost, images, 3, "colours")

    result = await call(sync.infer, "colours", [image_input(grpcclient, images)])
    probabilities = result.as_numpy("PROBABILITIES")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    for row, predictions in zip(probabilities, expected, strict=True):
        for score, index, _ in predictions:
            assert row[index] == pytest.approx(score, rel=1e-6)

    wanted = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=2)
    result = await call(sync.infer, "colours", [image_input(grpcclient, images)], outputs=[wanted])
    strings = result.as_numpy("PROBABILITIES")
    assert strings.shape == (3, 2)
    assert parse_classes(strings) == [
        [(f"{score:f}", index, label) for score, index, label in predictions[:2]]
        for predictions in expected
    ]


async def test_decoded_pixels_answer_as_encoded_images(aio: Any) -> None:
    images = [encode(array, "PNG") for array in PHOTOS.values()]
    pixels = np.stack([decode_image(data, (32, 32), "stretch", 60_000_000) for data in images])
    from_files = await aio.infer("colours", [image_input(grpcaio, images)])
    from_pixels = await aio.infer("colours", [pixels_input(grpcaio, pixels)])
    np.testing.assert_allclose(
        from_pixels.as_numpy("PROBABILITIES"), from_files.as_numpy("PROBABILITIES"), rtol=1e-6
    )


async def test_classification_and_request_id_with_the_aio_client(aio: Any) -> None:
    images = [solid_png((240, 5, 5)), solid_png((5, 240, 5)), solid_png((5, 5, 240))]
    wanted = grpcaio.InferRequestedOutput("PROBABILITIES", class_count=1)
    result = await aio.infer(
        "colours", [image_input(grpcaio, images)], outputs=[wanted], request_id="req-42"
    )
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("req-42", "colours", "1")
    assert [row[0][2] for row in parse_classes(result.as_numpy("PROBABILITIES"))] == [
        "red",
        "green",
        "blue",
    ]
    # More classes than the model has: all of them.
    wanted = grpcaio.InferRequestedOutput("PROBABILITIES", class_count=10)
    result = await aio.infer("colours", [image_input(grpcaio, images[:1])], outputs=[wanted])
    assert result.as_numpy("PROBABILITIES").shape == (1, 3)


async def test_typed_contents_as_well_as_raw(roost: Any) -> None:
    images = [encode(PHOTOS["coffee"], "JPEG"), solid_png((5, 5, 240))]
    raw = await raw_infer(roost, bytes_request(images))
    expected = np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(2, 3)

    request = pb.ModelInferRequest(model_name="colours", model_version="1", id="typed")
    request.inputs.add(name="IMAGE", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        images
    )
    typed = await raw_infer(roost, request)
    assert typed.id == "typed" and list(typed.outputs[0].shape) == [2, 3]
    np.testing.assert_array_equal(
        np.frombuffer(typed.raw_output_contents[0], "<f4"), expected.ravel()
    )

    pixels = np.stack([decode_image(data, (32, 32), "stretch", 60_000_000) for data in images])
    request = pb.ModelInferRequest(model_name="colours")
    tensor = request.inputs.add(name="PIXELS", datatype="UINT8", shape=list(pixels.shape))
    tensor.contents.uint_contents.extend(pixels.ravel().tolist())
    request.outputs.add(name="PROBABILITIES").parameters["classification"].int64_param = 1
    classes = await raw_infer(roost, request)
    assert classes.outputs[0].datatype == "BYTES" and list(classes.outputs[0].shape) == [2, 1]
    strings = oip.unpack_bytes(classes.raw_output_contents[0], 2, "output")
    assert [s.decode().split(":")[2] for s in strings] == ["red", "blue"]  # espresso is brown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.inputs[0].contents.bytes_contents.append(b"x"), "not both"),
        (lambda r: r.raw_input_contents.append(b"extra"), "raw_input_contents holds 2"),
        (
            lambda r: r.raw_input_contents.__setitem__(0, b"\x09\x00\x00\x00abc"),
            "past the end of the data",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 3),
            "the shape says 3 elements, the binary data holds 1",
        ),
        (
            lambda r: (
                r.outputs.add(name="PROBABILITIES")
                .parameters["classification"]
                .__setattr__("string_param", "3")
            ),
            "expected int64_param",
        ),
        (
            lambda r: (
                r.outputs.add(name="PROBABILITIES")
                .parameters["classification"]
                .__setattr__("int64_param", 0)
            ),
            "expected >= 1",
        ),
        (lambda r: r.outputs.add(name="LOGITS"), "unknown output 'LOGITS'"),
        (lambda r: r.inputs.add(name="PIXELS", datatype="UINT8", shape=[0]), "exactly one input"),
        (
            lambda r: r.__setattr__("model_version", "v1.0"),
            "version must be a number >= 1 or a version label",
        ),
        (
            lambda r: r.__setattr__("model_version", "9" * 40),
            "version must be a number >= 1 or a version label",
        ),
    ],
)
async def test_malformed_requests_are_invalid_argument(
    roost: Any, change: Any, message: str
) -> None:
    request = bytes_request([solid_png((5, 240, 5))])
    change(request)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw_infer(roost, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(err.value.details())


async def test_uint8_values_over_255_are_refused(roost: Any) -> None:
    request = pb.ModelInferRequest(model_name="colours")
    tensor = request.inputs.add(name="PIXELS", datatype="UINT8", shape=[1, 32, 32, 3])
    tensor.contents.uint_contents.extend([256] * (32 * 32 * 3))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw_infer(roost, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "over 255" in str(err.value.details())


async def test_client_mistakes_with_tritonclient(aio: Any) -> None:
    async def refused(model: str, tensor: Any, version: str = "") -> tuple[str, str]:
        with pytest.raises(InferenceServerException) as err:
            await aio.infer(model, [tensor], model_version=version)
        return status_of(err), str(err.value.message())

    png = image_input(grpcaio, [solid_png((5, 240, 5))])
    assert (await refused("nope", png))[0] == "StatusCode.NOT_FOUND"
    assert (await refused("colours", png, "9"))[0] == "StatusCode.NOT_FOUND"
    status, message = await refused("colours", image_input(grpcaio, [b"<html>not an image"]))
    assert status == "StatusCode.INVALID_ARGUMENT", message
    status, message = await refused(
        "colours", pixels_input(grpcaio, np.zeros((1, 8, 8, 3), np.uint8))
    )
    assert status == "StatusCode.INVALID_ARGUMENT" and "[N, 32, 32, 3]" in message
    wrong_name = grpcaio.InferInput("INPUT0", [1], "BYTES")
    wrong_name.set_data_from_numpy(np.array([solid_png((1, 1, 1))], dtype=np.object_))
    status, message = await refused("colours", wrong_name)
    assert status == "StatusCode.INVALID_ARGUMENT" and "IMAGE" in message
    floats = grpcaio.InferInput("PIXELS", [1, 32, 32, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.float32))
    assert (await refused("colours", floats))[0] == "StatusCode.INVALID_ARGUMENT"


async def test_limits(repo: Path, start_app: Any) -> None:
    publish(repo, "colours", 1)
    small = await start_app(repo, grpc_port=0, max_files_per_request=2, max_upload_bytes=64 * 1024)
    await small.wait_ready()
    client = grpcaio.InferenceServerClient(url(small))
    try:
        images = [solid_png((9, 9, 9))] * 3
        with pytest.raises(InferenceServerException) as err:
            await client.infer("colours", [image_input(grpcaio, images)])
        assert status_of(err) == "StatusCode.INVALID_ARGUMENT"
        assert "at most 2" in str(err.value.message())
        # Over max_upload_bytes: gRPC's own limit on what it receives refuses the message.
        noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
        with pytest.raises(InferenceServerException) as err:
            await client.infer("colours", [image_input(grpcaio, [encode(noise, "PNG")])])
        assert status_of(err) == "StatusCode.RESOURCE_EXHAUSTED"
        assert await client.is_server_live()
    finally:
        await client.close()


async def test_overload_is_unavailable_with_retry_after(repo: Path, start_app: Any) -> None:
    publish(repo, "colours", 1, config={"max_queue_size": 1})
    roost = await start_app(repo, grpc_port=0)
    await roost.wait_ready()
    batcher = roost.app.state.roost.registry.get("colours").batcher
    with batcher.reserve(1):  # the whole queue, as an image still being decoded holds it
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw_infer(roost, bytes_request([solid_png((5, 240, 5))]))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ("retry-after", "1") in tuple(err.value.trailing_metadata() or ())
    assert (await raw_infer(roost, bytes_request([solid_png((5, 240, 5))]))).outputs


async def test_requests_are_counted_as_v1_counts_them(roost: Any, aio: Any) -> None:
    png = image_input(grpcaio, [solid_png((5, 240, 5))])
    await aio.infer("colours", [png])
    await aio.infer("colours", [png], model_version="1")
    for model, tensor in [("nope", png), ("colours", image_input(grpcaio, [b"not an image"]))]:
        with pytest.raises(InferenceServerException):
            await aio.infer(model, [tensor])
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_requests_total", model="colours", version="1", code="200") == 2
    # The code label is the HTTP status the same request gets over REST (/v2 says 400 for
    # a file that is no image), so one alert covers every protocol.
    assert sample(text, "roost_requests_total", model="colours", version="1", code="400") == 1
    assert sample(text, "roost_requests_total", model="_unknown", version="", code="404") == 1
    assert sample(text, "roost_request_duration_seconds_count", model="colours") == 3
    assert sample(text, "roost_request_body_bytes_total", model="colours") > 0
    assert sample(text, "roost_images_total", model="colours", version="1") == 2


async def test_api_keys_guard_models_and_inference(repo: Path, start_app: Any) -> None:
    publish(repo, "colours", 1)
    roost = await start_app(repo, grpc_port=0, api_keys=["s3cret"])
    await roost.wait_ready()
    client = grpcaio.InferenceServerClient(url(roost))
    png = image_input(grpcaio, [solid_png((5, 240, 5))])
    try:
        assert await client.is_server_live() and await client.is_server_ready()  # open, as /readyz
        for headers in [None, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}]:
            with pytest.raises(InferenceServerException) as err:
                await client.infer("colours", [png], headers=headers)
            assert status_of(err) == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as err:
            await client.get_model_metadata("colours")
        assert status_of(err) == "StatusCode.UNAUTHENTICATED"
        for headers in [{"x-api-key": "s3cret"}, {"authorization": "Bearer s3cret"}]:
            result = await client.infer("colours", [png], headers=headers)
            assert result.as_numpy("PROBABILITIES").shape == (1, 3)
    finally:
        await client.close()


async def test_imagenet_photos_answer_as_v1(repo: Path, start_app: Any) -> None:
    shutil.copytree(REPO_ROOT / "model_repo" / "imagenet", repo / "imagenet")
    roost = await start_app(repo, grpc_port=0)
    await roost.wait_ready()
    images = [encode(PHOTOS["chelsea"], "JPEG"), encode(PHOTOS["coffee"], "JPEG")]
    expected = await v1_top_k(roost, images, 5, "imagenet")
    client = grpcclient.InferenceServerClient(url(roost))
    try:
        wanted = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=5)
        result = await call(
            client.infer, "imagenet", [image_input(grpcclient, images)], outputs=[wanted]
        )
    finally:
        client.close()
    classes = parse_classes(result.as_numpy("PROBABILITIES"))
    assert [[(i, label) for _, i, label in row] for row in classes] == [
        [(i, label) for _, i, label in row] for row in expected
    ]
    for row, predictions in zip(classes, expected, strict=True):
        assert [float(s) for s, _, _ in row] == pytest.approx(
            [s for s, _, _ in predictions], abs=1e-6
        )
    assert classes[0][0][2] in {"tiger cat", "tabby", "Egyptian cat"}
    assert classes[1][0][2] == "espresso"


# --- lifecycle -----------------------------------------------------------------------------


async def test_shutdown_lets_in_flight_requests_finish(repo: Path) -> None:
    publish(repo, "colours", 1)
    app = create_app(ServiceSettings(model_repo=repo, poll_interval_s=0, grpc_port=0))
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
            started.set()
            await stop.wait()

    running = asyncio.create_task(lifespan())
    await started.wait()
    target = url(type("Roost", (), {"app": app}))
    client = grpcaio.InferenceServerClient(target)
    for _ in range(6000):  # a hang guard only
        if await client.is_server_ready():
            break
        await asyncio.sleep(0.01)

    # Hold the one batch in the session until the test lets it go.
    batcher = app.state.roost.registry.get("colours").batcher
    run_batch, entered, release = batcher._run_batch, threading.Event(), threading.Event()

    def held(batch: np.ndarray, alone: bool, deadline: float) -> np.ndarray:
        entered.set()
        release.wait(60)
        return run_batch(batch, alone, deadline)

    batcher._run_batch = held
    in_flight = asyncio.create_task(
        client.infer("colours", [image_input(grpcaio, [solid_png((5, 5, 240))])])
    )
    assert await asyncio.to_thread(entered.wait, 60)
    stop.set()  # the lifespan shuts down: gRPC first, with a grace period

    async def refused() -> bool:
        fresh = grpcaio.InferenceServerClient(target)
        try:
            await fresh.is_server_live()
            return False
        except InferenceServerException:
            return True
        finally:
            await fresh.close()

    for _ in range(6000):  # new calls are refused while the one in flight is still running
        if await refused():
            break
        await asyncio.sleep(0.01)
    assert await refused()
    # Seen once in CI (2026-11-26): the call in flight had already failed here; say with what.
    assert not in_flight.done(), f"the call in flight ended early: {in_flight.exception()!r}"
    release.set()
    result = await in_flight
    assert int(np.argmax(result.as_numpy("PROBABILITIES")[0])) == 2  # blue
    await running
    await client.close()


@pytest.mark.parametrize("missing", ["grpc", "tritonclient.grpc"])
async def test_missing_grpc_extra_fails_startup_clearly(
    repo: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # `import` of it now raises ImportError
    app = create_app(ServiceSettings(model_repo=repo, poll_interval_s=0, grpc_port=0))
    with pytest.raises(GrpcExtraMissing) as err:
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
            pass
    assert 'pip install "roost[grpc]"' in str(err.value)
    assert "ROOST_GRPC_PORT" in str(err.value)


async def test_a_port_in_use_fails_startup(repo: Path, roost: Any) -> None:
    """Not shared silently: gRPC's default SO_REUSEPORT is turned off."""
    port = roost.app.state.grpc.port
    app = create_app(ServiceSettings(model_repo=repo, poll_interval_s=0, grpc_port=port))
    with pytest.raises(RuntimeError, match=f"gRPC cannot listen on 127.0.0.1:{port}"):
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
            pass


@pytest.mark.slow
def test_python_m_service_serves_grpc(repo: Path, start_server: Any) -> None:
    """The real command line: ROOST_GRPC_PORT from the environment, the port in the log."""
    publish(repo, "colours", 1)
    server = start_server(repo, ROOST_GRPC_PORT="0")
    server.wait_ready()
    match = re.search(r"Open Inference Protocol over gRPC on 127\.0\.0\.1:(\d+)", server.log())
    assert match, server.log()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{match.group(1)}")
    try:
        assert client.is_server_ready()
        wanted = grpcclient.InferRequestedOutput("PROBABILITIES", class_count=1)
        images = [solid_png((240, 5, 5)), encode(PHOTOS["chelsea"], "JPEG")]
        result = client.infer("colours", [image_input(grpcclient, images)], outputs=[wanted])
        assert [row[0][2] for row in parse_classes(result.as_numpy("PROBABILITIES"))] == [
            "red",
            "red",  # an orange cat
        ]
    finally:
        client.close()
    server.stop()
    assert "gRPC server on 127.0.0.1" in server.log() and "stopped" in server.log()


# --- the codec and the error mapping, without a server -------------------------------------


def test_bytes_elements_round_trip() -> None:
    elements = [b"", b"a", b"\x00" * 5, bytes(range(256))]
    assert oip.unpack_bytes(oip.pack_bytes(elements), 4, "x") == elements
    with pytest.raises(InvalidParameter, match="4-byte element length"):
        oip.unpack_bytes(b"\x01\x00", 1, "x")


def test_error_codes_follow_triton() -> None:
    assert {s: grpc_code_name(s) for s in (400, 404, 413, 415, 422, 503, 504)} == {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        413: "INVALID_ARGUMENT",
        415: "INVALID_ARGUMENT",
        422: "INVALID_ARGUMENT",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
    assert grpc_code_name(418) == "INVALID_ARGUMENT"  # a client's mistake is never INTERNAL
    assert grpc_code_name(500) == "INTERNAL"


async def test_a_version_label_and_the_traffic_split_reach_grpc(repo: Path, start_app: Any) -> None:
    labels = {"stable": 1, "canary": 2}
    publish(repo, "colours", 1, config={"version_labels": labels, "traffic": {"canary": 1}})
    publish(repo, "colours", 2)
    roost = await start_app(repo, grpc_port=0)
    await roost.wait_ready()
    client = grpcaio.InferenceServerClient(url(roost))
    try:
        png = image_input(grpcaio, [solid_png((5, 240, 5))])
        pinned = await client.infer("colours", [png], model_version="stable")
        split = await client.infer("colours", [png])  # the split sends everything to canary
        assert pinned.get_response().model_version == "1"
        assert split.get_response().model_version == "2"
        assert await client.is_model_ready("colours", "canary")
        with pytest.raises(InferenceServerException, match="no version labelled 'blue'"):
            await client.infer("colours", [png], model_version="blue")
    finally:
        await client.close()
