"""The Open Inference Protocol's REST API (/v2), protocol details, the app run in-process.

Bodies are built by hand here, byte by byte, so these tests pin the wire format itself (KServe
`required_api.md`, Triton's binary tensor data and classification extensions); what real
clients (tritonclient's sync and asyncio HTTP clients) do against a real server is in
test_v2_tritonclient.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modelkit import COLOUR_LABELS, publish, solid_png
from PIL import Image
from servers import sample
from skimage import data as photos
from starlette.types import Message

HEADER = "Inference-Header-Content-Length"
INFER = "/v2/models/colours/infer"
LIMIT = 4 * 1024 * 1024


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, quality=90)
    return buffer.getvalue()


PHOTOS = {"chelsea": photos.chelsea(), "coffee": photos.coffee(), "astronaut": photos.astronaut()}


def pack(elements: list[bytes]) -> bytes:
    """BYTES binary data: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def unpack(raw: bytes) -> list[bytes]:
    out, offset = [], 0
    while offset < len(raw):
        (n,) = struct.unpack_from("<I", raw, offset)
        out.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return out


def binary_body(request: dict[str, Any], data: bytes) -> dict[str, Any]:
    """httpx keyword arguments: the JSON request, then `data`, with the header length set."""
    header = json.dumps(request).encode()
    return {"content": header + data, "headers": {HEADER: str(len(header))}}


def image_request(images: list[bytes], **extra: Any) -> dict[str, Any]:
    """`images` as one BYTES binary tensor, `extra` merged into the JSON request."""
    raw = pack(images)
    tensor = {
        "name": "IMAGE",
        "datatype": "BYTES",
        "shape": [len(images)],
        "parameters": {"binary_data_size": len(raw)},
    }
    return binary_body({"inputs": [tensor], **extra}, raw)


def split(r: httpx.Response) -> tuple[dict[str, Any], bytes]:
    """A response's JSON object and the binary data after it."""
    length = r.headers.get(HEADER)
    if length is None:
        assert r.headers["content-type"] == "application/json"
        return r.json(), b""
    assert r.headers["content-type"] == "application/octet-stream"
    return json.loads(r.content[: int(length)]), r.content[int(length) :]


def probabilities(r: httpx.Response) -> np.ndarray:
    """The PROBABILITIES output of a 200 response, JSON or binary."""
    assert r.status_code == 200, r.text
    body, binary = split(r)
    (output,) = body["outputs"]
    assert output["name"] == "PROBABILITIES" and output["datatype"] == "FP32"
    if "parameters" in output:
        values = np.frombuffer(binary, dtype="<f4")
        assert output["parameters"]["binary_data_size"] == len(binary)
    else:
        values = np.array(output["data"], dtype=np.float32)
    return values.reshape(output["shape"])


async def v1_scores(
    client: httpx.AsyncClient, images: list[bytes], model: str = "colours"
) -> np.ndarray:
    """/v1's answer for `images` as a [N, C] array, from its top-k with k = C."""
    files = [("file", (f"{i}.img", im, "application/octet-stream")) for i, im in enumerate(images)]
    r = await client.post(f"/v1/classify?model={model}&top_k={len(COLOUR_LABELS)}", files=files)
    assert r.status_code == 200, r.text
    scores = np.zeros((len(images), len(COLOUR_LABELS)), dtype=np.float32)
    for row, result in enumerate(r.json()["results"]):
        for p in result["predictions"]:
            scores[row, p["index"]] = p["score"]
    return scores


@pytest.fixture
async def roost(repo: Path, start_app):  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, config={"version_policy": "all"})
    publish(repo, "colours", 2, size=(24, 24))
    app = await start_app(
        repo, max_upload_bytes=LIMIT, max_files_per_request=4, max_image_pixels=1_000_000
    )
    await app.wait_ready()
    return app


# --- health and metadata -----------------------------------------------------------------------


