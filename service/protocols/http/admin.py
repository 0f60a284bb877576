"""Admin endpoints: they change what the server does, so they always need an admin key."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.protocols.auth import require_admin_key
from service.protocols.http.models import list_models
from service.protocols.http.schemas import ModelList
from service.serving.state import ServiceState, get_state

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin_key)])


@router.post(
    "/v1/repository/reload",
    response_model=ModelList,
    summary="Re-scan the model repository now; returns the models after the reload",
    responses={401: {"description": "No or wrong admin key"}, 403: {"description": "Disabled"}},
)
async def reload_repository(state: ServiceState = Depends(get_state)) -> ModelList:
    await state.registry.reload()
    return await list_models(state)
