"""Hostile and odd input against a real server: documented 4xx or a correct 200, never a 5xx."""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Iterator

import httpx
import hypothesis
import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from modelkit import publish
from PIL import Image
from schemathesis.checks import not_a_server_error
from servers import RoostServer
from skimage import data as photos

from service.app import create_app

pytestmark = pytest.mark.slow

LIMIT_BYTES = 2 * 1024 * 1024


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    root = tmp_path_factory.mktemp("hostile")
    repo = root / "model_repo"
    publish(repo, "colours", 1)
    server = RoostServer(
        repo,
        root / "server.log",
        ROOST_MAX_UPLOAD_BYTES=str(LIMIT_BYTES),
        ROOST_MAX_FILES_PER_REQUEST="4",
        ROOST_MAX_IMAGE_PIXELS=str(50_000_000),
    )
    server.wait_ready()
    yield server
    server.stop()


def post_image(
    server: RoostServer, data: bytes, content_type: str = "image/png", path: str = "/v1/classify"
) -> httpx.Response:
    return server.client.post(path, content=data, headers={"content-type": content_type})


CAT = Image.fromarray(photos.chelsea())
REDDISH = Image.new("RGB", (64, 48), (230, 40, 30))


def bomb_png() -> bytes:
    return encode(Image.new("1", (40_000, 40_000)), "PNG")  # ~200 KB, 1.6 G pixels declared


def palette_png() -> bytes:
    return encode(REDDISH.convert("P", palette=Image.Palette.ADAPTIVE), "PNG")


def sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.full((20, 20), 50000, dtype=np.uint16)), "PNG")


def animated(fmt: str) -> bytes:
    frames = [REDDISH, Image.new("RGB", (64, 48), (10, 10, 240))]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(REDDISH, "JPEG", exif=exif)


REFUSED = {
    "empty body": (b"", "image/png", 415),
    "text as image": (b"hello, I am text", "image/jpeg", 415),
    "HTML as image": (b"<!doctype html><html><body>x</body></html>", "image/png", 415),
    "JSON as image": (b'{"image": "data:..."}', "image/png", 415),
    "SVG as image": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
        "image/svg+xml",
        415,
    ),
    "truncated JPEG": (encode(CAT, "JPEG")[:3000], "image/jpeg", 415),
    "corrupt JPEG body": (encode(CAT, "JPEG")[:600] + bytes(range(256)) * 40, "image/jpeg", 415),
    "truncated PNG": (encode(CAT, "PNG")[:1000], "image/png", 415),
    "decompression bomb (40000x40000 PNG)": (bomb_png(), "image/png", 413),
    "upload over the byte limit": (b"\xff" * (LIMIT_BYTES + 1), "image/jpeg", 413),
    "text/plain body": (b"abc", "text/plain", 415),
    "no content type": (b"abc", "", 415),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_hostile_bodies_get_documented_4xx(server: RoostServer, case: str, reliability) -> None:  # type: ignore[no-untyped-def]
    data, content_type, status = REFUSED[case]
    r = post_image(server, data, content_type)
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == {"code", "message", "request_id"}
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text and "/tmp" not in r.text
    assert server.client.get("/healthz").status_code == 200
    reliability.add("hostile input", case, 1, f"{status} {r.json()['error']['code']}")


VALID = {
    "RGBA PNG": encode(REDDISH.convert("RGBA"), "PNG"),
    "palette PNG": palette_png(),
    "grayscale PNG": encode(REDDISH.convert("L"), "PNG"),
    "16-bit PNG": sixteen_bit_png(),
    "CMYK JPEG": encode(REDDISH.convert("CMYK"), "JPEG"),
    "progressive JPEG": encode(REDDISH, "JPEG", progressive=True),
    "EXIF-rotated JPEG": exif_rotated(),
    "animated GIF": animated("GIF"),
    "animated WebP": animated("WEBP"),
    "BMP": encode(REDDISH, "BMP"),
    "1x1 PNG": encode(Image.new("RGB", (1, 1), (250, 0, 0)), "PNG"),
    "2000x20 PNG": encode(Image.new("RGB", (2000, 20), (250, 0, 0)), "PNG"),
}


