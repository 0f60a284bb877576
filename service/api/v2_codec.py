"""Open Inference Protocol REST bodies: the infer request in, the infer response out.

A request body is a JSON object (KServe `required_api.md`, "Inference Request JSON Object"),
optionally followed by binary tensor data (Triton's binary tensor data extension): the
`Inference-Header-Content-Length` header gives the JSON's length, and every input whose
`parameters.binary_data_size` is set takes that many bytes of what follows, in input order.
Binary data is little-endian, row major; a `BYTES` element is a 4-byte little-endian length and
then its bytes.

Input data in JSON: `UINT8` as numbers, flat or nested. `BYTES` elements in JSON are strings,
which the protocol carries as UTF-8 text; image files are not text, so they must be base64
with `parameters.content_type = "base64"` on the input or the request (MLServer's convention;
tritonclient can set it only on the request). A BYTES string without it is refused.

Outputs: the model's `PROBABILITIES` (`FP32 [N, C]`), or with the classification extension
(`parameters.classification = K`) `BYTES [N, K]` of `"score:index:label"`; each as JSON or, per
output `parameters.binary_data` (default: the request's `parameters.binary_data_output`), as
binary data after the JSON. No `outputs` in the request returns every output.

A body may come compressed (`Content-Encoding: gzip` or `deflate`, as Triton takes it and
tritonclient's `request_compression_algorithm` sends it); it is refused past the byte limit
once decompressed as it is when sent plain.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from roost.contract.labels import Label
from service import oip
from service.errors import BadRequest, PayloadTooLarge
from service.postprocess import Scores

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_SIZE = "binary_data_size"
BASE64 = "base64"


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body as sent before its Content-Encoding (gzip or deflate, as tritonclient can send).

    Raises:
        BadRequest: an unknown encoding, or data that does not decompress.
        PayloadTooLarge: more than `limit` bytes once decompressed.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported: send gzip or deflate")
    # gzip: a gzip header; deflate: the zlib format (RFC 9110), which tritonclient sends.
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise BadRequest(f"the body is not valid {encoding} data") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"the body is over the {limit} byte limit once decompressed")
    if not inflater.eof:
        raise BadRequest(f"the body is not valid {encoding} data (it ends too soon)")
    return data


# --- the JSON request, as parsed (unknown fields and parameters are ignored) -----------------

Parameters = dict[str, Any] | None


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters = None
    data: Any = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    name: str
    parameters: Parameters = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    id: str | None = None
    parameters: Parameters = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


@dataclass(frozen=True)
class WantedOutput:
    name: str
    binary: bool
    classification: int
    """K of the classification extension; 0: the tensor itself (Triton ignores 0 too)."""


@dataclass(frozen=True)
class ParsedRequest:
    id: str | None
    tensor: oip.InputTensor
    outputs: list[WantedOutput]


def parse_request(body: bytes, header_length: int | None, max_images: int) -> ParsedRequest:
    """The infer request in `body`; `header_length` is the Inference-Header-Content-Length.

    Raises:
        BadRequest: anything the protocol or this model does not accept.
        PayloadTooLarge: more than `max_images` images (the /v1 limit on files per request).
    """
    if header_length is not None and header_length > len(body):
        raise BadRequest(
            f"{HEADER_LENGTH} is {header_length} but the body has only {len(body)} bytes"
        )
    split = len(body) if header_length is None else header_length
    request = _parse_json(body if header_length is None else body[:split], header_length is None)
    binary = memoryview(body)[split:]
    oip.check_one_input([i.name for i in request.inputs])
    (given,) = request.inputs
    size = _binary_size(given)
    declared = size or 0
    if declared != len(binary):
        if header_length is None and declared:
            raise BadRequest(
                f"input {given.name!r} has {BINARY_SIZE} {declared}: binary tensor data needs "
                f"the {HEADER_LENGTH} header, the length of the JSON before it"
            )
        raise BadRequest(
            f"the body has {len(binary)} bytes after the JSON, but input {given.name!r} has "
            f"{BINARY_SIZE} {declared}"
        )
    base64_default = (request.parameters or {}).get("content_type") == BASE64
    tensor = _input_tensor(given, size, binary, base64_default, max_images)
    return ParsedRequest(request.id, tensor, _wanted_outputs(request))


def _parse_json(header: bytes, whole_body: bool) -> InferenceRequest:
    try:
        return InferenceRequest.model_validate_json(header)
    except ValidationError as exc:
        hint = ""
        if whole_body and any(e["type"] == "json_invalid" for e in exc.errors()):
            hint = f" (binary tensor data after the JSON needs the {HEADER_LENGTH} header)"
        raise BadRequest(f"invalid inference request: {describe(exc)}{hint}") from None


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def _binary_size(given: RequestInput) -> int | None:
    size = (given.parameters or {}).get(BINARY_SIZE)
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {given.name!r}: {BINARY_SIZE} must be a non-negative integer")
    return size


def _input_tensor(
    given: RequestInput,
    binary_size: int | None,
    binary: memoryview,
    base64_default: bool,
    max_images: int,
) -> oip.InputTensor:
    what = f"input {given.name!r}"
    shape = given.shape
    count = oip.check_input(given.name, given.datatype, shape, given.parameters or {}, max_images)
    expected = given.datatype
    has_data = "data" in given.model_fields_set
    if has_data == (binary_size is not None):
        raise BadRequest(
            f"{what} must have either 'data' or parameters.{BINARY_SIZE} (binary tensor data), "
            f"{'not both' if has_data else 'and has neither'}"
        )
    data: list[bytes] | np.ndarray
    if expected == "BYTES":
        if binary_size is not None:
            data = oip.unpack_bytes(binary, count, what)
        else:
            encoding = (given.parameters or {}).get("content_type")
            data = _json_bytes(given.data, count, what, encoding == BASE64 or base64_default)
    else:
        if binary_size is not None:
            data = oip.unpack_uint8(binary, shape, what)
        else:
            data = _json_uint8(given.data, shape, count, what)
    return oip.InputTensor(given.name, expected, shape, data)


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of JSON tensor data, nested or flat (no recursion: depth is free)."""
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _json_bytes(data: Any, count: int, what: str, is_base64: bool) -> list[bytes]:
    elements = _flatten(data)
    if len(elements) != count:
        raise BadRequest(f"{what}: the shape says {count} elements, 'data' has {len(elements)}")
    if not all(isinstance(e, str) for e in elements):
        raise BadRequest(f"{what}: BYTES elements in JSON are strings")
    if not is_base64:
        raise BadRequest(
            f"{what}: BYTES in JSON are UTF-8 strings and an image file is not text; "
            f'send each file base64-encoded with parameters {{"content_type": "{BASE64}"}} on '
            f"the input or the request, or as binary tensor data ({BINARY_SIZE} and the "
            f"{HEADER_LENGTH} header)"
        )
    try:
        return [base64.b64decode(e, validate=True) for e in elements]
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what}: an element is not valid base64") from None