async def test_health_and_server_metadata(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    app = await start_app(repo)  # an empty repository: live, never ready
    c = app.client
    assert (await c.get("/v2/health/live")).json() == {"live": True}
    not_ready = await c.get("/v2/health/ready")
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False}
    meta = (await c.get("/v2")).json()
    assert meta == {
        "name": "roost",
        "version": app.app.version,
        "extensions": ["binary_tensor_data", "classification", "model_repository"],
    }
    publish(repo, "colours", 1)
    assert (await app.reload()).status_code == 200
    ready = await c.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}


async def test_model_metadata_and_readiness(roost) -> None:  # type: ignore[no-untyped-def]
    c = roost.client
    meta = (await c.get("/v2/models/colours")).json()
    assert meta == {
        "name": "colours",
        "versions": ["1", "2"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "IMAGE", "datatype": "BYTES", "shape": [-1]},
            {"name": "PIXELS", "datatype": "UINT8", "shape": [-1, 24, 24, 3]},
        ],
        "outputs": [{"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]}],
    }
    v1 = (await c.get("/v2/models/colours/versions/1")).json()
    assert v1["inputs"][1]["shape"] == [-1, 32, 32, 3] and v1["versions"] == ["1", "2"]
    assert (await c.get("/v2/models/colours/ready")).json() == {"name": "colours", "ready": True}
    ready = await c.get("/v2/models/colours/versions/1/ready")
    assert ready.status_code == 200 and ready.json() == {"name": "colours", "ready": True}
    for path, status in {
        "/v2/models/nope": 404,
        "/v2/models/nope/ready": 404,
        "/v2/models/colours/versions/7": 404,
        "/v2/models/colours/versions/7/ready": 404,
        "/v2/models/colours/versions/A.b": 400,
        "/v2/models/colours/versions/canary": 404,  # a label config.json lacks
        "/v2/models/colours/versions/0/ready": 400,
        "/v2/models/" + "m" * 65: 400,
        "/v2/nothing/here": 404,
    }.items():
        r = await c.get(path)
        assert r.status_code == status, (path, r.text)
        assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
    wrong_method = await c.get(INFER)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert set(wrong_method.json()) == {"error"}


async def test_a_model_with_no_version_serving_is_not_ready(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    publish(repo, "broken", 1, model=b"this is not an ONNX model")
    app = await start_app(repo)
    for _ in range(3000):  # the first load runs in the background
        index = (await app.client.post("/v2/repository/index")).json()
        if {m["name"]: m["state"] for m in index} == {"broken": "UNAVAILABLE", "colours": "READY"}:
            break
        await asyncio.sleep(0.01)
    assert (await app.client.get("/v2/models/colours/ready")).status_code == 200
    r = await app.client.get("/v2/models/broken/ready")
    assert r.status_code == 503 and r.json() == {"name": "broken", "ready": False}
    assert (await app.client.get("/v2/health/ready")).status_code == 503
    metadata = await app.client.get("/v2/models/broken")
    assert metadata.status_code == 503 and "no version ready" in metadata.json()["error"]
    assert metadata.headers["retry-after"]
    failed = await app.client.get("/v2/models/broken/versions/1/ready")
    assert failed.status_code == 404 and "failed" in failed.json()["error"]


async def test_repository_index_and_unsupported_load(roost) -> None:  # type: ignore[no-untyped-def]
    c = roost.client
    index = await c.post("/v2/repository/index")
    assert index.status_code == 200
    assert index.json() == [
        {"name": "colours", "version": "1", "state": "READY", "reason": ""},
        {"name": "colours", "version": "2", "state": "READY", "reason": ""},
    ]
    assert (await c.post("/v2/repository/index", json={"ready": True})).json() == index.json()
    bad = await c.post("/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
    for action in ("load", "unload"):
        r = await c.post(f"/v2/repository/models/colours/{action}")
        assert r.status_code == 400 and "not supported" in r.json()["error"]


# --- infer: input forms, each compared with /v1's answer for the same images --------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_binary_bytes_images_answer_as_v1_does(roost, fmt: str) -> None:  # type: ignore[no-untyped-def]
    images = [encode(a, fmt) for a in PHOTOS.values()][:3]
    expected = await v1_scores(roost.client, images)
    r = await roost.client.post(INFER, **image_request(images, id="photos-1"))
    body, _ = split(r)
    assert body["id"] == "photos-1"
    assert body["model_name"] == "colours" and body["model_version"] == "2"
    assert probabilities(r).shape == (3, 3)
    np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7)


async def test_json_base64_bytes_on_the_input_or_the_request(roost) -> None:  # type: ignore[no-untyped-def]
    images = [encode(PHOTOS["coffee"], "JPEG"), solid_png((10, 200, 10))]
    expected = await v1_scores(roost.client, images)
    text = [base64.b64encode(im).decode() for im in images]
    tensor = {"name": "IMAGE", "datatype": "BYTES", "shape": [2], "data": text}
    on_input = {"inputs": [{**tensor, "parameters": {"content_type": "base64"}}]}
    on_request = {"inputs": [tensor], "parameters": {"content_type": "base64"}}
    for request in (on_input, on_request):
        r = await roost.client.post(INFER, json=request)
        np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7)
    plain = await roost.client.post(INFER, json={"inputs": [tensor]})
    assert plain.status_code == 400
    assert "UTF-8" in plain.json()["error"] and '"content_type": "base64"' in plain.json()["error"]


async def test_uint8_pixels_binary_and_json_flat_or_nested(roost) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)
    pixels[1, ..., 2] = 250  # a blue one
    # At the model's size the /v1 decode (stretch resize) is the identity: the same answer.
    expected = await v1_scores(roost.client, [encode(p, "PNG") for p in pixels])
    tensor = {"name": "PIXELS", "datatype": "UINT8", "shape": [2, 24, 24, 3]}
    raw = pixels.tobytes()
    forms = {
        "binary": binary_body(
            {"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]}, raw
        ),
        "JSON flat": {"json": {"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}},
        "JSON nested": {"json": {"inputs": [{**tensor, "data": pixels.tolist()}]}},
    }
    for form, kwargs in forms.items():
        r = await roost.client.post(INFER, **kwargs)
        np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7, err_msg=form)
    wrong_size = await roost.client.post("/v2/models/colours/versions/1/infer", **forms["binary"])
    assert wrong_size.status_code == 400 and "[N, 32, 32, 3]" in wrong_size.json()["error"]


# --- infer: outputs ----------------------------------------------------------------------------


async def test_outputs_json_binary_and_classification(roost) -> None:  # type: ignore[no-untyped-def]
    c = roost.client
    images = [encode(PHOTOS["chelsea"], "PNG"), solid_png((240, 5, 5))]
    expected = await v1_scores(c, images)

    def asking(*outputs: dict[str, Any], **parameters: Any) -> dict[str, Any]:
        extra: dict[str, Any] = {"outputs": list(outputs)} if outputs else {}
        return image_request(images, **extra, **({"parameters": parameters} if parameters else {}))

    # No outputs named: every output, as JSON.
    r = await c.post(INFER, **asking())
    assert HEADER not in r.headers and "data" in r.json()["outputs"][0]
    # binary_data_output for all, binary_data per output overriding it.
    r = await c.post(INFER, **asking(binary_data_output=True))
    assert r.headers[HEADER] and split(r)[0]["outputs"][0]["parameters"]["binary_data_size"] == 24
    np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7)
    r = await c.post(
        INFER,
        **asking(
            {"name": "PROBABILITIES", "parameters": {"binary_data": False}}, binary_data_output=True
        ),
    )
    assert HEADER not in r.headers
    np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7)

    # Classification: BYTES [N, K] of "score:index:label", best first, as Triton prints them.
    want = [
        [f"{row[i]:f}:{i}:{COLOUR_LABELS[i]}" for i in np.argsort(-row, kind="stable")[:2]]
        for row in expected
    ]
    r = await c.post(
        INFER, **asking({"name": "PROBABILITIES", "parameters": {"classification": 2}})
    )
    (output,) = r.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    got = np.array(output["data"]).reshape(2, 2)
    assert [[s.split(":", 1)[1] for s in row] for row in got] == [
        [s.split(":", 1)[1] for s in row] for row in want
    ]
    for got_row, want_row in zip(got, want, strict=True):
        for g, w in zip(got_row, want_row, strict=True):
            assert abs(float(g.split(":")[0]) - float(w.split(":")[0])) <= 2e-6
    assert got[1][0] == f"{expected[1][0]:f}:0:red"
    r = await c.post(
        INFER,
        **asking(
            {"name": "PROBABILITIES", "parameters": {"classification": 2, "binary_data": True}}
        ),
    )
    body, binary = split(r)
    assert body["outputs"][0]["parameters"]["binary_data_size"] == len(binary)
    assert [e.decode() for e in unpack(binary)] == list(got.ravel())
    # K past the number of classes gives every class (Triton: min(K, C)); 0 is the tensor.
    r = await c.post(
        INFER, **asking({"name": "PROBABILITIES", "parameters": {"classification": 9}})
    )
    assert r.json()["outputs"][0]["shape"] == [2, 3]
    r = await c.post(
        INFER, **asking({"name": "PROBABILITIES", "parameters": {"classification": 0}})
    )
    np.testing.assert_allclose(probabilities(r), expected, rtol=1e-5, atol=1e-7)