@pytest.mark.parametrize("case", list(VALID))
def test_valid_oddities_are_classified(server: RoostServer, case: str, reliability) -> None:  # type: ignore[no-untyped-def]
    r = post_image(server, VALID[case], "application/octet-stream")
    assert r.status_code == 200, r.text
    predictions = r.json()["results"][0]["predictions"]
    top = predictions[0]["label"]
    if case == "16-bit PNG":  # grey: the three channels, and so the three scores, are equal
        assert max(p["score"] for p in predictions) - min(p["score"] for p in predictions) < 1e-6
    else:
        assert top == "red"
    reliability.add("valid oddity", case, 1, f"200, top-1 {top}")


def multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "roost-test-boundary"
    body = b""
    for field, filename, data in parts:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_multipart_oddities(server: RoostServer, reliability) -> None:  # type: ignore[no-untyped-def]
    png = encode(REDDISH, "PNG")
    body, ctype = multipart([("file", f"{i}.png", png) for i in range(5)])
    r = post_image(server, body, ctype)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    reliability.add(
        "hostile input", "too many files in one request (5, limit 4)", 1, "413 payload_too_large"
    )

    for name in ["../../etc/passwd", "x" * 900 + ".png", "Zürich 鳥 🐦.png", 'a"b\\c.png']:
        body, ctype = multipart([("file", name, png)])
        r = post_image(server, body, ctype)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["filename"] == name
        assert r.json()["results"][0]["predictions"][0]["label"] == "red"
    reliability.add(
        "hostile input",
        "hostile filenames (../, 900 chars, non-ASCII, quotes)",
        4,
        "200, name echoed as data only",
    )
    body, ctype = multipart([("file", "x" * 20000 + ".png", png)])
    r = post_image(server, body, ctype)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    reliability.add(
        "hostile input",
        "20,000-character filename (multipart header over the parser's limit)",
        1,
        "400 bad_request",
    )

    broken = [
        (b"--nope\r\n\r\n", "multipart/form-data"),  # no boundary parameter
        (b"garbage without boundaries", "multipart/form-data; boundary=xyz"),
        (
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\nabc',
            "multipart/form-data; boundary=xyz",
        ),
    ]
    for data, ctype in broken:
        r = post_image(server, data, ctype)
        assert r.status_code in (400, 415), r.text
    reliability.add(
        "hostile input",
        "malformed multipart (no boundary, garbage, unterminated part)",
        len(broken),
        "400 or 415",
    )
    assert server.client.get("/healthz").status_code == 200


def test_hostile_model_names_and_parameters(server: RoostServer, reliability) -> None:  # type: ignore[no-untyped-def]
    png = encode(REDDISH, "PNG")
    paths = {
        "/v1/classify?model=../../etc/passwd": 404,
        "/v1/classify?model=" + "m" * 5000: 422,
        "/v1/classify?model=m%C3%BCnchen%F0%9F%90%A6": 404,
        "/v1/models/..%2F..%2Fetc/classify": 404,
        "/v1/models/" + "m" * 500 + "/classify": 422,
        "/v1/classify?model=colours&top_k=-1": 422,
        "/v1/classify?model=colours&top_k=99999999999999999999": 422,
        "/v1/classify?model=colours&top_k=abc": 422,
        "/v1/classify?model=colours&version=0": 422,
        "/v1/classify?model=colours&version=-3": 422,
        "/v1/classify?model=colours&version=1.5": 422,
        "/v1/classify?model=colours&version=99": 404,
        "/v1/models/colours/versions/A.b/classify": 422,
        "/v1/classify?model=colours&version=canary": 404,  # a label config.json lacks
    }
    for path, status in paths.items():
        r = post_image(server, png, "image/png", path)
        assert r.status_code == status, (path, r.text)
        assert "error" in r.json()
    reliability.add(
        "hostile input",
        "hostile model names and bad top_k/version values",
        len(paths),
        "404 or 422 as documented",
    )


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
@hypothesis.given(
    data=st.one_of(
        st.binary(max_size=4096),
        st.builds(
            lambda cut, junk: encode(REDDISH, "PNG")[:cut] + junk,
            st.integers(0, 400),
            st.binary(max_size=256),
        ),
        st.builds(
            lambda pos, byte: _flip(encode(REDDISH, "JPEG"), pos, byte),
            st.integers(0, 2000),
            st.integers(0, 255),
        ),
    )
)
def test_byte_fuzz_of_the_image_path(server: RoostServer, data: bytes) -> None:
    r = post_image(server, data, "image/jpeg")
    assert r.status_code in (200, 413, 415), (r.status_code, r.text)


