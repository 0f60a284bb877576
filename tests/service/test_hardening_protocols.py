"""Open Inference Protocol bodies cost what they declare (issue #25: finding 2, and finding 11's
multi-member gzip).

Every input's shape is checked against the version first (N at most the images per request,
pixels at the model's size), then its data is counted against that shape before any element of
it is built: JSON `data` arrays, binary tensor data, base64, gRPC typed `contents` and
`raw_input_contents`. Bodies that take long to parse are parsed off the event loop; compressed
bodies are inflated no further than the limit, every gzip member of them.

In-process tests (`start_app`, and gRPC on a real port) pin the answers, with the Python memory
a refusal allocates (tracemalloc's peak) as the proof that nothing was built; the `slow` tests
run `python -m service` and measure what the finding measured: /healthz latency while the bombs
arrive, and the server's RSS.
"""

from __future__ import annotations

import base64
import gzip
import json
import statistics
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from modelkit import publish, solid_png
from servers import RoostServer, free_port
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from bench.harness import resident_bytes
from service.errors import InvalidParameter, PayloadTooLarge
from service.protocols.oip import core as oip

HEADER = "Inference-Header-Content-Length"
INFER = "/v2/models/colours/infer"
LIMIT = 4 * 1024 * 1024
PIXELS_SHAPE = [1, 32, 32, 3]  # publish()'s colour model is 32 x 32
PIXELS_COUNT = 32 * 32 * 3
PNG = solid_png((240, 10, 10))

# Every datatype of the protocol: its numpy type (binary data, raw_input_contents), a JSON value,
# and its typed field in gRPC's InferTensorContents (FP16 has none: it travels raw only).
DATATYPES: dict[str, tuple[Any, Any, str | None]] = {
    "BOOL": (np.bool_, True, "bool_contents"),
    "UINT8": (np.uint8, 200, "uint_contents"),
    "UINT16": (np.uint16, 200, "uint_contents"),
    "UINT32": (np.uint32, 200, "uint_contents"),
    "UINT64": (np.uint64, 200, "uint64_contents"),
    "INT8": (np.int8, 100, "int_contents"),
    "INT16": (np.int16, 200, "int_contents"),
    "INT32": (np.int32, 200, "int_contents"),
    "INT64": (np.int64, 200, "int64_contents"),
    "FP16": (np.float16, 0.5, None),
    "FP32": (np.float32, 0.5, "fp32_contents"),
    "FP64": (np.float64, 0.5, "fp64_contents"),
    "BYTES": (None, PNG, "bytes_contents"),
}
ACCEPTED = {"UINT8": "PIXELS", "BYTES": "IMAGE"}
"""The datatypes a Roost model takes, and the input that takes each."""


def target(datatype: str) -> tuple[str, list[int], int]:
    """The input a tensor of `datatype` is sent to (name, shape, element count): BYTES as
    IMAGE [1], every other datatype as PIXELS [1, 32, 32, 3]."""
    if datatype == "BYTES":
        return "IMAGE", [1], 1
    return "PIXELS", PIXELS_SHAPE, PIXELS_COUNT


def refusal(datatype: str) -> str:
    """What the answer says when `datatype` is not the input's."""
    return f"is BYTES, not {datatype!r}" if datatype == "BYTES" else f"is UINT8, not {datatype!r}"