# --- errors: the protocol's {"error": "..."}, statuses as Triton's HTTP front end -------------


def _json_image(data: Any, **parameters: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "data": data}
    if parameters:
        tensor["parameters"] = parameters
    return {"json": {"inputs": [tensor]}}


PNG = solid_png((200, 10, 10))
PIXELS = {"name": "PIXELS", "datatype": "UINT8", "shape": [1, 24, 24, 3]}

ERRORS: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "not JSON": (INFER, {"content": b"{nope"}, 400, "invalid inference request"),
    "no inputs": (INFER, {"json": {"inputs": []}}, 400, "exactly one input"),
    "inputs not a list": (INFER, {"json": {"inputs": {"name": "IMAGE"}}}, 400, "inputs"),
    "two inputs": (
        INFER,
        {"json": {"inputs": [_json_image([])["json"]["inputs"][0]] * 2}},
        400,
        "exactly one input",
    ),
    "unknown input": (
        INFER,
        {"json": {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}},
        400,
        "unknown input 'x'",
    ),
    "wrong datatype": (
        INFER,
        {"json": {"inputs": [{"name": "IMAGE", "datatype": "FP32", "shape": [1], "data": [1]}]}},
        400,
        "is BYTES, not 'FP32'",
    ),
    "shape as strings": (
        INFER,
        {"json": {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": ["1"], "data": []}]}},
        400,
        "shape",
    ),
    "BYTES not [N]": (
        INFER,
        {"json": {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1, 1], "data": []}]}},
        400,
        "BYTES [N]",
    ),
    "no data, no binary": (
        INFER,
        {"json": {"inputs": [{"name": "IMAGE", "datatype": "BYTES", "shape": [1]}]}},
        400,
        "neither",
    ),
    "JSON BYTES without base64": (INFER, _json_image(["hello"]), 400, "UTF-8"),
    "bad base64": (INFER, _json_image(["%%%"], content_type="base64"), 400, "base64"),
    "count differs from shape": (
        INFER,
        _json_image(["a", "b"], content_type="base64"),
        400,
        "1 elements",
    ),
    "base64 of text": (
        INFER,
        _json_image([base64.b64encode(b"hello").decode()], content_type="base64"),
        400,
        "",
    ),
    "empty image": (INFER, image_request([b""]), 400, ""),
    "JSON as an image": (INFER, image_request([b'{"image": 1}']), 400, ""),
    "zero images": (INFER, image_request([]), 400, "no images"),
    "binary size past the body": (
        INFER,
        binary_body(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 999},
                    }
                ]
            },
            pack([PNG]),
        ),
        400,
        "binary_data_size 999",
    ),
    "binary without the header": (
        INFER,
        {"content": image_request([PNG])["content"]},
        400,
        HEADER,
    ),
    "header past the body": (
        INFER,
        {"content": b"{}", "headers": {HEADER: "99"}},
        400,
        "only 2 bytes",
    ),
    "header not a number": (INFER, {"content": b"{}", "headers": {HEADER: "ten"}}, 400, ""),
    "header negative": (INFER, {"content": b"{}", "headers": {HEADER: "-1"}}, 400, ""),
    "length prefix cut": (
        INFER,
        binary_body(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 2},
                    }
                ]
            },
            b"\x05\x00",
        ),
        400,
        "4-byte",
    ),
    "element past its data": (
        INFER,
        binary_body(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 6},
                    }
                ]
            },
            b"\xff\x00\x00\x00ab",
        ),
        400,
        "past the end",
    ),
    "more elements than the shape": (
        INFER,
        binary_body(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(pack([PNG, PNG]))},
                    }
                ]
            },
            pack([PNG, PNG]),
        ),
        400,
        "the shape says 1 elements",
    ),
    "data and binary both": (
        INFER,
        binary_body(
            {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["x"],
                        "parameters": {"binary_data_size": len(pack([PNG]))},
                    }
                ]
            },
            pack([PNG]),
        ),
        400,
        "not both",
    ),
    "UINT8 binary of the wrong size": (
        INFER,
        binary_body({"inputs": [{**PIXELS, "parameters": {"binary_data_size": 10}}]}, bytes(10)),
        400,
        "1728 UINT8 values",
    ),
    "UINT8 out of range": (
        INFER,
        {"json": {"inputs": [{**PIXELS, "data": [256] * 1728}]}},
        400,
        "0..255",
    ),
    "UINT8 as floats": (
        INFER,
        {"json": {"inputs": [{**PIXELS, "data": [0.5] * 1728}]}},
        400,
        "0..255",
    ),
    "UINT8 ragged": (
        INFER,
        {"json": {"inputs": [{**PIXELS, "data": [[1, 2], [3]]}]}},
        400,
        "regular",
    ),
    "UINT8 not [N, H, W, 3]": (
        INFER,
        {"json": {"inputs": [{**PIXELS, "shape": [1728], "data": [0] * 1728}]}},
        400,
        "[N, H, W, 3]",
    ),
    "input in shared memory": (
        INFER,
        {
            "json": {
                "inputs": [
                    {
                        "name": "IMAGE",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 9},
                    }
                ]
            }
        },
        400,
        "shared memory",
    ),
    "output to shared memory": (
        INFER,
        image_request(
            [PNG],
            outputs=[{"name": "PROBABILITIES", "parameters": {"shared_memory_region": "r"}}],
        ),
        400,
        "shared memory",
    ),
    "unknown output": (INFER, image_request([PNG], outputs=[{"name": "LOGITS"}]), 400, "LOGITS"),
    "output twice": (
        INFER,
        image_request([PNG], outputs=[{"name": "PROBABILITIES"}] * 2),
        400,
        "twice",
    ),
    "classification negative": (
        INFER,
        image_request(
            [PNG], outputs=[{"name": "PROBABILITIES", "parameters": {"classification": -2}}]
        ),
        400,
        "classification",
    ),
    "binary_data not a boolean": (
        INFER,
        image_request(
            [PNG], outputs=[{"name": "PROBABILITIES", "parameters": {"binary_data": "yes"}}]
        ),
        400,
        "binary_data",
    ),
    "binary_data_output not a boolean": (
        INFER,
        image_request([PNG], parameters={"binary_data_output": 1}),
        400,
        "binary_data_output",
    ),
    "unknown model": ("/v2/models/nope/infer", image_request([PNG]), 404, "no model named 'nope'"),
    "unknown version": (
        "/v2/models/colours/versions/9/infer",
        image_request([PNG]),
        404,
        "no version 9",
    ),
    "version zero": ("/v2/models/colours/versions/0/infer", image_request([PNG]), 400, "version"),
    "too many images": (INFER, image_request([PNG] * 5), 413, "at most 4"),
    "body over the limit": (INFER, image_request([bytes(LIMIT)]), 413, "limit"),
    "too many pixels": (
        INFER,
        image_request([solid_png((1, 2, 3), (1100, 1000))]),
        413,
        "pixels",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_errors_have_the_v2_shape_and_status(roost, case: str) -> None:  # type: ignore[no-untyped-def]
    path, kwargs, status, words = ERRORS[case]
    r = await roost.client.post(path, **kwargs)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
    assert words in r.json()["error"]
    assert "Traceback" not in r.text and "/tmp" not in r.text


async def test_compressed_bodies(roost) -> None:  # type: ignore[no-untyped-def]
    kwargs = image_request([PNG])
    plain = probabilities(await roost.client.post(INFER, **kwargs))
    for encoding, compress in [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # the zlib format, as tritonclient sends "deflate"
    ]:
        headers = {**kwargs["headers"], "content-encoding": encoding}
        r = await roost.client.post(INFER, content=compress(kwargs["content"]), headers=headers)
        np.testing.assert_array_equal(probabilities(r), plain)
    bomb = gzip.compress(bytes(LIMIT + 1))  # about 4 KiB that inflates past the limit
    for content, encoding, status in [
        (bomb, "gzip", 413),
        (b"not gzip at all", "gzip", 400),
        (gzip.compress(kwargs["content"])[:-20], "gzip", 400),
        (kwargs["content"], "br", 400),
    ]:
        headers = {**kwargs["headers"], "content-encoding": encoding}
        r = await roost.client.post(INFER, content=content, headers=headers)
        assert r.status_code == status and set(r.json()) == {"error"}, r.text


async def test_a_server_bug_is_a_logged_500_in_the_v2_shape(
    roost, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    async def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("service.protocols.oip.core.infer", broken)
    r = await roost.client.post(INFER, **image_request([PNG]))
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
    assert "a bug" not in r.text
    assert any(rec.exc_info for rec in caplog.records)
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_requests_total", model="colours", code="500") == 1


async def test_v1_keeps_its_error_shape(roost) -> None:  # type: ignore[no-untyped-def]
    r = await roost.client.post(
        "/v1/classify?model=nope", content=PNG, headers={"content-type": "image/png"}
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = await roost.client.post(
        "/v1/classify?model=colours", content=b"x", headers={"content-type": "image/png"}
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "invalid_image"
    assert (await roost.client.get("/v1/nothing")).json()["error"]["code"] == "not_found"


# --- the shared request flow: admission before the body, deadline, auth, metrics -------------


async def test_overload_is_refused_before_the_body_is_read(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1, config={"max_queue_size": 1})
    app = await start_app(repo)
    await app.wait_ready()
    delivered: list[int] = []

    async def counting(scope, receive, send):  # type: ignore[no-untyped-def]
        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                delivered.append(len(message.get("body", b"")))
            return message

        await app.app(scope, counted_receive, send)

    kwargs = image_request([PNG])
    kwargs["headers"]["expect"] = "100-continue"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=counting), base_url="http://roost"
    ) as client:
        with app.app.state.roost.registry.get("colours").batcher.reserve(1):
            refused = await client.post(INFER, **kwargs)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert set(refused.json()) == {"error"} and "queue is full" in refused.json()["error"]
        assert delivered == []
        text = (await client.get("/metrics")).text
        assert sample(text, "roost_requests_total", model="colours", code="503") == 1
        assert sample(text, "roost_request_body_bytes_total", model="colours") == 0
        accepted = await client.post(INFER, **kwargs)
        assert accepted.status_code == 200
        text = (await client.get("/metrics")).text
        assert sample(text, "roost_request_body_bytes_total", model="colours") == len(
            kwargs["content"]
        )


async def test_past_the_deadline_is_a_504(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    app = await start_app(repo, request_timeout_s=1e-6)
    await app.wait_ready()
    r = await app.client.post(INFER, **image_request([PNG]))
    assert r.status_code == 504 and set(r.json()) == {"error"}
    assert "deadline" in r.json()["error"]


async def test_api_keys_guard_metadata_and_infer_not_health(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    app = await start_app(repo, api_keys=["k1"])
    await app.wait_ready()
    c = app.client
    for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        assert (await c.get(path)).status_code == 200, path
    for method, path in [
        ("GET", "/v2/models/colours"),
        ("GET", "/v2/models/colours/ready"),
        ("POST", "/v2/repository/index"),
        ("POST", INFER),
    ]:
        r = await c.request(method, path, **(image_request([PNG]) if path == INFER else {}))
        assert r.status_code == 401 and set(r.json()) == {"error"}, path
        assert r.headers["www-authenticate"]
    kwargs = image_request([PNG])
    kwargs["headers"]["authorization"] = "Bearer k1"
    assert (await c.post(INFER, **kwargs)).status_code == 200
    assert (await c.get("/v2/models/colours", headers={"x-api-key": "k1"})).status_code == 200


async def test_metrics_count_v2_requests_with_v2_statuses(roost) -> None:  # type: ignore[no-untyped-def]
    c = roost.client
    good = image_request([PNG])
    assert (await c.post(INFER, **good)).status_code == 200
    assert (await c.post(INFER, **image_request([b"not an image"]))).status_code == 400
    assert (await c.post("/v2/models/nope/infer", **good)).status_code == 404
    text = (await c.get("/metrics")).text
    assert sample(text, "roost_requests_total", model="colours", version="2", code="200") == 1
    assert sample(text, "roost_requests_total", model="colours", version="2", code="400") == 1
    assert sample(text, "roost_requests_total", model="colours", code="415") == 0
    assert sample(text, "roost_requests_total", model="_unknown", code="404") == 1
    sent = len(good["content"]) + len(image_request([b"not an image"])["content"])
    assert sample(text, "roost_request_body_bytes_total", model="colours") == sent
    assert sample(text, "roost_images_total", model="colours", version="2") == 1
    assert sample(text, "roost_request_duration_seconds_count", model="colours") == 2


async def test_client_gone_mid_body_is_a_499(roost) -> None:  # type: ignore[no-untyped-def]
    kwargs = image_request([PNG])
    messages = [
        {"type": "http.request", "body": kwargs["content"][:50], "more_body": True},
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
        "path": INFER,
        "raw_path": INFER.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"roost"),
            (HEADER.lower().encode(), kwargs["headers"][HEADER].encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("roost", 80),
    }
    await roost.app(scope, receive, send)
    assert sent[0]["status"] == 499
    text = (await roost.client.get("/metrics")).text
    assert sample(text, "roost_requests_total", model="colours", code="499") == 1


async def test_openapi_describes_the_v2_bodies(roost) -> None:  # type: ignore[no-untyped-def]
    schema = (await roost.client.get("/openapi.json")).json()
    infer = schema["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert HEADER in [p["name"] for p in infer["parameters"]]
    assert "/v2/{path}" not in schema["paths"]
