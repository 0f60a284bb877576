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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from roost.contract.labels import Label
from service import oip
from service.errors import InvalidParameter
from service.postprocess import Scores


def input_tensor(request: Any, max_images: int) -> oip.InputTensor:
    """The request's one input as an `oip.InputTensor`, its data taken out of the message.

    Raises:
        InvalidParameter: no input, several, contents that do not match the shape and datatype.
        PayloadTooLarge: more than `max_images` images (the /v1 limit on files per request).
    """
    oip.check_one_input([t.name for t in request.inputs])
    (tensor,) = request.inputs
    what = f"input {tensor.name!r}"
    shape = [int(d) for d in tensor.shape]
    count = oip.check_input(tensor.name, tensor.datatype, shape, tensor.parameters, max_images)
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
            data = list(tensor.contents.bytes_contents)
            if len(data) != count:
                raise InvalidParameter(f"{what} has shape {shape} but {len(data)} BYTES elements")
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
