"""The Open Inference Protocol (KServe v2 / Triton) over HTTP/REST: health, metadata, infer.

Routes follow KServe's `required_api.md`; infer also speaks Triton's binary tensor data and
classification extensions (bodies in `rest_codec.py`, tensors in `core.py`).
Infer shares /v1's request flow (`service/protocols/http/intake.py`): the same routing, lease,
admission before the body is read, byte limit, API key and metrics.

Errors are the protocol's `{"error": "message"}`, not /v1's `{"error": {code, message}}`; every
route of this router translates them itself (`V2Route`), so /v1 keeps its shape. Statuses are
Triton's HTTP mapping (server `src/http_server.cc`, `HttpCodeFromError`): invalid input is 400
(where /v1 says 415 for an image it cannot decode or 422 for a bad parameter), an unknown model
or version 404, not ready or overloaded 503 with Retry-After; and, as /v1, 413 for a body or
image over the limits, 504 past the request deadline, 401 without a valid API key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.routing import Match

from service.errors import BadRequest, ModelNotFound, NotReady, ServiceError
from service.observability.tracing import span_around
from service.protocols.auth import require_classify_key
from service.protocols.http.intake import admitted_request, read_body
from service.protocols.oip import core as oip
from service.protocols.oip import rest_codec
from service.repository.registry import VersionSelector
from service.serving.admission import VERSION_PATTERN, version_selector
from service.serving.state import ServiceState, get_state

log = logging.getLogger(__name__)


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class V2Route(APIRoute):
    """Answers every error of its route, its dependencies' included, as `{"error": "..."}`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def v2_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return v2_error(oip.protocol_status(exc), exc.message, exc.headers)
            except RequestValidationError as exc:
                return v2_error(400, _validation_message(exc))
            except Exception:  # a bug: logged, and answered in the protocol's shape
                log.exception("unhandled error in %s %s", request.method, request.url.path)
                return v2_error(500, "internal server error")

        return v2_handler


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "header"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


router = APIRouter(tags=["v2 (Open Inference Protocol)"], route_class=V2Route)
keyed = [Depends(require_classify_key)]

ModelName = Path(max_length=64, description="Model name")
ModelVersion = Path(pattern=VERSION_PATTERN, description="Model version number or label")


# --- response bodies (for the OpenAPI schema) --------------------------------------------------


class V2Error(BaseModel):
    error: str


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": text}
    for status, text in {
        400: "Invalid request: malformed JSON or binary data, an input, datatype, shape or "
        "output this model does not take, an image that cannot be decoded",
        401: "An API key is required (when the server has ROOST_API_KEYS)",
        404: "Unknown model or version",
        413: "Body, image or image count over the limits",
        503: "Model not ready, or overloaded (see Retry-After)",
        504: "Request deadline passed",
    }.items()
}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "enum": [oip.ENCODED_INPUT, oip.DECODED_INPUT]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BYTES", "UINT8"]},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0},
                "content_type": {"type": "string", "enum": ["base64"]},
            },
        },
        "data": {
            "type": "array",
            "description": "UINT8: numbers 0..255, flat or nested; BYTES: base64 strings with "
            'parameters.content_type "base64"',
            "items": {
                "anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "string"}]
            },
        },
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {"type": "boolean"},
                "content_type": {"type": "string", "enum": ["base64"]},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "enum": [oip.OUTPUT]},
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "binary_data": {"type": "boolean"},
                            "classification": {"type": "integer", "minimum": 0},
                        },
                    },
                },
            },
        },
    },
}
INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _INFER_REQUEST},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "The JSON request, then binary tensor data; the "
                    f"{rest_codec.HEADER_LENGTH} header gives the JSON's length",
                }
            },
        },
    },
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "model": InferenceResponse,
        "description": "JSON, or with binary outputs application/octet-stream: the JSON "
        f"({rest_codec.HEADER_LENGTH} bytes) then the outputs' binary data",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


# --- health and metadata -----------------------------------------------------------------------


@router.get("/v2", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(
        name=oip.SERVER_NAME, version=request.app.version, extensions=oip.EXTENSIONS
    )


@router.get("/v2/health/live", response_model=Live, summary="Live: 200 while the server answers")
async def server_live() -> Live:
    return Live(live=True)


@router.get(
    "/v2/health/ready",
    response_model=Ready,
    summary="Ready: 200 when every model has a version serving, else 503",
    responses={503: {"model": Ready, "description": "Not ready"}},
)
async def server_ready(state: ServiceState = Depends(get_state)) -> Ready | JSONResponse:
    ready, _ = state.registry.readiness()
    return Ready(ready=True) if ready else JSONResponse({"ready": False}, status_code=503)


def _model_ready(
    state: ServiceState, name: str, version: VersionSelector
) -> ModelReady | JSONResponse:
    try:
        state.registry.get(name, version)
    except NotReady:
        return JSONResponse({"name": name, "ready": False}, status_code=503)
    return ModelReady(name=name, ready=True)


def _model_metadata(state: ServiceState, name: str, version: VersionSelector) -> dict[str, object]:
    entry = state.registry.models().get(name)
    if entry is None:
        raise ModelNotFound(f"no model named {name!r}")
    served = state.registry.get(name, version)
    return oip.model_metadata(name, sorted(entry.served), served)


_READY = dict(
    response_model=ModelReady,
    dependencies=keyed,
    responses={**ERRORS, 503: {"model": ModelReady, "description": "Not ready"}},
)
_METADATA = dict(response_model=ModelMetadata, dependencies=keyed, responses=ERRORS)


@router.get("/v2/models/{name}/ready", summary="Model ready", **_READY)  # type: ignore[arg-type]
async def model_ready(
    name: str = ModelName, state: ServiceState = Depends(get_state)
) -> ModelReady | JSONResponse:
    return _model_ready(state, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model version ready",
    **_READY,  # type: ignore[arg-type]
)
async def model_version_ready(
    name: str = ModelName, version: str = ModelVersion, state: ServiceState = Depends(get_state)
) -> ModelReady | JSONResponse:
    return _model_ready(state, name, version_selector(version))


@router.get("/v2/models/{name}", summary="Model metadata", **_METADATA)  # type: ignore[arg-type]
async def model_metadata(
    name: str = ModelName, state: ServiceState = Depends(get_state)
) -> dict[str, object]:
    return _model_metadata(state, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}",
    summary="Model version metadata",
    **_METADATA,  # type: ignore[arg-type]
)
async def model_version_metadata(
    name: str = ModelName, version: str = ModelVersion, state: ServiceState = Depends(get_state)
) -> dict[str, object]:
    return _model_metadata(state, name, version_selector(version))


