"""Model listing, details, per-model readiness and on-demand repository reload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from service.errors import ModelNotFound, NotReady
from service.registry import ModelEntry
from service.schemas import (
    ERROR_RESPONSES,
    ModelDetail,
    ModelList,
    ModelSummary,
    Readiness,
    VersionInfo,
)
from service.security import require_classify_key
from service.state import ServiceState, get_state

router = APIRouter(tags=["models"], dependencies=[Depends(require_classify_key)])


def summarize(entry: ModelEntry) -> ModelSummary:
    versions = {
        v: VersionInfo(version=v, state=s.state, reason=s.reason) for v, s in entry.status.items()
    }
    for v in entry.served:  # a version serving while its replacement loads shows as ready
        versions[v] = VersionInfo(version=v, state="ready")
    latest = entry.latest()
    return ModelSummary(
        name=entry.name,
        default_version=latest.version if latest else None,
        versions=[versions[v] for v in sorted(versions)],
        error=entry.config_error,
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
    return ModelDetail(
        **summarize(entry).model_dump(),
        labels=[label.name for label in artifacts.labels],
        image_size=artifacts.card.image_size,
        resize=artifacts.card.resize,
        config=served.config.model_dump(mode="json"),
        card=artifacts.card.model_dump(mode="json"),
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
