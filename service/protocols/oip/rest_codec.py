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
tritonclient's `request_compression_algorithm` sends it; a gzip body may be several gzip members
one after the other, as gzip allows). It is inflated as it is read, the JSON and then the binary
data its input declares, so no more than those is held; and refused past the byte limit once
decompressed, as it is when sent plain (a refused body is inflated to its end to tell, a chunk
at a time, kept nowhere).

A request costs what its shape declares, whatever its body holds. Each input's shape is checked
against the version
(`oip.check_input`: N at most the images per request, pixels at the model's H x W) before its
data is looked at, and the data must then hold exactly the shape's element count. JSON `data`
arrays of numbers or of plain strings (base64) are cut out of the text before the JSON is
parsed, counted without being built (C-speed byte counts), and built only once their count is
the shape's; what is left of the JSON may hold at most `MAX_JSON_VALUES` values. Binary data is
sized by the shape before it is inflated or sliced. A body whose parse could take more than a
fraction of a millisecond (compressed, or more than `PARSE_ON_LOOP_JSON_BYTES` of JSON, or
`PARSE_ON_LOOP_BODY_BYTES` in all) is parsed off the event loop (`parses_on_loop`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from roost.contract.labels import Label
from service.errors import BadRequest, PayloadTooLarge, ServiceError
from service.protocols.oip import core as oip
from service.runtime.scores import Scores

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_SIZE = "binary_data_size"
BASE64 = "base64"

PARSE_ON_LOOP_JSON_BYTES = 16 * 1024
"""JSON up to this long parses in well under a millisecond: on the event loop."""
PARSE_ON_LOOP_BODY_BYTES = 1024 * 1024
"""Binary data up to this long is copied in well under a millisecond: on the event loop."""
MAX_JSON_VALUES = 4096
"""Values (counted as commas and opening brackets) a request's JSON may hold besides its
inputs' `data` arrays: names, shapes, parameters and outputs need a few dozen."""
MAX_GZIP_MEMBERS = 1024
"""gzip members one body may hold; each costs a fresh inflater, so their number is bounded."""
_DRAIN_CHUNK_BYTES = 64 * 1024


def parses_on_loop(body: bytes, content_encoding: str | None, header_length: int | None) -> bool:
    """Whether `parse_request` on `body` is short enough for the event loop: plain, with little
    JSON to parse and little binary data to copy."""
    if _encoding(content_encoding) != "identity":
        return False
    json_length = len(body) if header_length is None else header_length
    return json_length <= PARSE_ON_LOOP_JSON_BYTES and len(body) <= PARSE_ON_LOOP_BODY_BYTES


def _encoding(content_encoding: str | None) -> str:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported: send gzip or deflate")
    return encoding


class _PlainBody:
    """A body sent without Content-Encoding, read in order."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._at = 0

    def read(self, size: int) -> bytes | memoryview:
        """The next `size` bytes, fewer only at the end; a view where a copy is not needed."""
        if self._at == 0 and size >= len(self._body):
            self._at = len(self._body)
            return self._body
        part = memoryview(self._body)[self._at : self._at + size]
        self._at += len(part)
        return part


class _InflatedBody:
    """A gzip (every member) or deflate body, inflated only as far as it is read, and refused
    once more than `limit` bytes come out of it."""

    def __init__(self, body: bytes, encoding: str, limit: int) -> None:
        self._encoding = encoding
        # gzip: a gzip header; deflate: the zlib format (RFC 9110), which tritonclient sends.
        self._wbits = 31 if encoding == "gzip" else 15
        self._inflater = zlib.decompressobj(wbits=self._wbits)
        self._pending = body
        """Input not yet inflated (the inflater's unconsumed tail, or a next member)."""
        self._members = 1
        self._limit = limit
        self._out = 0
        self._ended = False

    def read(self, size: int) -> bytes:
        """The next `size` bytes once inflated, fewer only at the end of the body.

        Raises:
            BadRequest: data that does not inflate, ends inside a stream, or has anything but
                a further gzip member after a stream's end.
            PayloadTooLarge: more than `limit` bytes inflated in all.
        """
        parts: list[bytes] = []
        while size > 0 and not self._ended:
            try:
                chunk = self._inflater.decompress(self._pending, size)
            except zlib.error:
                raise BadRequest(f"the body is not valid {self._encoding} data") from None
            self._pending = self._inflater.unconsumed_tail
            self._out += len(chunk)
            if self._out > self._limit:
                raise PayloadTooLarge(
                    f"the body is over the {self._limit} byte limit once decompressed"
                )
            parts.append(chunk)
            size -= len(chunk)
            if self._inflater.eof:
                self._next_member()
            elif not chunk and not self._pending:
                raise BadRequest(f"the body is not valid {self._encoding} data (it ends too soon)")
        return b"".join(parts)

    def drain(self) -> None:
        """Inflate the rest of the body, keeping none of it: only to see whether it is over the
        limit (PayloadTooLarge) or not valid data (BadRequest)."""
        while not self._ended:
            self.read(_DRAIN_CHUNK_BYTES)

    def _next_member(self) -> None:
        rest = self._inflater.unused_data
        if not rest:
            self._ended = True
            return
        if self._encoding != "gzip":
            raise BadRequest("the body has data after the end of its deflate stream")
        self._members += 1
        if self._members > MAX_GZIP_MEMBERS:
            raise BadRequest(f"the body has more than {MAX_GZIP_MEMBERS} gzip members")
        self._inflater = zlib.decompressobj(wbits=self._wbits)
        self._pending = rest


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


def parse_request(
    body: bytes,
    content_encoding: str | None,
    header_length: int | None,
    limits: oip.InputLimits,
    max_body_bytes: int,
) -> ParsedRequest:
    """The infer request in `body`; `header_length` is the Inference-Header-Content-Length.

    Raises:
        BadRequest: anything the protocol or this version does not accept.
        PayloadTooLarge: more than `limits.max_images` images, or a body over `max_body_bytes`
            once decompressed.
    """
    encoding = _encoding(content_encoding)
    if encoding == "identity":
        return _parse(_PlainBody(body), header_length, limits, max_body_bytes)
    inflated = _InflatedBody(body, encoding, max_body_bytes)
    try:
        return _parse(inflated, header_length, limits, max_body_bytes)
    except ServiceError:
        inflated.drain()  # a body over the limit once decompressed is a 413 first, as if plain
        raise


def _parse(
    reader: _PlainBody | _InflatedBody,
    header_length: int | None,
    limits: oip.InputLimits,
    max_body_bytes: int,
) -> ParsedRequest:
    whole_body = header_length is None
    header = reader.read(max_body_bytes + 1 if header_length is None else header_length)
    if header_length is not None and len(header) < header_length:
        raise BadRequest(
            f"{HEADER_LENGTH} is {header_length} but the body has only {len(header)} bytes"
        )
    request, arrays = _parse_json(bytes(header), whole_body)
    oip.check_one_input([i.name for i in request.inputs])
    (given,) = request.inputs
    size = _binary_size(given)
    if whole_body and size:
        raise BadRequest(
            f"input {given.name!r} has {BINARY_SIZE} {size}: binary tensor data needs "
            f"the {HEADER_LENGTH} header, the length of the JSON before it"
        )
    count = oip.check_input(given.name, given.datatype, given.shape, given.parameters or {}, limits)
    has_data = "data" in given.model_fields_set
    if has_data == (size is not None):
        raise BadRequest(
            f"input {given.name!r} must have either 'data' or parameters.{BINARY_SIZE} (binary "
            f"tensor data), {'not both' if has_data else 'and has neither'}"
        )
    if given.datatype == "UINT8" and size is not None and size != count:
        raise BadRequest(
            f"input {given.name!r}: shape {given.shape} is {count} UINT8 values but "
            f"{BINARY_SIZE} is {size}"
        )
    binary = reader.read(size or 0)
    if len(binary) != (size or 0) or reader.read(1):
        after = f"{len(binary)}" if len(binary) != (size or 0) else f"more than {size or 0}"
        raise BadRequest(
            f"the body has {after} bytes after the JSON, but input {given.name!r} has "
            f"{BINARY_SIZE} {size or 0}"
        )
    base64_default = (request.parameters or {}).get("content_type") == BASE64
    if size is not None:
        tensor = _binary_tensor(given, count, binary)
    else:
        tensor = _json_tensor(given, count, arrays, base64_default)
    return ParsedRequest(request.id, tensor, _wanted_outputs(request))


def _parse_json(header: bytes, whole_body: bool) -> tuple[InferenceRequest, _DataArrays]:
    """The request, its `data` arrays cut out first (`_DataArrays`), so that parsing it costs
    at most `MAX_JSON_VALUES` values whatever the arrays hold."""
    hint = f" (binary tensor data after the JSON needs the {HEADER_LENGTH} header)"
    arrays = _DataArrays.cut(header)
    if arrays.values > MAX_JSON_VALUES:
        raise BadRequest(
            f"invalid inference request: more than {MAX_JSON_VALUES} JSON values besides the "
            f"inputs' data arrays of numbers or base64 strings{hint if whole_body else ''}"
        )
    try:
        return InferenceRequest.model_validate_json(arrays.text), arrays
    except ValidationError as exc:
        invalid = whole_body and any(e["type"] == "json_invalid" for e in exc.errors())
        raise BadRequest(
            f"invalid inference request: {describe(exc)}{hint if invalid else ''}"
        ) from None


def describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


# A `"data"` key and its array, when the array is numbers (flat or nested) or flat with neither
# brackets nor backslashes inside (base64 strings). Only a JSON object key is a string followed
# by a colon, and an array in this form ends at the last `]` the pattern reaches: a number array
# is followed by `,` or `}`, and `[^\[\]\\]` stops at the array's own `]`.
_DATA_ARRAY = re.compile(rb'"data"\s*:\s*(\[[\s\[\],0-9eE.+\-]*\]|\[[^\[\]\\]*\])')
_NUMBER_BYTES = bytes(ord("1") if chr(b) in "0123456789eE.+-" else ord("0") for b in range(256))
"""A `bytes.translate` table: "1" for the bytes numbers are written with, "0" for the others."""


@dataclass(frozen=True)
class _DataArrays:
    """A request's JSON with each `data` array replaced by a placeholder string (a per-request
    random token, which no client can forge), and where those arrays were in the original."""

    original: bytes
    text: bytes
    """The JSON with the placeholders, to parse."""
    spans: list[tuple[int, int]]
    token: str
    values: int
    """Commas and opening brackets in `text`: at least the values it holds, less one."""

    @classmethod
    def cut(cls, original: bytes) -> _DataArrays:
        token = secrets.token_hex(8)
        pieces: list[bytes] = []
        spans: list[tuple[int, int]] = []
        at = 0
        for match in _DATA_ARRAY.finditer(original):
            start, end = match.span(1)
            quotes = original.count(b'"', start, end)
            opened, closed = original.count(b"[", start, end), original.count(b"]", start, end)
            if opened != closed or quotes % 2:
                continue  # not the whole array (a `]` in a string): parsed as it is, bounded
            if len(spans) == MAX_JSON_VALUES:
                break  # the rest stays in the text, where it counts against MAX_JSON_VALUES
            pieces += [original[at:start], f'"{token}:{len(spans)}"'.encode()]
            spans.append((start, end))
            at = end
        text = b"".join([*pieces, original[at:]]) if spans else original
        values = text.count(b",") + text.count(b"[") + text.count(b"{")
        return cls(original, text, spans, token, values)

    def span_of(self, data: Any) -> tuple[int, int] | None:
        """Where the array that `data`'s placeholder stands for is; None: `data` is no
        placeholder (the array was parsed in place)."""
        if not isinstance(data, str) or not data.startswith(f"{self.token}:"):
            return None
        return self.spans[int(data.partition(":")[2])]

    def count(self, span: tuple[int, int]) -> int:
        """The elements of the array at `span`, without building it: its strings (pairs of
        quotes), or else its numbers (runs of the bytes numbers are written with)."""
        start, end = span
        quotes = self.original.count(b'"', start, end)
        if quotes:
            return quotes // 2
        return self.original.translate(_NUMBER_BYTES).count(b"01", start, end)

    def lists(self, span: tuple[int, int]) -> int:
        """The lists of the array at `span`, itself included."""
        return self.original.count(b"[", *span)

    def load(self, span: tuple[int, int], what: str) -> Any:
        start, end = span
        try:
            return json.loads(self.original[start:end])
        except (ValueError, RecursionError):
            raise BadRequest(f"{what}: 'data' is not valid JSON") from None


def _binary_size(given: RequestInput) -> int | None:
    size = (given.parameters or {}).get(BINARY_SIZE)
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {given.name!r}: {BINARY_SIZE} must be a non-negative integer")
    return size


def _binary_tensor(given: RequestInput, count: int, binary: bytes | memoryview) -> oip.InputTensor:
    what = f"input {given.name!r}"
    data: list[bytes] | np.ndarray
    if given.datatype == "BYTES":
        data = oip.unpack_bytes(binary, count, what)
    else:
        data = oip.unpack_uint8(binary, given.shape, what)
    return oip.InputTensor(given.name, given.datatype, given.shape, data)


def _json_tensor(
    given: RequestInput, count: int, arrays: _DataArrays, base64_default: bool
) -> oip.InputTensor:
    """The input's JSON `data`, counted against the shape before it is built."""
    what = f"input {given.name!r}"
    value = given.data
    span = arrays.span_of(value)
    if span is not None:
        found = arrays.count(span)
        # A regular array of `count` elements nests at most one list per element, plus the
        # outermost: more lists than that would cost far more to build than the elements.
        if found != count or arrays.lists(span) > count + 1:
            raise BadRequest(_count_mismatch(given.datatype, what, count, found))
        value = arrays.load(span, what)
    data: list[bytes] | np.ndarray
    if given.datatype == "BYTES":
        encoding = (given.parameters or {}).get("content_type")
        data = _json_bytes(value, count, what, encoding == BASE64 or base64_default)
    else:
        data = _json_uint8(value, given.shape, count, what)
    return oip.InputTensor(given.name, given.datatype, given.shape, data)


def _count_mismatch(datatype: str, what: str, count: int, found: int) -> str:
    if datatype == "UINT8":
        return f"{what}: 'data' must be a regular array of the shape's {count} numbers, not {found}"
    return f"{what}: the shape says {count} elements, 'data' has {found}"


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
        raise BadRequest(_count_mismatch("BYTES", what, count, len(elements)))
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
        raise BadRequest(_count_mismatch("UINT8", what, count, array.size))
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