# --- infer -------------------------------------------------------------------------------------

HeaderLength = Header(
    None,
    alias=rest_codec.HEADER_LENGTH,
    ge=0,
    description="Length of the JSON request when binary tensor data follows it",
)
_INFER = dict(
    dependencies=keyed,
    response_model=None,
    responses=INFER_RESPONSES,
    openapi_extra=INFER_OPENAPI,
)


@router.post("/v2/models/{name}/infer", summary="Infer", **_INFER)  # type: ignore[arg-type]
async def infer(
    request: Request,
    name: str = ModelName,
    header_length: int | None = HeaderLength,
    state: ServiceState = Depends(get_state),
) -> Response:
    return await _infer(request, state, name, None, header_length)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Infer with a model version",
    **_INFER,  # type: ignore[arg-type]
)
async def infer_version(
    request: Request,
    name: str = ModelName,
    version: str = ModelVersion,
    header_length: int | None = HeaderLength,
    state: ServiceState = Depends(get_state),
) -> Response:
    return await _infer(request, state, name, version_selector(version), header_length)


async def _infer(
    request: Request,
    state: ServiceState,
    name: str,
    version: VersionSelector,
    header_length: int | None,
) -> Response:
    settings = state.settings
    async with admitted_request(
        request, state, name, version, status_of=oip.protocol_status
    ) as admitted:
        body = await read_body(request, settings.max_upload_bytes, admitted.count_body_bytes)
        served = admitted.served
        encoding = request.headers.get("content-encoding")
        limits = oip.input_limits(served, settings)
        args = (body, encoding, header_length, limits, settings.max_upload_bytes)
        if rest_codec.parses_on_loop(body, encoding, header_length):
            parsed = rest_codec.parse_request(*args)
        else:  # large or compressed: on the decode pool, while the loop serves the others
            parsed = await oip.off_loop(state, admitted.deadline, rest_codec.parse_request, *args)
        scores = await oip.infer(state, admitted.route, parsed.tensor, admitted.deadline)
        with span_around(state.tracer, "roost.answer"):
            encoded = rest_codec.encode_response(
                parsed, served.name, served.version, scores, served.artifacts.labels
            )
    if encoded.header_length is None:
        return Response(encoded.body, media_type="application/json")
    return Response(
        encoded.body,
        media_type="application/octet-stream",
        headers={rest_codec.HEADER_LENGTH: str(encoded.header_length)},
    )


# --- the model repository extension ------------------------------------------------------------

_INDEX_BODY_LIMIT = 64 * 1024


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    ready: bool = False


class IndexEntry(BaseModel):
    name: str
    version: str | None = None
    state: str
    reason: str


@router.post(
    "/v2/repository/index",
    response_model=list[IndexEntry],
    dependencies=keyed,
    responses=ERRORS,
    summary="Every model version of the repository and its state",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
                }
            },
        }
    },
)
async def repository_index(
    request: Request, state: ServiceState = Depends(get_state)
) -> list[IndexEntry]:
    body = await read_body(request, _INDEX_BODY_LIMIT)
    try:
        ready_only = IndexRequest.model_validate_json(body or b"{}").ready
    except ValidationError as exc:
        raise BadRequest(f"invalid index request: {rest_codec.describe(exc)}") from None
    return [
        IndexEntry(name=r.name, version=r.version or None, state=r.state, reason=r.reason)
        for r in oip.repository_index(state.registry, ready_only)
    ]


@router.post(
    "/v2/repository/models/{name}/{action}",
    dependencies=keyed,
    responses={400: {"model": V2Error, "description": "Not supported"}},
    summary="Load or unload: not supported, the server serves what the repository holds",
)
async def repository_control(
    name: str = ModelName, action: Literal["load", "unload"] = Path()
) -> JSONResponse:
    return v2_error(
        400,
        f"explicit {action} is not supported: Roost serves the versions in its model repository "
        "(polled every ROOST_POLL_INTERVAL_S, or rescanned by POST /v1/repository/reload); "
        "add or remove a version folder instead",
    )


# --- anything else under /v2: the protocol's error shape too (last: it matches every path) ----


@router.api_route(
    "/v2/{path:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def not_found(request: Request, path: str) -> JSONResponse:
    allowed: set[str] = set()
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is not not_found:
            match, _ = route.matches(request.scope)
            if match == Match.PARTIAL:
                allowed |= route.methods or set()
    if allowed:
        allow = ", ".join(sorted(allowed))
        return v2_error(405, f"method {request.method} not allowed here", {"Allow": allow})
    return v2_error(404, f"no v2 endpoint {request.method} /v2/{path}")