def _json_uint8(data: Any, shape: list[int], count: int, what: str) -> np.ndarray:
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise BadRequest(f"{what}: 'data' is not a regular array of numbers") from None
    if array.dtype.kind not in "iu":
        raise BadRequest(f"{what}: UINT8 data must be integers 0..255")
    if array.size != count:
        raise BadRequest(f"{what}: the shape says {count} elements, 'data' has {array.size}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise BadRequest(f"{what}: UINT8 data must be integers 0..255")
    return array.astype(np.uint8).reshape(shape)


def _wanted_outputs(request: InferenceRequest) -> list[WantedOutput]:
    binary_default = _flag(request.parameters or {}, "binary_data_output", "the request")
    if not request.outputs:
        return [WantedOutput(oip.OUTPUT, binary_default, 0)]
    wanted: list[WantedOutput] = []
    for output in request.outputs:
        what = f"output {output.name!r}"
        if output.name != oip.OUTPUT:
            raise BadRequest(f"unknown {what}; this model has one output, {oip.OUTPUT}")
        if any(w.name == output.name for w in wanted):
            raise BadRequest(f"{what} is requested twice")
        parameters = output.parameters or {}
        if oip.SHARED_MEMORY in parameters:
            raise BadRequest(f"{what}: this server does not write outputs to shared memory")
        binary = parameters.get("binary_data")
        if binary is None:
            binary = binary_default
        elif type(binary) is not bool:
            raise BadRequest(f"{what}: binary_data must be true or false")
        k = parameters.get("classification", 0)
        if type(k) is not int or k < 0:
            raise BadRequest(f"{what}: classification must be a count of classes, 1 or more")
        wanted.append(WantedOutput(output.name, binary, k))
    return wanted


def _flag(parameters: dict[str, Any], key: str, what: str) -> bool:
    value = parameters.get(key, False)
    if type(value) is not bool:
        raise BadRequest(f"{what}: {key} must be true or false")
    return value


# --- the response -----------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    header_length: int | None
    """The JSON's length when binary data follows it (the Inference-Header-Content-Length)."""


def encode_response(
    parsed: ParsedRequest,
    model_name: str,
    model_version: int,
    scores: Sequence[Scores],
    labels: list[Label],
) -> EncodedResponse:
    """The response JSON object for each image's `scores`, and any binary data after it."""
    outputs: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for wanted in parsed.outputs:
        output: dict[str, Any] = {"name": wanted.name}
        if wanted.classification:
            strings = oip.classification(scores, wanted.classification, labels)
            output.update(datatype="BYTES", shape=list(strings.shape))
            elements = [bytes(s) for s in strings.ravel()]
            if wanted.binary:
                binaries.append(oip.pack_bytes(elements))
            else:
                output["data"] = [e.decode() for e in elements]
        else:
            tensor = oip.probabilities(scores)
            output.update(datatype="FP32", shape=list(tensor.shape))
            if wanted.binary:
                binaries.append(tensor.astype("<f4", copy=False).tobytes())
            else:
                output["data"] = tensor.ravel().tolist()
        if wanted.binary:
            output["parameters"] = {BINARY_SIZE: len(binaries[-1])}
        outputs.append(output)
    header: dict[str, Any] = {"model_name": model_name, "model_version": str(model_version)}
    if parsed.id is not None:
        header["id"] = parsed.id
    header["outputs"] = outputs
    text = json.dumps(header, separators=(",", ":")).encode()
    if not binaries:
        return EncodedResponse(text, None)
    return EncodedResponse(text + b"".join(binaries), len(text))
