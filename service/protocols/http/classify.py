"""POST /v1/classify and its per-model routes: HTTP details only, the flow is in inference.

A request is routed and admitted (the batch queue has room and can finish before the deadline)
before its body is read, so an overloaded server refuses without paying for the upload; that
part, and the metrics, are shared with the v2 protocol's infer route
(`service/protocols/http/intake.py`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from roost.contract.labels import Label
from service.observability.tracing import span_around
from service.protocols.auth import require_classify_key
from service.protocols.http.intake import admitted_request
from service.protocols.http.schemas import (
    ERROR_RESPONSES,
    ClassifyResponse,
    ImageResult,
    Prediction,
)
from service.protocols.http.uploads import UPLOAD_OPENAPI, check_media_type, read_uploads
from service.repository.registry import Route
from service.runtime.scores import Scores
from service.serving.admission import VERSION_PATTERN, version_selector
from service.serving.inference import Upload, resolve_top_k, score_uploads
from service.serving.state import ServiceState, get_state

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
) -> ClassifyResponse | Response:
    return await _handle(request, state, model, version, top_k)


@router.post("/v1/models/{name}/classify", summary="Classify with a model", **_ROUTE)  # type: ignore[arg-type]
async def classify_model(
    request: Request,
    name: str = Path(max_length=64),
    version: str | None = VersionQuery,
    top_k: int | None = TopKQuery,
    state: ServiceState = Depends(get_state),
) -> ClassifyResponse | Response:
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
) -> ClassifyResponse | Response:
    return await _handle(request, state, name, version, top_k)


LOOP_ANSWER_PREDICTIONS = 1024
"""Predictions an answer may hold and still be built on the event loop (a few ms); a larger one
(up to 64 images x every class: 0.2 s for 1,000 classes) is built and serialized on a decode
thread, so one cheap request with a large `top_k` cannot stall every other."""


async def _handle(
    request: Request, state: ServiceState, model: str | None, version: str | None, k: int | None
) -> ClassifyResponse | Response:
    async with admitted_request(
        request, state, model, version_selector(version), before_admission=check_media_type
    ) as admitted:
        uploads = await read_uploads(request, state.settings, admitted.count_body_bytes)
        route = admitted.route
        k = resolve_top_k(route.served, k)
        scores = await score_uploads(state, route, uploads, admitted.deadline)
        with span_around(state.tracer, "roost.answer"):
            if len(uploads) * k <= LOOP_ANSWER_PREDICTIONS:
                return classify_response(route, uploads, scores, k)

            def answer() -> bytes:
                return classify_response(route, uploads, scores, k).model_dump_json().encode()

            body = await asyncio.get_running_loop().run_in_executor(state.decode_pool, answer)
            return Response(body, media_type="application/json")


def classify_response(
    route: Route, uploads: list[Upload], scores: list[Scores], k: int
) -> ClassifyResponse:
    """The /v1 answer: each upload's top `k` predictions (`k` from `resolve_top_k`)."""
    served = route.served
    labels = served.artifacts.labels
    return ClassifyResponse(
        model=served.name,
        version=served.version,
        results=[
            ImageResult(
                filename=u.filename,
                predictions=top_k(s, k, labels),
                uncertain=route.policy.is_uncertain(s),
            )
            for u, s in zip(uploads, scores, strict=True)
        ],
    )


def top_k(scores: Scores, k: int, labels: list[Label]) -> list[Prediction]:
    """The `k` highest-scoring classes of one image, highest first."""
    probabilities = scores.probabilities
    return [
        Prediction(
            label=labels[i].name, index=int(i), score=float(probabilities[i]), url=labels[i].url
        )
        for i in scores.ranking[:k]
    ]
