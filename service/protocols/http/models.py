"""Model listing, details, per-model readiness and on-demand repository reload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from service.errors import ModelNotFound, NotReady
from service.protocols.auth import require_classify_key
from service.protocols.http.schemas import (
    ERROR_RESPONSES,
    ModelDetail,
    ModelList,
    ModelSummary,
    Readiness,
    Routing,
    VersionInfo,
)
from service.repository.registry import ModelEntry
from service.serving.state import ServiceState, get_state

router = APIRouter(tags=["models"], dependencies=[Depends(require_classify_key)])


def summarize(entry: ModelEntry) -> ModelSummary:
    versions = [
        # A version serving while its replacement loads, or after the replacement failed
        # (the reason says so), shows as ready.
        VersionInfo(version=v, state="ready" if r.serving is not None else r.state, reason=r.reason)
        for v, r in sorted(entry.versions.items())
    ]
    latest = entry.latest()
    return ModelSummary(
        name=entry.name,
        default_version=latest.version if latest else None,
        versions=versions,
        error=entry.config_error or entry.policy_error,
    )


@router.get(
    "/v1/models", response_model=ModelList, summary="Every model and the state of its versions"
)
async def list_models(state: ServiceState = Depends(get_state)) -> ModelList:
    models = state.registry.models()
    return ModelList(models=[summarize(models[name]) for name in sorted(models)])


@router.get(
    "/v1/models/{name}",
    response_model=ModelDetail,
    responses=ERROR_RESPONSES,
    summary="Labels, input size, versions and card of a model",
)
async def model_detail(
    name: str = Path(max_length=64), state: ServiceState = Depends(get_state)
) -> ModelDetail:
    entry = state.registry.models().get(name)
    if entry is None:
        raise ModelNotFound(f"no model named {name!r}")
    served = state.registry.get(
        name
    )  # NotReady when nothing serves: details come from a loaded card
    artifacts = served.artifacts
    policy = entry.policy
    assert policy is not None  # `get` answers only while a policy is in force
    routing = Routing(
        version_labels=policy.config.version_labels,
        traffic=policy.weights(),
        rolled_back=policy.rolled_back,
        shadow=None if policy.config.shadow is None else policy.config.shadow.model_dump(),
        cache_entries=None if policy.cache is None else len(policy.cache),
    )
    return ModelDetail(
        **summarize(entry).model_dump(),
        labels=[label.name for label in artifacts.labels],
        image_size=artifacts.card.image_size,
        resize=artifacts.card.resize,
        config=served.config.model_dump(mode="json"),
        card=artifacts.card.model_dump(mode="json"),
        routing=routing,
    )


@router.get(
    "/v1/models/{name}/ready",
    response_model=Readiness,
    responses=ERROR_RESPONSES,
    summary="200 when the model has a version serving",
)
async def model_ready(
    name: str = Path(max_length=64), state: ServiceState = Depends(get_state)
) -> Readiness | JSONResponse:
    try:
        state.registry.get(name)
    except NotReady as exc:
        return JSONResponse(
            Readiness(ready=False, reasons=[exc.message]).model_dump(), status_code=503
        )
    return Readiness(ready=True)
