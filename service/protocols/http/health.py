"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.protocols.http.schemas import Readiness
from service.serving.state import ServiceState, get_state

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: 200 while the process serves HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: 200 only when every model has a version loaded and warm",
    responses={503: {"model": Readiness, "description": "Not ready, with reasons"}},
)
async def readyz(state: ServiceState = Depends(get_state)) -> Readiness | JSONResponse:
    ready, reasons = state.registry.readiness()
    if not ready:
        return JSONResponse(Readiness(ready=False, reasons=reasons).model_dump(), status_code=503)
    return Readiness(ready=True)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: ServiceState = Depends(get_state)) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