def pack(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def raw_data(datatype: str, n: int) -> bytes:
    numpy_type, value, _ = DATATYPES[datatype]
    if numpy_type is None:
        return pack([value] * n)
    return np.full(n, value, dtype=numpy_type).tobytes()


def json_request(datatype: str, n: int) -> dict[str, Any]:
    """httpx keyword arguments: a JSON request whose input holds `n` elements of `datatype`."""
    name, shape, _ = target(datatype)
    value = DATATYPES[datatype][1]
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if datatype == "BYTES":
        tensor["data"] = [base64.b64encode(value).decode()] * n
        tensor["parameters"] = {"content_type": "base64"}
    else:
        tensor["data"] = [value] * n
    return {"content": json.dumps({"inputs": [tensor]}).encode()}


def binary_request(datatype: str, n: int) -> dict[str, Any]:
    """httpx keyword arguments: the JSON header, then `n` elements of binary tensor data."""
    name, shape, _ = target(datatype)
    return binary_body(name, datatype, shape, raw_data(datatype, n))


def binary_body(name: str, datatype: str, shape: list[int], raw: bytes) -> dict[str, Any]:
    tensor = {
        "name": name,
        "datatype": datatype,
        "shape": shape,
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    return {"content": header + raw, "headers": {HEADER: str(len(header))}}


@pytest.fixture
async def roost(repo: Path, start_app: Any) -> Any:
    publish(repo, "colours", 1)
    app = await start_app(repo, grpc_port=0, max_upload_bytes=LIMIT, max_files_per_request=4)
    await app.wait_ready()
    return app


async def python_peak(work: Callable[[], Any]) -> tuple[Any, int]:
    """`await work()`, and the most Python memory allocated meanwhile above what was before
    (tracemalloc: every thread, the decode pool's included)."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = await work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


# --- every datatype over REST: JSON and binary -------------------------------------------------


@pytest.mark.parametrize("form", ["JSON", "binary"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
async def test_every_datatype_over_rest(roost: Any, datatype: str, form: str) -> None:
    """The right count of the input's own datatype is answered; any other datatype, and any
    other count, is a 400 that says why."""
    build = json_request if form == "JSON" else binary_request
    _, _, count = target(datatype)
    for n in (count, count - 1, count + 1, 10 * count):
        r = await roost.client.post(INFER, **build(datatype, n))
        if datatype in ACCEPTED and n == count:
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["shape"] == [1, 3]
            continue
        assert r.status_code == 400, (n, r.text)
        error = r.json()["error"]
        if datatype in ACCEPTED:
            assert str(count) in error and "UTF-8" not in error, error
        else:
            assert refusal(datatype) in error, error


# Bodies whose data is far more than their shape declares: each is answered 400 having built
# none of it (a million elements built as Python objects would take tens of MB).
FAR_MORE = {
    "JSON numbers, nested": lambda: {
        "content": b'{"inputs":[{"name":"PIXELS","datatype":"UINT8","shape":[1,32,32,3],'
        b'"data":[' + b"[0]," * 999_999 + b"[0]]}]}"
    },
    "JSON numbers, flat": lambda: {
        "content": b'{"inputs":[{"name":"PIXELS","datatype":"UINT8","shape":[1,32,32,3],'
        b'"data":[' + b"0," * 1_999_999 + b"0]}]}"
    },
    "JSON base64 strings": lambda: {
        "content": b'{"inputs":[{"name":"IMAGE","datatype":"BYTES","shape":[1],'
        b'"parameters":{"content_type":"base64"},"data":[' + b'"",' * 1_000_000 + b'""]}]}'
    },
    "JSON FP32 numbers": lambda: {
        "content": b'{"inputs":[{"name":"PIXELS","datatype":"FP32","shape":[1,32,32,3],'
        b'"data":[' + b"0.5," * 999_999 + b"0.5]}]}"
    },
    "JSON numbers under an ignored key": lambda: {
        "content": b'{"inputs":[{"name":"PIXELS","datatype":"UINT8","shape":[1,32,32,3],'
        b'"data":[0]}],"junk":[' + b"[0]," * 999_999 + b"[0]]}"
    },
    "JSON numbers as the shape": lambda: {
        "content": b'{"inputs":[{"name":"PIXELS","datatype":"UINT8","shape":['
        + b"1," * 999_999
        + b'1],"data":[0]}]}'
    },
    "binary: 1 M empty BYTES elements": lambda: binary_body(
        "IMAGE", "BYTES", [1], pack([b""] * 1_000_000)
    ),
}


@pytest.mark.parametrize("case", list(FAR_MORE))
async def test_far_more_data_than_declared_is_refused_before_it_is_built(
    roost: Any, case: str, reliability: Any
) -> None:
    kwargs = FAR_MORE[case]()
    assert len(kwargs["content"]) < LIMIT
    r, peak = await python_peak(lambda: roost.client.post(INFER, **kwargs))
    assert r.status_code == 400, r.text
    # The body itself is held a few times over (the client's, the server's, a count's copy),
    # never its elements.
    assert peak < 4 * len(kwargs["content"]) + 4 * 2**20, (case, peak)
    assert (await roost.client.get("/healthz")).status_code == 200
    reliability.add(
        "hostile input, v2",
        f"{case}: ~1 M elements for a shape of at most 3072, {len(kwargs['content']) >> 20} MB",
        1,
        f"400, peak Python memory {peak / 2**20:.0f} MiB",
    )


# --- compression: the limit holds on what inflates, every gzip member is read -----------------


def members(data: bytes, *cuts: int) -> bytes:
    """`data` as several gzip members one after the other, cut at `cuts`."""
    edges = [0, *cuts, len(data)]
    return b"".join(gzip.compress(data[a:b]) for a, b in zip(edges, edges[1:], strict=False))


async def test_a_multi_member_gzip_body_decodes_whole(roost: Any) -> None:
    """As `gzip -c a b` or a streaming compressor writes it: each member inflates to a part."""
    plain = binary_request("BYTES", 1)
    expected = await roost.client.post(INFER, **plain)
    assert expected.status_code == 200
    content = plain["content"]
    for cuts in [(10,), (len(content) // 3, len(content) // 2), (len(content) - 1,)]:
        headers = {**plain["headers"], "content-encoding": "gzip"}
        r = await roost.client.post(INFER, content=members(content, *cuts), headers=headers)
        assert r.status_code == 200, (cuts, r.text)
        assert r.json()["outputs"] == expected.json()["outputs"]
    json_body = json_request("UINT8", PIXELS_COUNT)["content"]
    r = await roost.client.post(
        INFER, content=members(json_body, 100), headers={"content-encoding": "gzip"}
    )
    assert r.status_code == 200, r.text


def bomb_json(elements: int) -> bytes:
    return gzip.compress(
        b'{"inputs":[{"name":"PIXELS","datatype":"UINT8","shape":[1,32,32,3],"data":['
        + b"[0]," * (elements - 1)
        + b"[0]]}]}",
        9,
    )


BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "PIXELS",
                "datatype": "UINT8",
                "shape": PIXELS_SHAPE,
                "parameters": {"binary_data_size": PIXELS_COUNT},
            }
        ]
    }
).encode()

COMPRESSED: dict[str, tuple[Callable[[], tuple[bytes, dict[str, str]]], int, str]] = {
    "JSON past the limit once inflated": (
        lambda: (bomb_json(1_200_000), {"content-encoding": "gzip"}),
        413,
        "limit once decompressed",
    ),
    "JSON under the limit, far more elements than its shape": (
        lambda: (bomb_json(1_000_000), {"content-encoding": "gzip"}),
        400,
        "3072",
    ),
    "binary past the limit once inflated": (
        lambda: (
            gzip.compress(BINARY_HEADER + bytes(LIMIT)),
            {"content-encoding": "gzip", HEADER: str(len(BINARY_HEADER))},
        ),
        413,
        "limit once decompressed",
    ),
    "binary under the limit, more than binary_data_size": (
        lambda: (
            gzip.compress(BINARY_HEADER + bytes(LIMIT // 2)),
            {"content-encoding": "gzip", HEADER: str(len(BINARY_HEADER))},
        ),
        400,
        "more than 3072 bytes after the JSON",
    ),
    "binary_data_size other than the shape's": (
        lambda: (
            gzip.compress(BINARY_HEADER.replace(b"3072", b"3000000") + bytes(3_000_000)),
            {"content-encoding": "gzip", HEADER: str(len(BINARY_HEADER) + 3)},
        ),
        400,
        "3072 UINT8 values but binary_data_size is 3000000",
    ),
    "gzip members past the limit together": (
        lambda: (
            gzip.compress(bytes(LIMIT // 2)) * 3,
            {"content-encoding": "gzip", HEADER: "10"},
        ),
        413,
        "limit once decompressed",
    ),
    "too many gzip members": (
        lambda: (gzip.compress(b"") * 1025, {"content-encoding": "gzip"}),
        400,
        "more than 1024 gzip members",
    ),
    "garbage after a gzip member": (
        lambda: (
            gzip.compress(json_request("UINT8", PIXELS_COUNT)["content"]) + b"garbage",
            {"content-encoding": "gzip"},
        ),
        400,
        "not valid gzip",
    ),
    "zeros after a gzip member": (
        lambda: (
            gzip.compress(json_request("UINT8", PIXELS_COUNT)["content"]) + bytes(8),
            {"content-encoding": "gzip"},
        ),
        400,
        "not valid gzip",
    ),
    "data after a deflate stream": (
        lambda: (
            zlib.compress(json_request("UINT8", PIXELS_COUNT)["content"]) * 2,
            {"content-encoding": "deflate"},
        ),
        400,
        "after the end of its deflate stream",
    ),
}


@pytest.mark.parametrize("case", list(COMPRESSED))
async def test_compressed_bodies_are_bounded(roost: Any, case: str, reliability: Any) -> None:
    build, status, words = COMPRESSED[case]
    content, headers = build()
    r, peak = await python_peak(lambda: roost.client.post(INFER, content=content, headers=headers))
    assert r.status_code == status, r.text
    assert words in r.json()["error"], r.text
    # Inflated only as far as needed: the JSON, or the declared binary, then 64 KiB at a time.
    assert peak < 2 * LIMIT + 4 * 2**20, (case, peak)
    reliability.add(
        "hostile input, v2",
        f"compressed body: {case} ({len(content)} bytes sent)",
        1,
        f"{status}, peak Python memory {peak / 2**20:.0f} MiB",
    )


# --- gRPC: every datatype, typed and raw; the wire form counted before protobuf parses it -----


def url(roost: Any) -> str:
    return f"127.0.0.1:{roost.app.state.grpc.port}"


async def grpc_infer(roost: Any, request: Any) -> Any:
    async with grpc.aio.insecure_channel(url(roost)) as channel:
        return await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)


async def grpc_refusal(roost: Any, request: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await grpc_infer(roost, request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return str(err.value.details())


def grpc_request(datatype: str, n: int, form: str) -> Any:
    name, shape, _ = target(datatype)
    request = pb.ModelInferRequest(model_name="colours")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
    if form == "raw":
        request.raw_input_contents.append(raw_data(datatype, n))
    else:
        numpy_type, value, field = DATATYPES[datatype]
        assert field is not None
        getattr(tensor.contents, field).extend([value] * n)
    return request


GRPC_FORMS = [
    (datatype, form)
    for datatype in DATATYPES
    for form in ("typed", "raw")
    if form == "raw" or DATATYPES[datatype][2] is not None
]


@pytest.mark.parametrize(("datatype", "form"), GRPC_FORMS)
async def test_every_datatype_over_grpc(roost: Any, datatype: str, form: str) -> None:
    _, _, count = target(datatype)
    for n in (count, count - 1, count + 1, 10 * count):
        request = grpc_request(datatype, n, form)
        if datatype in ACCEPTED and n == count:
            response = await grpc_infer(roost, request)
            assert list(response.outputs[0].shape) == [1, 3]
            continue
        message = await grpc_refusal(roost, request)
        if datatype in ACCEPTED:
            assert str(count) in message, message
        else:
            assert refusal(datatype) in message, message


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    """One protobuf field: its key, then a varint or a length-delimited payload."""
    if isinstance(payload, int):
        return varint(number << 3 | wire) + varint(payload)
    return varint(number << 3 | wire) + varint(len(payload)) + payload


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def unpacked_pixels(values: int) -> bytes:
    """A ModelInferRequest for PIXELS [values / 3072, 32, 32, 3] whose uint_contents are written
    one tag per value (valid protobuf, though no proto3 serializer writes it)."""
    shape = [values // PIXELS_COUNT, 32, 32, 3]
    contents = b"".join(field(4, 0, 7) for _ in range(values))
    tensor = (
        field(1, 2, b"PIXELS")
        + field(2, 2, b"UINT8")
        + field(3, 2, b"".join(varint(d) for d in shape))
        + field(5, 2, contents)
    )
    return field(1, 2, b"colours") + field(5, 2, tensor)


async def send_serialized(roost: Any, data: bytes) -> Any:
    async with grpc.aio.insecure_channel(url(roost)) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        return await call(data)


async def test_grpc_wire_form_limits(roost: Any, reliability: Any) -> None:
    # Unpacked numbers are read, up to a bound; past it the message says to pack them.
    response = await send_serialized(roost, unpacked_pixels(PIXELS_COUNT))
    assert list(response.outputs[0].shape) == [1, 3]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send_serialized(roost, unpacked_pixels(2 * PIXELS_COUNT))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "packed" in str(err.value.details())

    def with_fields(change: Callable[[Any], None]) -> Any:
        request = grpc_request("BYTES", 1, "raw")
        change(request)
        return request

    def many_output_parameters(request: Any) -> None:
        output = request.outputs.add(name="PROBABILITIES")
        for i in range(300):
            output.parameters[f"p{i}"].int64_param = i

    def many_request_parameters(request: Any) -> None:
        for i in range(300):
            request.parameters[f"p{i}"].int64_param = i

    refused: dict[str, tuple[Callable[[Any], None], str]] = {
        "300 raw_input_contents": (
            lambda r: r.raw_input_contents.extend([b""] * 299),
            "more than 256 fields",
        ),
        "300 request parameters": (many_request_parameters, "more than 256 fields"),
        "300 output parameters": (many_output_parameters, "more than 256 fields"),
        "a shape of 9 dimensions": (
            lambda r: r.inputs[0].shape.extend([1] * 8),
            "more than 8 dimensions",
        ),
        "a 2 KB model name": (lambda r: setattr(r, "model_name", "m" * 2000), "over 1024"),
        "two inputs": (lambda r: r.inputs.add(name="PIXELS"), "exactly one input"),
    }
    for case, (change, words) in refused.items():
        assert words in await grpc_refusal(roost, with_fields(change)), case
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await send_serialized(roost, b"\x0a\xff\xff\xff\xff\x0f not protobuf")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reliability.add(
        "hostile input, gRPC",
        "wire-form bounds: 300 repeated fields, 9-dimension shape, 2 KB name, unpacked "
        "numbers past 4096, bytes that are no message",
        len(refused) + 2,
        "INVALID_ARGUMENT before the message is parsed",
    )


@pytest.mark.parametrize("case", ["bytes_contents", "uint_contents"])
async def test_grpc_far_more_contents_than_declared(
    roost: Any, case: str, reliability: Any
) -> None:
    """2 M empty bytes for IMAGE [1], 1 M packed numbers for PIXELS [1, 32, 32, 3]."""
    if case == "bytes_contents":
        request = grpc_request("BYTES", 0, "typed")
        request.inputs[0].contents.bytes_contents.extend([b""] * 2_000_000)
    else:
        request = grpc_request("UINT8", 0, "typed")
        request.inputs[0].contents.uint_contents.extend([1] * 1_000_000)
    size = request.ByteSize()
    message, peak = await python_peak(lambda: grpc_refusal(roost, request))
    assert "contents hold more" in message, message
    assert peak < 2 * size + 4 * 2**20, (case, peak)
    reliability.add(
        "hostile input, gRPC",
        f"{case} far more than the shape declares ({size >> 20} MB message)",
        1,
        f"INVALID_ARGUMENT before parsing, peak Python memory {peak / 2**20:.0f} MiB",
    )


def test_input_limits_bound_every_shape() -> None:
    limits = oip.InputLimits(max_images=4, image_size=(32, 24))
    assert oip.check_input("PIXELS", "UINT8", [4, 32, 24, 3], (), limits) == 4 * 32 * 24 * 3
    assert oip.check_input("IMAGE", "BYTES", [4], (), limits) == 4
    for shape in ([1, 24, 32, 3], [1, 32, 24, 4], [1, 32, 24], [1, 2**40, 2**40, 3]):
        with pytest.raises(InvalidParameter, match=r"\[N, 32, 24, 3\]"):
            oip.check_input("PIXELS", "UINT8", shape, (), limits)
    with pytest.raises(PayloadTooLarge, match="at most 4"):
        oip.check_input("IMAGE", "BYTES", [2**40], (), limits)


# --- a real server: the event loop and the RSS while the bombs arrive -------------------------


class Probes:
    """GET /healthz every 50 ms on its own connection while the block runs; `.latencies`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.latencies.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(timeout=60)


@pytest.fixture
def bombed(tmp_path: Path) -> Iterator[tuple[RoostServer, int]]:
    """A real server at the default limits (20 MB bodies, 64 images), gRPC on too."""
    repo = tmp_path / "repo"
    publish(repo, "colours", 1)
    grpc_port = free_port()
    server = RoostServer(repo, tmp_path / "server.log", ROOST_GRPC_PORT=str(grpc_port))
    server.wait_ready()
    yield server, grpc_port
    server.stop()


@pytest.mark.slow
def test_rest_gzip_bombs_neither_stall_the_loop_nor_hold_memory(
    bombed: tuple[RoostServer, int], reliability: Any
) -> None:
    """The finding's body: 18 KB of gzip, 18.8 MB of `[0],` once inflated, under PIXELS."""
    server, _ = bombed
    pid = server.process.pid
    bomb = bomb_json(4_700_000)
    valid = binary_request("BYTES", 1)
    before = resident_bytes(pid) / 2**20
    statuses, valid_statuses = [], []
    with Probes(server.url) as probes:
        for _ in range(8):
            r = server.client.post(INFER, content=bomb, headers={"content-encoding": "gzip"})
            statuses.append(r.status_code)
            valid_statuses.append(server.client.post(INFER, **valid).status_code)
    grown, peak = (
        resident_bytes(pid) / 2**20 - before,
        resident_bytes(pid, "VmHWM") / 2**20 - before,
    )
    assert set(statuses) == {400} and set(valid_statuses) == {200}
    assert len(probes.latencies) >= 10
    assert max(probes.latencies) < 1.0, sorted(probes.latencies)[-5:]
    assert grown < 100 and peak < 300, (grown, peak)
    reliability.add(
        "hostile input, v2",
        f"8 gzip bombs ({len(bomb) >> 10} KB, 18.8 MB of JSON `[0],` under PIXELS) with /healthz "
        "probed every 50 ms and a valid request after each",
        8,
        f"400 each, valid 200, slowest probe {max(probes.latencies) * 1000:.0f} ms "
        f"(median {statistics.median(probes.latencies) * 1000:.0f}), RSS +{grown:.0f} MiB, "
        f"peak +{peak:.0f} MiB",
    )


@pytest.mark.slow
def test_grpc_bytes_contents_bombs_neither_stall_the_loop_nor_hold_memory(
    bombed: tuple[RoostServer, int], reliability: Any
) -> None:
    """The finding's message: 9 M empty bytes_contents (17 KB with gRPC's gzip) for IMAGE [1]."""
    server, grpc_port = bombed
    pid = server.process.pid
    request = grpc_request("BYTES", 0, "typed")
    request.inputs[0].contents.bytes_contents.extend([b""] * 9_000_000)
    valid = grpc_request("BYTES", 1, "raw")
    channel = grpc.insecure_channel(
        f"127.0.0.1:{grpc_port}", options=[("grpc.max_send_message_length", -1)]
    )
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    before = resident_bytes(pid) / 2**20
    codes = []
    try:
        with Probes(server.url) as probes:
            for _ in range(6):
                try:
                    stub.ModelInfer(request, compression=grpc.Compression.Gzip, timeout=60)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
                assert list(stub.ModelInfer(valid, timeout=60).outputs[0].shape) == [1, 3]
    finally:
        channel.close()
    grown = resident_bytes(pid) / 2**20 - before
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 6
    assert len(probes.latencies) >= 10
    assert max(probes.latencies) < 1.0, sorted(probes.latencies)[-5:]
    # Receiving any 18 MB message costs gRPC and the allocator some memory that stays (as much
    # for one sent to an unknown model); building its 9 M elements cost 400 MB per message.
    assert grown < 600, grown
    reliability.add(
        "hostile input, gRPC",
        "6 messages of 9 M empty bytes_contents (17 KB gzip) for IMAGE [1], /healthz probed "
        "every 50 ms, a valid request after each",
        6,
        f"INVALID_ARGUMENT each, valid answered, slowest probe "
        f"{max(probes.latencies) * 1000:.0f} ms, RSS +{grown:.0f} MiB",
    )