def _flip(data: bytes, pos: int, byte: int) -> bytes:
    pos %= len(data)
    return data[:pos] + bytes([byte]) + data[pos + 1 :]


def test_byte_fuzz_left_the_server_healthy(server: RoostServer, reliability) -> None:  # type: ignore[no-untyped-def]
    assert server.client.get("/healthz").status_code == 200
    assert post_image(server, encode(REDDISH, "PNG")).status_code == 200
    assert server.process.poll() is None
    reliability.add(
        "fuzzing",
        "hypothesis byte fuzz of the image path (random, truncated, bit-flipped)",
        150,
        "no 5xx, server alive",
    )


# The schema the server publishes at /openapi.json, built from the app without starting it.
schema = schemathesis.openapi.from_dict(create_app().openapi())


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_openapi_fuzz_never_gives_a_server_error(case, server: RoostServer) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=server.url, checks=[not_a_server_error])


def test_openapi_fuzz_left_the_server_healthy(server: RoostServer, reliability) -> None:  # type: ignore[no-untyped-def]
    operations = sum(len(methods) for methods in create_app().openapi()["paths"].values())
    assert server.client.get("/healthz").status_code == 200
    assert server.process.poll() is None
    reliability.add(
        "fuzzing",
        "schemathesis on the service's own OpenAPI schema",
        f"up to 40 per operation, {operations} operations",
        "no 5xx, server alive",
    )


