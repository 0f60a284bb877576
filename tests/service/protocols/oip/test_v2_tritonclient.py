"""Real clients against a real server: tritonclient's HTTP clients (sync and asyncio) on /v2.

`python -m service` runs on 127.0.0.1 (tests/servers.py, as the `start_server` fixture runs it;
one server per module here, and one on the shipped repository for the ImageNet check), and
tritonclient talks to it as it talks to Triton. Every answer is checked against /v1's answer
for the same images from the same server.

What tritonclient does with BYTES in JSON (`set_data_from_numpy(..., binary_data=False)`): it
turns each element into a UTF-8 string in the client, so image bytes fail there, before
anything is sent. It can still send the JSON form: base64 text as the elements and
`parameters={"content_type": "base64"}` on the request (it cannot set input parameters).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from modelkit import publish, solid_png
from PIL import Image
from servers import RoostServer
from skimage import data as photos
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow  # a real server in a subprocess (RoostServer)

REPO_ROOT = Path(__file__).resolve().parents[4]


def encode(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, quality=90)
    return buffer.getvalue()


PHOTOS = {"chelsea": photos.chelsea(), "coffee": photos.coffee(), "astronaut": photos.astronaut()}
RED, BLUE = solid_png((240, 10, 10)), solid_png((10, 10, 240))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    root = tmp_path_factory.mktemp("tritonclient")
    publish(root / "model_repo", "colours", 1)
    server = RoostServer(
        root / "model_repo", root / "server.log", ROOST_MAX_UPLOAD_BYTES=str(8 * 1024 * 1024)
    )
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def client(server: RoostServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    yield client
    client.close()


def v1_top_k(
    server: RoostServer, images: list[bytes], k: int, model: str = "colours"
) -> list[list[dict]]:  # type: ignore[type-arg]
    files = [("file", (f"{i}.img", im, "application/octet-stream")) for i, im in enumerate(images)]
    r = server.client.post(f"/v1/classify?model={model}&top_k={k}", files=files)
    assert r.status_code == 200, r.text
    return [result["predictions"] for result in r.json()["results"]]


def v1_scores(server: RoostServer, images: list[bytes], classes: int = 3) -> np.ndarray:
    scores = np.zeros((len(images), classes), dtype=np.float32)
    for row, predictions in enumerate(v1_top_k(server, images, classes)):
        for p in predictions:
            scores[row, p["index"]] = p["score"]
    return scores


def triton_strings(predictions: list[list[dict]]) -> list[list[str]]:  # type: ignore[type-arg]
    """/v1's top-k as the classification extension writes it: "score:index:label", %f."""
    return [[f"{p['score']:f}:{p['index']}:{p['label']}" for p in row] for row in predictions]


def check_strings(got: np.ndarray, want: list[list[str]]) -> None:
    """Same classes in the same order; scores equal to the printed precision."""
    rows = [[s.decode() if isinstance(s, bytes) else s for s in row] for row in got.tolist()]
    assert [[s.split(":", 1)[1] for s in row] for row in rows] == [
        [s.split(":", 1)[1] for s in row] for row in want
    ]
    for got_row, want_row in zip(rows, want, strict=True):
        for g, w in zip(got_row, want_row, strict=True):
            assert abs(float(g.split(":")[0]) - float(w.split(":")[0])) <= 2e-6, (g, w)


