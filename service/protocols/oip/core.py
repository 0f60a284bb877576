"""The Open Inference Protocol (KServe v2 / Triton) for image classifiers, transport-neutral.

Both front ends, REST (`rest.py`) and gRPC (`grpc_server.py`), describe a
model with `model_metadata`, turn their request's input tensor into an `InputTensor`, call
`infer`, and format the probabilities or the classification extension's strings from here.

A Roost model takes exactly one of two inputs per request:
- `IMAGE`, `BYTES [N]`: encoded image files (JPEG, PNG, ...), decoded as /v1 decodes them;
- `PIXELS`, `UINT8 [N, H, W, 3]`: images already decoded at the model's size.
It has one output, `PROBABILITIES`, `FP32 [N, C]`; asked with the classification extension
(`classification: K`) it becomes `BYTES [N, K]` of Triton's `"score:index:label"` strings.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from roost.contract.labels import Label
from service.errors import InvalidParameter, PayloadTooLarge, ServiceError
from service.repository.registry import ModelRegistry, Route, ServedVersion, VersionState
from service.runtime.scores import Scores
from service.serving.inference import Upload, score_arrays, score_uploads
from service.serving.state import ServiceState
from service.settings import ServiceSettings

ENCODED_INPUT = "IMAGE"
DECODED_INPUT = "PIXELS"
OUTPUT = "PROBABILITIES"
PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "roost"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
INPUT_DATATYPES = {ENCODED_INPUT: "BYTES", DECODED_INPUT: "UINT8"}
SHARED_MEMORY = "shared_memory_region"
"""The parameter of Triton's shared-memory extension, which Roost does not offer."""
_LENGTH = struct.Struct("<I")
_T = TypeVar("_T")


@dataclass(frozen=True)
class InputLimits:
    """What one request may carry to a version, known before any of its data is read: every
    input's shape is checked against these first, so the data that follows is measured against
    a count no larger than the biggest request the version takes."""

    max_images: int
    """N of `IMAGE [N]` and `PIXELS [N, H, W, 3]`: ROOST_MAX_FILES_PER_REQUEST."""
    image_size: tuple[int, int]
    """(H, W) of `PIXELS`: the version's input size."""


def input_limits(served: ServedVersion, settings: ServiceSettings) -> InputLimits:
    return InputLimits(settings.max_files_per_request, served.artifacts.card.image_size)


