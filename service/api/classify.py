"""POST /v1/classify and its per-model routes: HTTP details only, the flow is in inference.

A request is routed and admitted (the batch queue has room and can finish before the deadline)
before its body is read, so an overloaded server refuses without paying for the upload; that
part, and the metrics, are shared with the v2 protocol's infer route (`service/api/admission.py`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request

from service.admission import VERSION_PATTERN, version_selector
from service.api.admission import admitted_request
from service.api.uploads import UPLOAD_OPENAPI, check_media_type, read_uploads
from service.inference import classify
from service.schemas import ERROR_RESPONSES, ClassifyResponse
from service.security import require_classify_key
from service.state import ServiceState, get_state

router = APIRouter(tags=["classify"], dependencies=[Depends(require_classify_key)])

ModelQuery = Query(
    None, max_length=64, description="Model (dataset) name; default: the repository's default"
)
VersionQuery = Query(
    None,
    pattern=VERSION_PATTERN,
    description="Version number or label (config.json version_labels, e.g. canary); default: "
    "the model's traffic split, else the highest ready version",
)
VersionPath = Path(pattern=VERSION_PATTERN, description="Version number or label")
TopKQuery = Query(None, ge=1, description="Predictions per image, 1..C; default from config.json")

_ROUTE = dict(
    response_model=ClassifyResponse, responses=ERROR_RESPONSES, openapi_extra=UPLOAD_OPENAPI
)


@router.post("/v1/classify", summary="Classify images", **_ROUTE)  # type: ignore[arg-type]
async def classify_default(
    request: Request,
    model: str | None = ModelQuery,
    version: str | None = VersionQuery,
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse:
    return await _handle(request, state, model, version, top_k)


@router.post("/v1/models/{name}/classify", summary="Classify with a model", **_ROUTE)  # type: ignore[arg-type]
async def classify_model(
    request: Request,
    name: str = Path(max_length=64),
    version: str | None = VersionQuery,
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
    version: str = VersionPath,
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse:
    return await _handle(request, state, name, version, top_k)


async def _handle(
    request: Request, state: ServiceState, model: str | None, version: str | None, k: int | None
) -> ClassifyResponse:
    async with admitted_request(
        request, state, model, version_selector(version), before_admission=check_media_type
    ) as admitted:
        uploads = await read_uploads(request, state.settings, admitted.count_body_bytes)
        return await classify(state, admitted.route, uploads, k, admitted.deadline)