def image_input(images: list[bytes], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return tensor


def pixels_input(pixels: np.ndarray, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput("PIXELS", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    return tensor


# --- tritonclient.http (sync, geventhttpclient) ----------------------------------------------


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("colours") and client.is_model_ready("colours", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "roost" and "binary_tensor_data" in meta["extensions"]
    assert "classification" in meta["extensions"]
    model = client.get_model_metadata("colours")
    assert model == client.get_model_metadata("colours", "1")
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert {t["name"]: (t["datatype"], t["shape"]) for t in model["inputs"]} == {
        "IMAGE": ("BYTES", [-1]),
        "PIXELS": ("UINT8", [-1, 32, 32, 3]),
    }
    assert model["outputs"] == [{"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 3]}]
    index = client.get_model_repository_index()
    assert index == [{"name": "colours", "version": "1", "state": "READY", "reason": ""}]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_bytes_images_in_binary(
    server: RoostServer, client: triton.InferenceServerClient, fmt: str
) -> None:
    images = [encode(a, fmt) for a in PHOTOS.values()] + [RED]
    result = client.infer("colours", [image_input(images)], request_id="r-1")
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_version"] == "1"
    # No outputs named: tritonclient asks for every output in binary (binary_data_output).
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 4 * 3 * 4
    np.testing.assert_allclose(
        result.as_numpy("PROBABILITIES"), v1_scores(server, images), rtol=1e-5, atol=1e-7
    )
    # The same asked for as JSON.
    wanted = [triton.InferRequestedOutput("PROBABILITIES", binary_data=False)]
    as_json = client.infer("colours", [image_input(images)], outputs=wanted)
    assert "data" in as_json.get_response()["outputs"][0]
    np.testing.assert_allclose(
        as_json.as_numpy("PROBABILITIES"), result.as_numpy("PROBABILITIES"), rtol=1e-6
    )


def test_bytes_in_json(server: RoostServer, client: triton.InferenceServerClient) -> None:
    jpeg = encode(PHOTOS["coffee"], "JPEG")
    # tritonclient makes JSON BYTES elements UTF-8 strings: image bytes fail in the client.
    with pytest.raises(InferenceServerException, match="UTF-8"):
        image_input([jpeg], binary=False)
    # It can send base64 text, marked as such on the request.
    text = image_input([base64.b64encode(jpeg), base64.b64encode(BLUE)], binary=False)
    result = client.infer("colours", [text], parameters={"content_type": "base64"})
    np.testing.assert_allclose(
        result.as_numpy("PROBABILITIES"), v1_scores(server, [jpeg, BLUE]), rtol=1e-5, atol=1e-7
    )
    # Unmarked, the server cannot take text for an image file: 400, saying why.
    with pytest.raises(InferenceServerException) as refused:
        client.infer("colours", [text])
    assert refused.value.status() == "400" and "content_type" in refused.value.message()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "JSON"])
def test_uint8_pixels(
    server: RoostServer, client: triton.InferenceServerClient, binary: bool
) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    pixels[0, ..., 0] = 255
    result = client.infer("colours", [pixels_input(pixels, binary)])
    expected = v1_scores(server, [encode(p, "PNG") for p in pixels])  # 32x32: no resize
    np.testing.assert_allclose(result.as_numpy("PROBABILITIES"), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "JSON"])
def test_classification(
    server: RoostServer, client: triton.InferenceServerClient, binary: bool
) -> None:
    images = [encode(PHOTOS["chelsea"], "JPEG"), RED, BLUE]
    wanted = [triton.InferRequestedOutput("PROBABILITIES", binary_data=binary, class_count=2)]
    result = client.infer("colours", [image_input(images)], outputs=wanted)
    strings = result.as_numpy("PROBABILITIES")
    assert strings.shape == (3, 2)
    assert result.get_output("PROBABILITIES")["datatype"] == "BYTES"
    check_strings(strings, triton_strings(v1_top_k(server, images, 2)))
    assert strings[1][0] in (b"1.000000:0:red", "1.000000:0:red")


def test_errors(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [image_input([RED])])
    assert unknown.value.status() == "404" and unknown.value.message() == "no model named 'nope'"
    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("nope")
    assert metadata.value.status() == "404"
    with pytest.raises(InferenceServerException) as version:
        client.infer("colours", [image_input([RED])], model_version="5")
    assert version.value.status() == "404"
    with pytest.raises(InferenceServerException) as not_an_image:
        client.infer("colours", [image_input([b"%PDF-1.4 not an image"])])
    assert not_an_image.value.status() == "400"
    with pytest.raises(InferenceServerException) as output:
        client.infer("colours", [image_input([RED])], outputs=[triton.InferRequestedOutput("X")])
    assert output.value.status() == "400" and "PROBABILITIES" in output.value.message()
    with pytest.raises(InferenceServerException) as load:
        client.load_model("colours")
    assert load.value.status() == "400" and "not supported" in load.value.message()
    assert client.is_server_live()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    server: RoostServer, client: triton.InferenceServerClient, algorithm: str
) -> None:
    images = [encode(PHOTOS["coffee"], "JPEG"), RED]
    result = client.infer("colours", [image_input(images)], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(
        result.as_numpy("PROBABILITIES"), v1_scores(server, images), rtol=1e-5, atol=1e-7
    )


# --- tritonclient.http.aio (aiohttp) -----------------------------------------------------------


async def test_asyncio_client(server: RoostServer) -> None:
    client = triton_aio.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert await client.is_server_live() and await client.is_server_ready()
        assert await client.is_model_ready("colours")
        assert (await client.get_server_metadata())["name"] == "roost"
        assert (await client.get_model_metadata("colours"))["name"] == "colours"

        images = [encode(PHOTOS["astronaut"], "PNG"), encode(PHOTOS["coffee"], "JPEG"), BLUE]
        result = await client.infer("colours", [image_input(images)])
        np.testing.assert_allclose(
            result.as_numpy("PROBABILITIES"), v1_scores(server, images), rtol=1e-5, atol=1e-7
        )
        wanted = [triton.InferRequestedOutput("PROBABILITIES", class_count=3)]
        result = await client.infer("colours", [image_input(images)], outputs=wanted)
        check_strings(result.as_numpy("PROBABILITIES"), triton_strings(v1_top_k(server, images, 3)))

        text = image_input([base64.b64encode(im) for im in images], binary=False)
        result = await client.infer("colours", [text], parameters={"content_type": "base64"})
        np.testing.assert_allclose(
            result.as_numpy("PROBABILITIES"), v1_scores(server, images), rtol=1e-5, atol=1e-7
        )

        pixels = np.zeros((2, 32, 32, 3), dtype=np.uint8)
        pixels[1, ..., 1] = 200
        for binary in (True, False):
            result = await client.infer("colours", [pixels_input(pixels, binary)])
            assert result.as_numpy("PROBABILITIES").argmax(axis=1).tolist()[1] == 1

        with pytest.raises(InferenceServerException) as unknown:
            await client.infer("nope", [image_input([RED])])
        assert unknown.value.status() == "404" and "nope" in unknown.value.message()
        with pytest.raises(InferenceServerException) as not_an_image:
            await client.infer("colours", [image_input([b"GIF89a broken"])])
        assert not_an_image.value.status() == "400"
    finally:
        await client.close()


# --- the shipped ImageNet model, real photos -----------------------------------------------------


def test_shipped_imagenet_model_answers_as_v1(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(REPO_ROOT / "model_repo")
    server.wait_ready()
    images = [encode(photos.chelsea(), "JPEG"), encode(photos.coffee(), "JPEG")]
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.get_model_metadata("imagenet")["inputs"][1]["shape"] == [-1, 224, 224, 3]
        wanted = [triton.InferRequestedOutput("PROBABILITIES", class_count=5)]
        result = client.infer("imagenet", [image_input(images)], outputs=wanted)
        expected = v1_top_k(server, images, 5, model="imagenet")
        check_strings(result.as_numpy("PROBABILITIES"), triton_strings(expected))
        top = [row[0].decode().split(":", 2)[2] for row in result.as_numpy("PROBABILITIES")]
        assert top[0] in {"Egyptian cat", "tiger cat", "tabby"} and top[1] == "espresso"
        probabilities = client.infer("imagenet", [image_input(images)]).as_numpy("PROBABILITIES")
        assert probabilities.shape == (2, 1000)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    finally:
        client.close()