async def off_loop(
    state: ServiceState, deadline: float, work: Callable[..., _T], *args: object
) -> _T:
    """`work(*args)` on the decode pool, taking its turn in the CPU gate by the request's
    `deadline` as an image decode does: for reading a request body whose parse can take more
    than a fraction of a millisecond, which on the event loop would hold up every other request
    (and the health probes) meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        state.decode_pool, state.cpu_gate.call, 1, deadline, work, *args
    )


@dataclass(frozen=True)
class InputTensor:
    """One input of a request, its data already taken out of JSON, binary or protobuf form."""

    name: str
    datatype: str
    shape: list[int]
    data: list[bytes] | np.ndarray
    """`BYTES`: one bytes object per element; `UINT8`: an array of `shape`."""


def protocol_status(exc: ServiceError) -> int:
    """The HTTP status the protocol gives `exc`: invalid input is 400 (Triton's INVALID_ARG),
    where /v1 says 415 for an image it cannot decode or 422 for a bad parameter."""
    return 400 if exc.status_code in (415, 422) else exc.status_code


def check_one_input(names: list[str]) -> None:
    if len(names) != 1:
        raise InvalidParameter(
            f"send exactly one input, {ENCODED_INPUT} (BYTES, encoded image files) or "
            f"{DECODED_INPUT} (UINT8 [N, H, W, 3]); this request has {names or 'none'}"
        )


def check_input(
    name: str, datatype: str, shape: list[int], parameters: Collection[str], limits: InputLimits
) -> int:
    """Refuse an input this version does not take, before its data is read; returns its
    element count, at most `limits.max_images` images' worth: the data must then hold exactly
    that many elements.

    Raises:
        InvalidParameter: an unknown name, the wrong datatype or rank, a negative dimension,
            pixels not at the version's size, data in shared memory.
        PayloadTooLarge: more than `limits.max_images` images (the /v1 limit on files per
            request).
    """
    what = f"input {name!r}"
    if SHARED_MEMORY in parameters:
        raise InvalidParameter(f"{what}: this server does not take tensors in shared memory")
    expected = INPUT_DATATYPES.get(name)
    if expected is None:
        raise InvalidParameter(
            f"unknown {what}; this model takes {ENCODED_INPUT} (BYTES, encoded images) or "
            f"{DECODED_INPUT} (UINT8 [N, H, W, 3])"
        )
    if datatype != expected:
        raise InvalidParameter(f"{what} is {expected}, not {datatype!r}")
    if any(d < 0 for d in shape):
        raise InvalidParameter(f"{what}: shape {shape} has a negative dimension")
    if expected == "BYTES" and len(shape) != 1:
        raise InvalidParameter(f"{what} is BYTES [N], one image file per element, not {shape}")
    height, width = limits.image_size
    if expected == "UINT8" and (len(shape) != 4 or shape[1:] != [height, width, 3]):
        raise InvalidParameter(
            f"{what} is UINT8 [N, H, W, 3], for this model [N, {height}, {width}, 3], "
            f"not shape {shape}"
        )
    if shape[0] > limits.max_images:
        raise PayloadTooLarge(
            f"too many images ({shape[0]}); at most {limits.max_images} per request"
        )
    return math.prod(shape)


def pack_bytes(elements: Iterable[bytes]) -> bytes:
    """A `BYTES` tensor's wire form: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def unpack_bytes(raw: bytes | memoryview, count: int, what: str) -> list[bytes]:
    """`count` elements in `pack_bytes` form, exactly filling `raw`."""
    elements: list[bytes] = []
    offset, size = 0, len(raw)
    while offset < size and len(elements) < count:
        if offset + _LENGTH.size > size:
            raise InvalidParameter(f"{what}: the binary data ends inside a 4-byte element length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > size:
            raise InvalidParameter(
                f"{what}: element {len(elements)} is {length} bytes, past the end of the data"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(elements) != count or offset != size:
        more = " and more bytes after them" if offset != size else ""
        raise InvalidParameter(
            f"{what}: the shape says {count} elements, the binary data holds "
            f"{len(elements)}{more} (each a 4-byte little-endian length, then the bytes)"
        )
    return elements


def unpack_uint8(raw: bytes | memoryview, shape: list[int], what: str) -> np.ndarray:
    """A raw `UINT8` tensor: one byte per element, row major."""
    count = math.prod(shape)
    if len(raw) != count:
        raise InvalidParameter(
            f"{what}: shape {shape} is {count} UINT8 values but the data has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def tensor_metadata(
    served: ServedVersion,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(inputs, outputs) as the protocol's model metadata lists them; -1 is a variable size."""
    height, width = served.artifacts.card.image_size
    classes = len(served.artifacts.labels)
    inputs: list[dict[str, object]] = [
        {"name": ENCODED_INPUT, "datatype": "BYTES", "shape": [-1]},
        {"name": DECODED_INPUT, "datatype": "UINT8", "shape": [-1, height, width, 3]},
    ]
    outputs: list[dict[str, object]] = [
        {"name": OUTPUT, "datatype": "FP32", "shape": [-1, classes]}
    ]
    return inputs, outputs


def model_metadata(name: str, versions: list[int], served: ServedVersion) -> dict[str, object]:
    inputs, outputs = tensor_metadata(served)
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


async def infer(
    state: ServiceState, route: Route, tensor: InputTensor, deadline: float
) -> list[Scores]:
    """Each image's scores for the request's one input tensor; the caller holds a lease."""
    if tensor.name == ENCODED_INPUT:
        if tensor.datatype != "BYTES" or len(tensor.shape) != 1:
            raise InvalidParameter(f"input {ENCODED_INPUT} is BYTES [N], one image file each")
        assert isinstance(tensor.data, list)
        if len(tensor.data) != tensor.shape[0]:
            raise InvalidParameter(
                f"input {ENCODED_INPUT} has shape {tensor.shape} but {len(tensor.data)} elements"
            )
        if not tensor.data:
            raise InvalidParameter(f"input {ENCODED_INPUT} holds no images")
        return await score_uploads(state, route, [Upload(None, b) for b in tensor.data], deadline)
    if tensor.name == DECODED_INPUT:
        if tensor.datatype != "UINT8":
            raise InvalidParameter(f"input {DECODED_INPUT} is UINT8, not {tensor.datatype}")
        assert isinstance(tensor.data, np.ndarray)
        if len(tensor.data) == 0:
            raise InvalidParameter(f"input {DECODED_INPUT} holds no images")
        return await score_arrays(state, route, tensor.data, deadline)
    raise InvalidParameter(
        f"unknown input {tensor.name!r}; this model takes {ENCODED_INPUT} (BYTES, encoded "
        f"images) or {DECODED_INPUT} (UINT8 [N, H, W, 3])"
    )


def probabilities(scores: Sequence[Scores]) -> np.ndarray:
    """The output tensor: FP32 `[N, C]`."""
    return np.stack([s.probabilities for s in scores]).astype(np.float32, copy=False)


def classification(scores: Sequence[Scores], k: int, labels: list[Label]) -> np.ndarray:
    """The classification extension: `[N, K]` of `b"score:index:label"`, best first.

    The score is printed as Triton prints it (C++ `std::to_string`, six decimals).
    """
    if k < 1:
        raise InvalidParameter(f"classification must be a positive count, not {k}")
    rows = [
        [f"{s.probabilities[i]:f}:{i}:{labels[i].name}".encode() for i in s.ranking[:k]]
        for s in scores
    ]
    return np.array(rows, dtype=np.object_)


# --- the model repository extension ------------------------------------------------------------

TRITON_STATES: dict[VersionState, str] = {
    "ready": "READY",
    "loading": "LOADING",
    "failed": "UNAVAILABLE",
    "unloading": "UNLOADING",
}
"""Triton's model states (its repository index) for the registry's version states."""


@dataclass(frozen=True)
class IndexRow:
    """One row of the repository index, as both transports answer it."""

    name: str
    version: str
    """The version number, or "" for a model that has no version to list (its config failed)."""
    state: str
    reason: str


def repository_index(registry: ModelRegistry, ready_only: bool) -> list[IndexRow]:
    """Every model version the registry knows, in Triton's states, by name then version.

    A version READY takes requests: it serves (a version serving while a replacement loads
    stays READY) and its model has a traffic policy in force; one that serves under a policy
    that was refused is UNAVAILABLE, with the refusal as its reason."""
    rows = []
    for name, entry in sorted(registry.models().items()):
        if entry.config_error and not entry.versions:
            rows.append(IndexRow(name, "", "UNAVAILABLE", entry.config_error))
        for version, record in sorted(entry.versions.items()):
            if record.serving is None:
                row = IndexRow(name, str(version), TRITON_STATES[record.state], record.reason or "")
            elif entry.policy is None:
                reason = f"no traffic policy in force: {entry.policy_error or 'none loaded yet'}"
                row = IndexRow(name, str(version), "UNAVAILABLE", reason)
            else:
                row = IndexRow(name, str(version), "READY", "")
            rows.append(row)
    return [r for r in rows if r.state == "READY"] if ready_only else rows