def _urllib_post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    """POST the whole body at once, no `Expect: 100-continue`, as `urllib` and `requests` do."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers={"content-type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_refusals_reach_a_client_that_sends_the_whole_body(
    server: RoostServer, reliability
) -> None:  # type: ignore[no-untyped-def]
    too_big = bytes(64 * 1024 * 1024)
    status, body = _urllib_post(f"{server.url}/v1/classify?model=colours", too_big)
    assert status == 413 and body["error"]["code"] == "payload_too_large"  # type: ignore[index]
    reliability.add(
        "hostile input",
        "64 MiB body sent whole by urllib (no Expect: 100-continue)",
        1,
        "413 JSON read by the client, no reset",
    )
    status, body = _urllib_post(f"{server.url}/v1/classify?model=nope", bytes(LIMIT_BYTES - 1))
    assert status == 404 and body["error"]["code"] == "model_not_found"  # type: ignore[index]
    reliability.add(
        "hostile input",
        "2 MiB body sent whole to an unknown model",
        1,
        "404 JSON read by the client, no reset",
    )
    assert server.client.get("/healthz").status_code == 200


# --- the same through the Open Inference Protocol's REST API (/v2) ---------------------------

V2_INFER = "/v2/models/colours/infer"
V2_HEADER = "Inference-Header-Content-Length"


def v2_post(server: RoostServer, images: list[bytes], form: str = "binary") -> httpx.Response:
    """`images` as the IMAGE input: binary tensor data (length-prefixed), or JSON base64."""
    if form == "binary":
        raw = b"".join(struct.pack("<I", len(im)) + im for im in images)
        request = {
            "inputs": [
                {
                    "name": "IMAGE",
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
        header = json.dumps(request).encode()
        return server.client.post(
            V2_INFER, content=header + raw, headers={V2_HEADER: str(len(header))}
        )
    request = {
        "inputs": [
            {
                "name": "IMAGE",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(im).decode() for im in images],
            }
        ],
        "parameters": {"content_type": "base64"},
    }
    return server.client.post(V2_INFER, json=request)


@pytest.mark.parametrize("case", list(REFUSED))
def test_hostile_bodies_as_v2_tensors_get_4xx(server: RoostServer, case: str, reliability) -> None:  # type: ignore[no-untyped-def]
    data, _, v1_status = REFUSED[case]
    # The v2 protocol answers 400 for input it cannot use where /v1 says 415; 413 stays 413.
    status = 413 if v1_status == 413 else 400
    for form in ("binary", "JSON base64"):
        r = v2_post(server, [data], form)
        assert r.status_code == status, (form, r.text)
        assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
        assert "Traceback" not in r.text and "/tmp" not in r.text
    assert server.client.get("/v2/health/live").status_code == 200
    reliability.add(
        "hostile input, v2", f"{case}, as an IMAGE tensor (binary and JSON base64)", 2, str(status)
    )


@pytest.mark.parametrize("case", list(VALID))
def test_valid_oddities_through_v2(server: RoostServer, case: str, reliability) -> None:  # type: ignore[no-untyped-def]
    r = v2_post(server, [VALID[case]])
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert output["shape"] == [1, 3]
    scores = output["data"]
    if case == "16-bit PNG":
        assert max(scores) - min(scores) < 1e-6
    else:
        assert scores.index(max(scores)) == 0  # red
    top = ["red", "green", "blue"][scores.index(max(scores))]
    reliability.add("valid oddity, v2", case, 1, f"200, top-1 {top}")


def _v2_frame(header: bytes, length: int | None, tail: bytes) -> tuple[bytes, dict[str, str]]:
    headers = {} if length is None else {V2_HEADER: str(length)}
    return header + tail, headers


_GOOD_HEADER = (
    b'{"inputs":[{"name":"IMAGE","datatype":"BYTES","shape":[1],'
    b'"parameters":{"binary_data_size":%d}}]}'
)


@hypothesis.settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
@hypothesis.given(
    frame=st.one_of(
        # A valid header, then random binary data and a random declared size or header length.
        st.builds(
            lambda size, tail, shift: _v2_frame(
                _GOOD_HEADER % size, len(_GOOD_HEADER % size) + shift, tail
            ),
            st.integers(0, 600),
            st.binary(max_size=600),
            st.integers(-5, 5),
        ),
        # Random bytes where the JSON should be, with or without a header length.
        st.builds(
            _v2_frame,
            st.binary(max_size=400),
            st.one_of(st.none(), st.integers(-3, 500)),
            st.binary(max_size=64),
        ),
        # JSON of the right shape with random values.
        st.builds(
            lambda value: _v2_frame(json.dumps({"inputs": [value]}).encode(), None, b""),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(
                        st.sampled_from(
                            [
                                "name",
                                "datatype",
                                "shape",
                                "data",
                                "parameters",
                                "binary_data_size",
                                "content_type",
                            ]
                        ),
                        inner,
                        max_size=5,
                    )
                ),
                max_leaves=20,
            ),
        ),
    )
)
def test_byte_fuzz_of_the_v2_framing(
    server: RoostServer, frame: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = frame
    r = server.client.post(V2_INFER, content=body, headers=headers)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text)
    assert set(r.json()) == {"error"} or r.status_code == 200


v2_infer_schema = schema.include(path_regex="^/v2/")


@v2_infer_schema.parametrize()
@hypothesis.settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_openapi_fuzz_of_v2_never_gives_a_server_error(case, server: RoostServer) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=server.url, checks=[not_a_server_error])


def test_v2_fuzz_left_the_server_healthy(server: RoostServer, reliability) -> None:  # type: ignore[no-untyped-def]
    assert server.client.get("/v2/health/ready").status_code == 200
    assert v2_post(server, [encode(REDDISH, "PNG")]).status_code == 200
    assert server.process.poll() is None
    operations = sum(
        len(m) for p, m in create_app().openapi()["paths"].items() if p.startswith("/v2")
    )
    reliability.add(
        "fuzzing",
        "hypothesis fuzz of the v2 body framing (header length, binary sizes, JSON values)",
        150,
        "no 5xx, server alive",
    )
    reliability.add(
        "fuzzing",
        "schemathesis on the /v2 operations of the OpenAPI schema",
        f"up to 150 per operation, {operations} operations",
        "no 5xx, server alive",
    )
