"""POST /v1/classify and its per-model routes: HTTP details only, the flow is in inference.

A request is routed and admitted (the batch queue has room and can finish before the deadline)
before its body is read, so an overloaded server refuses without paying for the upload.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.requests import ClientDisconnect

from service.api.uploads import UPLOAD_OPENAPI, check_media_type, read_uploads
from service.errors import ClientClosedRequest, ServiceError
from service.inference import classify
from service.metrics import UNKNOWN_MODEL
from service.schemas import ERROR_RESPONSES, ClassifyResponse
from service.security import require_classify_key
from service.state import ServiceState, get_state

log = logging.getLogger(__name__)

router = APIRouter(tags=["classify"], dependencies=[Depends(require_classify_key)])

ModelQuery = Query(
    None, max_length=64, description="Model (dataset) name; default: the repository's default"
)
VersionQuery = Query(None, ge=1, description="Version; default: the highest ready version")
TopKQuery = Query(None, ge=1, description="Predictions per image, 1..C; default from config.json")

_ROUTE = dict(
    response_model=ClassifyResponse, responses=ERROR_RESPONSES, openapi_extra=UPLOAD_OPENAPI
)


@router.post("/v1/classify", summary="Classify images", **_ROUTE)  # type: ignore[arg-type]
async def classify_default(
    request: Request,
    model: str | None = ModelQuery,
    version: int | None = VersionQuery,
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse:
    return await _handle(request, state, model, version, top_k)


@router.post("/v1/models/{name}/classify", summary="Classify with a model", **_ROUTE)  # type: ignore[arg-type]
async def classify_model(
    request: Request,
    name: str = Path(max_length=64),
    version: int | None = VersionQuery,
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse:
    return await _handle(request, state, name, version, top_k)


@router.post(
    "/v1/models/{name}/versions/{version}/classify",
    summary="Classify with a model version",
    **_ROUTE,  # type: ignore[arg-type]
)
async def classify_version(
    request: Request,
    name: str = Path(max_length=64),
    version: int = Path(ge=1),
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse:
    return await _handle(request, state, name, version, top_k)


async def _handle(
    request: Request, state: ServiceState, model: str | None, version: int | None, k: int | None
) -> ClassifyResponse:
    started = time.perf_counter()
    deadline = time.monotonic() + state.settings.request_timeout_s
    registry, metrics = state.registry, state.metrics
    model_label, version_label, code = UNKNOWN_MODEL, "", "200"
    try:
        name = model or registry.default_model()
        if registry.known_model(name):
            model_label = name
        served = registry.get(name, version)
        version_label = str(served.version)
        with served.lease():
            check_media_type(request)
            served.batcher.admit(1, deadline)  # before the body: refusal costs no upload
            body_bytes = metrics.request_body_bytes.labels(model_label)
            uploads = await read_uploads(request, state.settings, body_bytes.inc)
            return await classify(state, served, uploads, k, deadline)
    except ClientDisconnect:
        code = "499"
        log.info("client went away during the upload (%s v%s)", model_label, version_label)
        raise ClientClosedRequest("the client closed the connection") from None
    except ServiceError as exc:
        code = str(exc.status_code)
        raise
    except asyncio.CancelledError:
        code = "499"  # the client went away
        raise
    except Exception:
        code = "500"
        raise
    finally:
        metrics.requests.labels(model_label, version_label, code).inc()
        if model_label != UNKNOWN_MODEL:
            metrics.request_seconds.labels(model_label).observe(time.perf_counter() - started)
