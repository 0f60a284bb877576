"""The FastAPI application: built by `create_app(settings)`, resources owned by the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from roost.contract.images import max_decode_bytes
from service.cpus import usable_cores
from service.errors import install_error_handlers
from service.observability.metrics import ServiceMetrics
from service.observability.tracing import (
    EXCLUDED_URLS,
    TRACER_NAME,
    tracer_provider_from_environ,
)
from service.protocols.auth import KeyFiles
from service.protocols.http import admin, classify, explain, health, models
from service.protocols.http.lingering import BodyBudget, RequestBodyMiddleware
from service.protocols.http.request_log import RequestLogMiddleware
from service.protocols.oip import rest
from service.repository.registry import ModelRegistry
from service.runtime.cpu_gate import CpuGate
from service.runtime.decode.choose import choose_decoder
from service.serving.decode_memory import DecodeMemory
from service.serving.payloads import PayloadLog
from service.serving.shadow import ShadowRunner
from service.serving.state import ServiceState
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "protocols" / "http" / "static"
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
"""Swagger UI 5 and ReDoc 2, as the fastapi-offline package ships them: /docs needs no CDN."""


def create_app(
    settings: ServiceSettings | None = None, tracer_provider: TracerProvider | None = None
) -> FastAPI:
    """The server. Traces go to `tracer_provider` when given, else where the OTEL_* variables
    say (none when they are unset: observability/tracing.py); the lifespan shuts it down."""
    settings = settings or ServiceSettings()
    body_budget = BodyBudget(settings.inflight_body_budget)  # request bodies held, server-wide
    key_files = KeyFiles(settings)  # ROOST_*API_KEYS_FILE read now: a bad one stops the start
    version = "0.1.0"
    if tracer_provider is None:  # a bad OTEL_* value stops the start, as a bad setting does
        tracer_provider = tracer_provider_from_environ(os.environ, version)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics = ServiceMetrics()
        gate_threads = settings.cpu_gate_threads or usable_cores() + 1
        cpu_gate = CpuGate(gate_threads)
        decode_memory = DecodeMemory(
            settings.max_decode_bytes or _auto_decode_bytes(settings, gate_threads)
        )
        decoder = await asyncio.to_thread(choose_decoder, settings)  # may open a CUDA context
        registry = ModelRegistry(settings, metrics, cpu_gate, decoder)
        metrics.ready.set_function(lambda: float(registry.readiness()[0]))
        metrics.body_bytes_in_flight.set_function(lambda: float(body_budget.held))
        metrics.decode_bytes_in_use.set_function(lambda: float(decode_memory.held))
        decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="roost-decode")
        shadows = ShadowRunner(metrics, settings.request_timeout_s)
        payloads = PayloadLog(metrics)
        app.state.roost = state = ServiceState(
            settings,
            metrics,
            registry,
            decode_pool,
            shadows,
            cpu_gate,
            decode_memory,
            decoder,
            payloads,
            tracer_provider.get_tracer(TRACER_NAME) if tracer_provider is not None else None,
        )
        app.state.grpc = None
        app.state.keys = key_files.accepted
        if settings.workers > 1:
            # NOTE: a worker takes connections once its lifespan has started; loading first
            # keeps connections away from a worker that could only answer 503 meanwhile.
            await _first_load(registry, metrics)
            tasks = {asyncio.create_task(_poll(registry, settings.poll_interval_s))}
        else:
            # NOTE: models load in the background so /healthz answers at once and /readyz
            # can say what is still loading.
            loading = _load_then_poll(registry, metrics, settings.poll_interval_s)
            tasks = {asyncio.create_task(loading)}
        if key_files:
            tasks.add(asyncio.create_task(key_files.watch()))  # keys rotate without a restart
        grpc_server = None
        try:
            if settings.grpc_port is not None:
                from service.protocols.oip.grpc_server import (
                    start_grpc_server,  # grpc is an optional extra
                )

                # On this loop, sharing `state`; app.state.grpc.port is the port bound (for 0).
                grpc_server = await start_grpc_server(
                    state, app.version, key_files.accepted, tracer_provider
                )
                app.state.grpc = grpc_server
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()  # drains its in-flight RPCs while the registry serves
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await shadows.close()
            await asyncio.to_thread(payloads.close)  # what is queued is written
            await registry.close()
            decode_pool.shutdown(wait=True)
            if tracer_provider is not None:
                await asyncio.to_thread(tracer_provider.shutdown)  # exports what is queued
            metrics.process_exited()

    app = FastAPI(
        title="Roost",
        summary="Image classification: top-k predictions from batched ONNX Runtime sessions",
        version=version,
        lifespan=lifespan,
        docs_url=None,  # served below from DOCS_ASSETS, not from a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestBodyMiddleware,
        budget=body_budget,
        max_body_bytes=settings.max_upload_bytes,
        read_seconds=settings.request_timeout_s,
        lingering_max_bytes=settings.lingering_max_bytes,
        lingering_max_s=settings.lingering_max_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization"],
            expose_headers=["Retry-After"],
        )
    # Outermost (added last): every response, refusals of the middlewares above included,
    # carries the request id, and every request gets its access line.
    app.add_middleware(
        RequestLogMiddleware,
        access_log=settings.access_log,
        log_probes=settings.access_log_probes,
    )
    if tracer_provider is not None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        # Outermost of all: the server span (OpenTelemetry's ASGI instrumentation, which also
        # continues a caller's `traceparent`) covers everything the server does for a request.
        app.add_middleware(
            OpenTelemetryMiddleware,
            excluded_urls=EXCLUDED_URLS,
            exclude_spans=["receive", "send"],  # one span per ASGI message says nothing
            tracer_provider=tracer_provider,
        )
    app.include_router(classify.router)
    app.include_router(explain.router)
    app.include_router(models.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(rest.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    _add_docs_pages(app)
    return app


# ReDoc's menu shows a logo from its vendor's site, whatever its options: the pages may show
# images from this server only, so neither page makes a request anywhere else.
_DOCS_HEADERS = {"Content-Security-Policy": "img-src 'self' data: blob:"}


def _add_docs_pages(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc), their scripts and styles served by this server
    (/docs/assets): the pages work where the server's clients cannot reach the internet."""
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon.png",
            # no badge fetched from the public validator
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers.update(_DOCS_HEADERS)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
            redoc_favicon_url=f"{root}/docs/assets/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_DOCS_HEADERS)
        return page


async def _load_then_poll(
    registry: ModelRegistry, metrics: ServiceMetrics, interval_s: float
) -> None:
    await _first_load(registry, metrics)
    await _poll(registry, interval_s)


async def _first_load(registry: ModelRegistry, metrics: ServiceMetrics) -> None:
    """Load the repository once; from then on this process counts as serving."""
    await _reload(registry)
    metrics.server_processes.set(1)


async def _poll(registry: ModelRegistry, interval_s: float) -> None:
    """Re-scan the repository every `interval_s` (never when 0)."""
    while interval_s > 0:
        await asyncio.sleep(interval_s)
        await _reload(registry)


async def _reload(registry: ModelRegistry) -> None:
    try:
        await registry.reload()
    except Exception:  # a scan error must not kill polling; the next round retries
        log.exception("model repository reload failed")


def _auto_decode_bytes(settings: ServiceSettings, gate_threads: int) -> int:
    """ROOST_MAX_DECODE_BYTES=0: the costliest image allowed, once per thread that may decode
    at once (the CPU gate's), and at least twice."""
    worst = max_decode_bytes(settings.max_image_pixels, (512, 512), settings.max_upload_bytes)
    return max(2, gate_threads) * worst
