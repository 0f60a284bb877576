"""Open Inference Protocol tensors in and out of gRPC messages; no grpc import, plain functions.

The messages are the `inference.ModelInferRequest` / `ModelInferResponse` classes generated from
Triton's public `grpc_service.proto` (shipped in tritonclient's wheel); they are passed in, so
this module needs neither grpcio nor tritonclient and is tested without a server.

Tensor data comes one of two ways (grpc_service.proto):
- `ModelInferRequest.raw_input_contents`: one bytes field per input, in the order of `inputs`,
  the flattened row-major elements. A `BYTES` element is a 4-byte little-endian length followed
  by that many bytes; `UINT8` is one byte per element. tritonclient sends this by default.
- `InferInputTensor.contents`: the typed repeated fields, `bytes_contents` for `BYTES`,
  `uint_contents` (uint32, one per element) for `UINT8`. Never both ways in one request.
Outputs go back the first way, in `raw_output_contents`.

A request arrives still serialized (`grpc_server` registers ModelInfer without a deserializer)
and is read in two steps, so that a small message never costs a large parse. `scan_request`
walks its wire form (protobuf's tags and lengths, not its contents) on the event loop: at most
`MAX_FIELDS` fields outside the tensor data, which gives the model name and version to route by
and the sizes that say whether the rest may run on the loop (`RequestScan.parses_on_loop`).
`read_request` then checks the input's declared shape against the version (`oip.check_input`)
and counts the elements its typed `contents` hold (a packed field by its bytes, without decoding
them) against that shape, before protobuf builds any of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from roost.contract.labels import Label
from service.errors import InvalidParameter
from service.protocols.oip import core as oip
from service.runtime.scores import Scores

MAX_FIELDS = 256
"""Fields a request may have outside its tensors' data (names, shape, parameters, outputs):
a request of this protocol needs a few dozen."""
MAX_RANK = 8
MAX_NAME_BYTES = 1024
MAX_UNPACKED_VALUES = 4096
"""Numbers a `contents` field may hold unpacked (one tag per number): proto3 writes them
packed, and walking tags one by one is the slow way to count."""
PARSE_ON_LOOP_BYTES = 1024 * 1024
"""A message up to this long is copied in well under a millisecond: parsed on the event loop."""
PARSE_ON_LOOP_CONTENTS_BYTES = 4 * 1024
"""Typed `contents` up to this long become Python objects in well under a millisecond."""

# Field numbers of grpc_service.proto's messages (a published proto: they never change). Its
# repeated fields and maps are what can make a short message a large parse: every occurrence
# of one is a field the scan counts (the parameters' map entries, the inputs and outputs, an
# output's parameters, raw_input_contents), except the tensor data in `contents`, counted
# against the input's shape. The rest is singular: however often it occurs, protobuf keeps one.
_REQUEST_MODEL_NAME, _REQUEST_MODEL_VERSION, _REQUEST_INPUTS, _REQUEST_OUTPUTS = 1, 2, 5, 6
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE, _TENSOR_CONTENTS = 1, 2, 3, 5
_BYTES_CONTENTS = 8
_FIXED_CONTENTS = {6: 4, 7: 8}
"""fp32_contents and fp64_contents: bytes per packed value; the other numbers are varints."""
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_NOT_A_REQUEST = "the request is not a valid ModelInferRequest message"


@dataclass(frozen=True)
class WireTensor:
    """An `InferInputTensor` as its wire form gives it, its `contents` not looked into."""

    name: str
    datatype: str
    shape: list[int]
    contents: list[tuple[int, int]]
    """Where its `contents` message is (more than one occurrence merge, as protobuf says)."""


@dataclass(frozen=True)
class RequestScan:
    """What a serialized ModelInferRequest says, read from its wire form without parsing it."""

    model_name: str
    model_version: str
    inputs: list[WireTensor]
    size: int

    @property
    def parses_on_loop(self) -> bool:
        """Whether `read_request` is short enough for the event loop."""
        contents = sum(end - start for t in self.inputs for start, end in t.contents)
        return self.size <= PARSE_ON_LOOP_BYTES and contents <= PARSE_ON_LOOP_CONTENTS_BYTES


class _Budget:
    """Fields left to walk in one request (`MAX_FIELDS`)."""

    def __init__(self) -> None:
        self.left = MAX_FIELDS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise InvalidParameter(
                f"the request has more than {MAX_FIELDS} fields besides its tensor data"
            )


def scan_request(data: bytes) -> RequestScan:
    """The routing fields and inputs of the serialized ModelInferRequest `data`.

    Raises:
        InvalidParameter: not a protobuf message, more than `MAX_FIELDS` fields, a shape of
            more than `MAX_RANK` dimensions.
    """
    budget = _Budget()
    model_name = model_version = ""
    inputs: list[WireTensor] = []
    for number, wire, start, end in _fields(data, 0, len(data)):
        budget.spend()
        if wire != _LENGTH_DELIMITED:
            continue
        if number == _REQUEST_MODEL_NAME:
            model_name = _text(data, start, end)
        elif number == _REQUEST_MODEL_VERSION:
            model_version = _text(data, start, end)
        elif number == _REQUEST_INPUTS:
            inputs.append(_wire_tensor(data, start, end, budget))
        elif number == _REQUEST_OUTPUTS:
            for _ in _bounded(data, start, end, budget):  # its name and parameters
                pass
    return RequestScan(model_name, model_version, inputs, len(data))


@dataclass(frozen=True)
class ReadRequest:
    id: str
    tensor: oip.InputTensor
    outputs: list[RequestedOutput]


def read_request(
    data: bytes, scan: RequestScan, limits: oip.InputLimits, message_class: Any
) -> ReadRequest:
    """The request's id, input and outputs; `message_class` is `ModelInferRequest`.

    Its input is checked against `limits` and its `contents` counted against its shape before
    `data` is parsed, so the parse builds no more elements than the shape says.

    Raises:
        InvalidParameter: anything the protocol or this version does not accept.
        PayloadTooLarge: more than `limits.max_images` images.
    """
    oip.check_one_input([t.name for t in scan.inputs])
    (wire,) = scan.inputs
    count = oip.check_input(wire.name, wire.datatype, wire.shape, (), limits)
    _check_contents(data, wire, count)
    # The parse is protobuf's own; its DecodeError is imported here, where protobuf is known
    # to be installed (the grpc extra), to keep this module free of it.
    from google.protobuf.message import DecodeError

    try:
        request = message_class.FromString(data)
    except DecodeError:
        raise InvalidParameter(_NOT_A_REQUEST) from None
    return ReadRequest(request.id, input_tensor(request, limits), requested_outputs(request))


def _fields(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field of the message in
    `data[start:end]`, in wire order."""
    at = start
    while at < end:
        key, at = _varint(data, at, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value = at
            _, at = _varint(data, at, end)
        elif wire == _LENGTH_DELIMITED:
            length, value = _varint(data, at, end)
            at = value + length
        elif wire == _FIXED64:
            value, at = at, at + 8
        elif wire == _FIXED32:
            value, at = at, at + 4
        else:  # groups (3, 4): no field of this protocol is one
            raise InvalidParameter(_NOT_A_REQUEST)
        if number == 0 or at > end:
            raise InvalidParameter(_NOT_A_REQUEST)
        yield number, wire, value, at


def _varint(data: bytes, at: int, end: int) -> tuple[int, int]:
    """The varint at `data[at]` and where it ends."""
    if at < end and data[at] < 0x80:  # one byte: most keys and lengths
        return data[at], at + 1
    value = shift = 0
    while at < end and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise InvalidParameter(_NOT_A_REQUEST)


def _text(data: bytes, start: int, end: int) -> str:
    """A name (of a model, version, tensor or datatype), at most MAX_NAME_BYTES long."""
    if end - start > MAX_NAME_BYTES:
        raise InvalidParameter(f"a name in the request is over {MAX_NAME_BYTES} bytes")
    try:
        return data[start:end].decode()
    except UnicodeDecodeError:
        raise InvalidParameter(_NOT_A_REQUEST) from None


def _bounded(
    data: bytes, start: int, end: int, budget: _Budget
) -> Iterator[tuple[int, int, int, int]]:
    for field in _fields(data, start, end):
        budget.spend()
        yield field


def _wire_tensor(data: bytes, start: int, end: int, budget: _Budget) -> WireTensor:
    name = datatype = ""
    shape: list[int] = []
    contents: list[tuple[int, int]] = []
    for number, wire, value_start, value_end in _bounded(data, start, end, budget):
        if number == _TENSOR_NAME and wire == _LENGTH_DELIMITED:
            name = _text(data, value_start, value_end)
        elif number == _TENSOR_DATATYPE and wire == _LENGTH_DELIMITED:
            datatype = _text(data, value_start, value_end)
        elif number == _TENSOR_SHAPE:
            shape += _dimensions(data, wire, value_start, value_end)
            if len(shape) > MAX_RANK:
                raise InvalidParameter(
                    f"input {name!r}: a shape of more than {MAX_RANK} dimensions"
                )
        elif number == _TENSOR_CONTENTS and wire == _LENGTH_DELIMITED:
            contents.append((value_start, value_end))
    return WireTensor(name, datatype, shape, contents)


def _dimensions(data: bytes, wire: int, start: int, end: int) -> list[int]:
    """int64 dimensions: one unpacked, or a packed run (at most MAX_RANK + 1 of them read)."""
    if wire == _VARINT:
        return [_int64(_varint(data, start, end)[0])]
    if wire != _LENGTH_DELIMITED:
        raise InvalidParameter(_NOT_A_REQUEST)
    dimensions: list[int] = []
    at = start
    while at < end and len(dimensions) <= MAX_RANK:
        value, at = _varint(data, at, end)
        dimensions.append(_int64(value))
    return dimensions


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _check_contents(data: bytes, tensor: WireTensor, count: int) -> None:
    """Refuse typed `contents` that hold more elements than the shape's `count`, before they
    are parsed: each bytes element and unpacked number is a field, a packed run of numbers
    is counted by its bytes (fixed size, or the bytes that end a varint)."""
    what = f"input {tensor.name!r}"
    values = unpacked = 0
    for start, end in tensor.contents:
        for number, wire, value_start, value_end in _fields(data, start, end):
            if number == _BYTES_CONTENTS or wire != _LENGTH_DELIMITED:
                values += 1
                unpacked += number != _BYTES_CONTENTS
            elif number in _FIXED_CONTENTS:
                values += (value_end - value_start) // _FIXED_CONTENTS[number]
            else:
                run = np.frombuffer(data, np.uint8, value_end - value_start, value_start)
                values += int(np.count_nonzero(run < 0x80))
            if values > count:
                raise InvalidParameter(
                    f"{what} has shape {tensor.shape}: {count} elements, but its contents hold more"
                )
            if unpacked > MAX_UNPACKED_VALUES:
                raise InvalidParameter(
                    f"{what}: more than {MAX_UNPACKED_VALUES} unpacked numbers in contents; "
                    "send them packed (as proto3 writes them) or in raw_input_contents"
                )


def input_tensor(request: Any, limits: oip.InputLimits) -> oip.InputTensor:
    """The request's one input as an `oip.InputTensor`, its data taken out of the message.

    Raises:
        InvalidParameter: no input, several, contents that do not match the shape and datatype.
        PayloadTooLarge: more than `limits.max_images` images.
    """
    oip.check_one_input([t.name for t in request.inputs])
    (tensor,) = request.inputs
    what = f"input {tensor.name!r}"
    shape = [int(d) for d in tensor.shape]
    count = oip.check_input(tensor.name, tensor.datatype, shape, tensor.parameters, limits)
    raw_inputs = request.raw_input_contents
    if raw_inputs and len(raw_inputs) != len(request.inputs):
        raise InvalidParameter(
            f"raw_input_contents holds {len(raw_inputs)} tensors for {len(request.inputs)} input"
        )
    if raw_inputs and tensor.HasField("contents"):
        raise InvalidParameter(f"{what}: send its data in contents or raw_input_contents, not both")
    raw: bytes | None = raw_inputs[0] if raw_inputs else None

    data: list[bytes] | np.ndarray
    if tensor.datatype == "BYTES":
        if raw is not None:
            data = oip.unpack_bytes(raw, count, what)
        else:
            elements = tensor.contents.bytes_contents
            if len(elements) != count:
                raise InvalidParameter(
                    f"{what} has shape {shape} but {len(elements)} BYTES elements"
                )
            data = list(elements)
    else:
        data = _uint8(tensor, raw, shape, count, what)
    return oip.InputTensor(tensor.name, tensor.datatype, shape, data)


def _uint8(tensor: Any, raw: bytes | None, shape: list[int], count: int, what: str) -> np.ndarray:
    if raw is not None:
        return oip.unpack_uint8(raw, shape, what)
    values = tensor.contents.uint_contents
    if len(values) != count:
        raise InvalidParameter(
            f"{what} has shape {shape}: {count} uint_contents values expected, {len(values)} sent"
        )
    array = np.fromiter(values, dtype=np.uint32, count=count)
    if count and int(array.max()) > 255:
        raise InvalidParameter(f"{what}: a UINT8 value in uint_contents is over 255")
    return array.astype(np.uint8).reshape(shape)


@dataclass(frozen=True)
class RequestedOutput:
    classification: int | None
    """K of the classification extension: `BYTES [N, K]` strings; None: the FP32 probabilities."""


def requested_outputs(request: Any) -> list[RequestedOutput]:
    """What to answer with, in the request's order; no outputs named means the probabilities.

    The `classification` parameter is read as Triton reads it (src/grpc/grpc_utils.cc,
    ParseClassificationParams): an `int64_param` of at least 1, else INVALID_ARG.
    """
    outputs = []
    for output in request.outputs:
        if output.name != oip.OUTPUT:
            raise InvalidParameter(f"unknown output {output.name!r}; this model has {oip.OUTPUT}")
        if oip.SHARED_MEMORY in output.parameters:
            raise InvalidParameter("this server does not write outputs to shared memory")
        k = None
        if "classification" in output.parameters:
            param = output.parameters["classification"]
            if param.WhichOneof("parameter_choice") != "int64_param":
                raise InvalidParameter(
                    "invalid value type for 'classification' parameter, expected int64_param"
                )
            if param.int64_param < 1:
                raise InvalidParameter(
                    "invalid value for 'classification' parameter, expected >= 1"
                )
            k = int(param.int64_param)
        outputs.append(RequestedOutput(k))
    if len(outputs) > 1:
        raise InvalidParameter(f"output {oip.OUTPUT} is requested more than once")
    return outputs or [RequestedOutput(None)]


def add_outputs(
    response: Any, scores: Sequence[Scores], outputs: list[RequestedOutput], labels: list[Label]
) -> None:
    """Append the requested outputs to `response`, their data in `raw_output_contents`."""
    for output in outputs:
        if output.classification is None:
            tensor = oip.probabilities(scores)
            response.outputs.add(name=oip.OUTPUT, datatype="FP32", shape=list(tensor.shape))
            response.raw_output_contents.append(tensor.astype("<f4", copy=False).tobytes())
        else:
            strings = oip.classification(scores, output.classification, labels)
            response.outputs.add(name=oip.OUTPUT, datatype="BYTES", shape=list(strings.shape))
            response.raw_output_contents.append(oip.pack_bytes(strings.ravel()))
