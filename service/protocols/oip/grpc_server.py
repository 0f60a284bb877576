"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, on the app's loop.

Started by the lifespan when `ROOST_GRPC_PORT` is set. It is a `grpc.aio` server running on the
same event loop as the HTTP app, so it shares the lifespan's `ServiceState`: the registry, the
batchers (gRPC and HTTP requests batch together), the decode pool and the metrics.

The service and its messages are the ones generated from Triton's public `grpc_service.proto`
that ship in tritonclient's wheel (`tritonclient.grpc.service_pb2` / `service_pb2_grpc`), so
any KServe v2 / Triton gRPC client works. grpcio and tritonclient are imported only when the
server starts: they are the optional `grpc` extra.

Served: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, RepositoryIndex and
ModelInfer (with the classification extension). The other RPCs of the service (streaming, model
config, statistics, repository load/unload, shared memory, trace, logging) answer UNIMPLEMENTED,
the generated servicer's default.

A ModelInfer request goes the way of a /v1 classify request: route (model, version), lease,
admission against the deadline, then `oip.infer`; it is counted in the same metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from service.errors import InvalidParameter, ServiceError
from service.observability.tracing import span_around
from service.protocols.auth import AcceptedKeys, check_key, presented_key, tls_files
from service.protocols.oip import core as oip
from service.protocols.oip.grpc_codec import add_outputs, read_request, scan_request
from service.repository.registry import ServedVersion, VersionSelector
from service.request_context import (
    CURRENT,
    REQUEST_ID_HEADER,
    RequestContext,
    accepted_request_id,
    current_request_id,
)
from service.serving.admission import admitted, version_selector
from service.serving.state import ServiceState
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

GRPC_EXTRA = 'pip install "roost[grpc]"'

_MAX_NAME_LENGTH = 64  # as /v1's model name parameter
_T = TypeVar("_T")

# Roost's errors carry HTTP status codes (service/errors.py); over gRPC each becomes the code
# Triton's gRPC front end uses for the same kind of error. Triton maps its own error kinds in
# GrpcStatusUtil::CodeToStatus (triton-inference-server/server, src/grpc/grpc_utils.cc):
# INVALID_ARG -> INVALID_ARGUMENT, NOT_FOUND -> NOT_FOUND, UNAVAILABLE -> UNAVAILABLE,
# UNSUPPORTED -> UNIMPLEMENTED, INTERNAL -> INTERNAL, CANCELLED -> CANCELLED; its HTTP front
# end (HttpCodeFromError, src/http_server.cc) answers the same kinds with 400, 404, 503, 501
# and 500. So HTTP 404 -> NOT_FOUND, 503 -> UNAVAILABLE, and a client's mistake (400,
# 415, 422) is INVALID_ARGUMENT, never INTERNAL. Triton has no deadline error kind; Roost's
# 504 (the request deadline passed) is gRPC's own DEADLINE_EXCEEDED, what a client sees when
# its own deadline passes. 413 (an image declaring too many pixels, too many images in one
# request) is INVALID_ARGUMENT: it is a property of the request that no retry changes, as
# Triton's "batch-size must be <= N" is INVALID_ARG; RESOURCE_EXHAUSTED means a quota or a
# server resource ran out (HTTP 429's equivalent) and retry policies treat it as retryable.
# gRPC itself answers RESOURCE_EXHAUSTED for a message over the receive limit
# (max_upload_bytes), before this code sees the request.
_GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def grpc_code_name(status_code: int) -> str:
    """The gRPC status code (its `grpc.StatusCode` name) for one of Roost's HTTP status codes."""
    if status_code in _GRPC_CODES:
        return _GRPC_CODES[status_code]
    return "INVALID_ARGUMENT" if 400 <= status_code < 500 else "INTERNAL"


class GrpcExtraMissing(RuntimeError):
    """ROOST_GRPC_PORT is set but grpcio or tritonclient's gRPC stubs cannot be imported."""


class GrpcServer:
    """The running gRPC server: where it listens, and how to stop it."""

    def __init__(self, server: Any, host: str, port: int, grace_s: float) -> None:
        self._server = server
        self.host = host
        self.port = port
        """The port bound: the one asked for, or the one picked for `grpc_port=0`."""
        self._grace_s = grace_s

    @property
    def address(self) -> str:
        return _target(self.host, self.port)

    async def stop(self) -> None:
        """Refuse new RPCs, let those in flight finish (at most their deadline), then close."""
        await self._server.stop(self._grace_s)
        log.info("gRPC server on %s stopped", self.address)


async def start_grpc_server(
    state: ServiceState,
    version: str,
    keys: AcceptedKeys,
    tracer_provider: TracerProvider | None = None,
) -> GrpcServer:
    """Serve the Open Inference Protocol over gRPC on `settings.host:settings.grpc_port`, with
    the keys HTTP accepts (`keys`, kept current by the key files), and a server span per call
    (OpenTelemetry's gRPC instrumentation) when `tracer_provider` is given.

    Port 0 picks a free port: `GrpcServer.port` says which.

    Raises:
        GrpcExtraMissing: grpcio or tritonclient's gRPC stubs are not installed.
        RuntimeError: the address cannot be bound.
    """
    grpc, service_pb2, service_pb2_grpc = _import_grpc()
    settings = state.settings
    assert settings.grpc_port is not None
    interceptors = []
    if tracer_provider is not None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.append(aio_server_interceptor(tracer_provider=tracer_provider))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            # The same cap as /v1's request body; gRPC refuses a larger message itself
            # (RESOURCE_EXHAUSTED) before it is handed to a method.
            ("grpc.max_receive_message_length", settings.max_upload_bytes),
            # gRPC sets SO_REUSEPORT by default on Linux: a port already in use by another
            # server would then be shared silently instead of failing here. Several workers
            # (ROOST_WORKERS) do share it, the kernel spreading connections over them; their
            # supervisor has checked that the port was free (service/server.py).
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    # The generated servicer answers UNIMPLEMENTED for every RPC; ours overrides those it serves.
    servicer_class = type(
        "RoostInferenceServicer",
        (InferenceServicer, service_pb2_grpc.GRPCInferenceServiceServicer),
        {},
    )
    servicer = servicer_class(state, keys, service_pb2, grpc.StatusCode, version)
    _add_servicer(server, servicer, grpc, service_pb2)
    target = _target(settings.host, settings.grpc_port)
    credentials, security = _server_credentials(grpc, settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, credentials)
    except RuntimeError as exc:  # grpcio >= 1.50 raises; older versions returned 0
        raise RuntimeError(f"gRPC cannot listen on {target}: {exc}") from None
    if not port:
        raise RuntimeError(f"gRPC cannot listen on {target}")
    await server.start()
    # In-flight requests end by their deadline at the latest: wait that long on shutdown.
    running = GrpcServer(server, settings.host, int(port), settings.request_timeout_s)
    log.info("serving the Open Inference Protocol over gRPC on %s%s", running.address, security)
    return running


def _server_credentials(grpc: Any, settings: ServiceSettings) -> tuple[Any, str]:
    """TLS from the files HTTPS is served with (ROOST_TLS_*), and how the log says it; None:
    plaintext. A client certificate is required when ROOST_TLS_CA_CERTS is set, as over HTTP."""
    tls = tls_files(settings)
    if tls is None:
        return None, ""
    ca = None if tls.ca_certs is None else tls.ca_certs.read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(tls.keyfile.read_bytes(), tls.certfile.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
    return credentials, " (TLS)" if ca is None else " (TLS, client certificates required)"


def _import_grpc() -> tuple[Any, Any, Any]:
    try:
        import grpc  # first: tritonclient.grpc may already be imported without it
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except (ImportError, RuntimeError) as exc:
        # tritonclient.grpc turns a missing grpcio into a RuntimeError, and its generated
        # stubs raise one when grpcio is older than they were generated for.
        raise GrpcExtraMissing(
            f"ROOST_GRPC_PORT is set, but serving gRPC needs the grpc extra: {GRPC_EXTRA} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return grpc, service_pb2, service_pb2_grpc


def _add_servicer(server: Any, servicer: Any, grpc: Any, service_pb2: Any) -> None:
    """Serve every RPC of `inference.GRPCInferenceService` on `servicer`, as the generated
    `add_GRPCInferenceServiceServicer_to_server` does, except that ModelInfer receives its
    request still serialized: gRPC would parse it on the event loop, whatever it holds, where
    `InferenceServicer.ModelInfer` first checks what it holds (`grpc_codec`)."""
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        streaming = (method.client_streaming, method.server_streaming)
        make_handler = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[streaming]
        request_class = getattr(service_pb2, method.input_type.name)
        response_class = getattr(service_pb2, method.output_type.name)
        handlers[method.name] = make_handler(
            getattr(servicer, method.name),
            request_deserializer=None if method.name == "ModelInfer" else request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class InferenceServicer:
    """The RPCs Roost serves; mixed in front of the generated `GRPCInferenceServiceServicer`.

    `pb` is `tritonclient.grpc.service_pb2` and `status_codes` is `grpc.StatusCode`, passed in
    so this module imports neither. `context` is a `grpc.aio.ServicerContext`.
    """

    def __init__(
        self, state: ServiceState, keys: AcceptedKeys, pb: Any, status_codes: Any, version: str
    ) -> None:
        self._state = state
        self._keys = keys
        self._pb = pb
        self._codes = status_codes
        self._version = version

    # --- health and metadata -----------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (proto names)
        self._begin(context)
        return self._pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._begin(context)
        ready, _ = self._state.registry.readiness()
        return self._pb.ServerReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._begin(context)
        return self._pb.ServerMetadataResponse(
            name=oip.SERVER_NAME, version=self._version, extensions=oip.EXTENSIONS
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def answer() -> Any:
            self._authorize(context)
            version = version_selector(request.version)  # a malformed version is INVALID_ARGUMENT
            try:
                self._route(request.name, version)
            except ServiceError:
                # As Triton: a model or version that is not ready, or not there, is
                # ready=false, not an error.
                return self._pb.ModelReadyResponse(ready=False)
            return self._pb.ModelReadyResponse(ready=True)

        return await self._answer(context, answer)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def answer() -> Any:
            self._authorize(context)
            served = self._route(request.name, version_selector(request.version))
            versions = sorted(self._state.registry.models()[served.name].served)
            meta: dict[str, Any] = oip.model_metadata(served.name, versions, served)
            tensor = self._pb.ModelMetadataResponse.TensorMetadata
            return self._pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]],
                outputs=[tensor(**t) for t in meta["outputs"]],
            )

        return await self._answer(context, answer)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Every model version the registry knows, in Triton's states (model_repository)."""

        async def answer() -> Any:
            self._authorize(context)
            index = self._pb.RepositoryIndexResponse.ModelIndex
            rows = oip.repository_index(self._state.registry, request.ready)
            models = [
                index(name=r.name, version=r.version, state=r.state, reason=r.reason) for r in rows
            ]
            return self._pb.RepositoryIndexResponse(models=models)

        return await self._answer(context, answer)

    # --- inference ---------------------------------------------------------------------------

    async def ModelInfer(self, request: bytes, context: Any) -> Any:  # noqa: N802
        """`request`: the serialized ModelInferRequest (see `_add_servicer`)."""
        self._begin(context)
        try:
            self._authorize(context)  # before anything is counted, as /v1's key check
            scan = scan_request(request)  # what to route by, without parsing the message
        except ServiceError as exc:
            await self._abort(context, exc)
        state = self._state
        settings = state.settings
        timeout_s = settings.request_timeout_s
        client_s = context.time_remaining()  # the client's own deadline, if it set one
        deadline_is_clients = client_s is not None and client_s < timeout_s
        if client_s is not None:
            timeout_s = min(timeout_s, max(0.0, client_s))
        deadline = time.monotonic() + timeout_s

        def version_of(name: str) -> VersionSelector:
            _check_name(name)
            return version_selector(scan.model_version)

        # Counted in /v1's roost_requests_total with an HTTP-equivalent status as the code label
        # (the status the same request gets over REST: 200, 400, 404, 413, 503, 504, 499, 500),
        # not the gRPC code, so the dashboards and alerts built on it cover gRPC too.
        error: ServiceError
        try:
            async with admitted(
                state,
                scan.model_name,
                version_of,
                deadline,
                status_of=oip.protocol_status,
                deadline_is_clients=deadline_is_clients,
            ) as admission:
                served = admission.served
                # The message is already read, but count it as /v1 counts bodies: once admitted.
                admission.count_body_bytes(len(request))
                limits = oip.input_limits(served, settings)
                args = (request, scan, limits, self._pb.ModelInferRequest)
                if scan.parses_on_loop:
                    read = read_request(*args)
                else:  # large, or many typed values: on the decode pool, while the loop serves
                    read = await oip.off_loop(state, deadline, read_request, *args)
                scores = await oip.infer(state, admission.route, read.tensor, deadline)
                with span_around(state.tracer, "roost.answer"):
                    response = self._pb.ModelInferResponse(
                        model_name=served.name, model_version=str(served.version), id=read.id
                    )
                    add_outputs(response, scores, read.outputs, served.artifacts.labels)
                return response
        except ServiceError as exc:
            error = exc
        except Exception:  # counted as a 500 by `admitted`; cancellation is not caught here
            log.exception("gRPC ModelInfer failed")
            error = ServiceError("internal server error")
        await self._abort(context, error)

    # --- helpers -----------------------------------------------------------------------------

    def _route(self, name: str, version: VersionSelector) -> ServedVersion:
        registry = self._state.registry
        name = name or registry.default_model()
        _check_name(name)
        return registry.get(name, version)

    def _authorize(self, context: Any) -> None:
        """As /v1 and /v1/models: when ROOST_API_KEYS is set, a key in the call's metadata."""
        keys = self._keys.classify
        if not keys:
            return
        metadata = {m.key: str(m.value) for m in context.invocation_metadata() or ()}
        check_key(presented_key(metadata), keys)

    def _begin(self, context: Any) -> None:
        """The call's request id (the client's `x-request-id` metadata, or a new one): in this
        call's context for its log lines, and sent back as trailing metadata."""
        offered = next(
            (
                str(m.value)
                for m in context.invocation_metadata() or ()
                if m.key == REQUEST_ID_HEADER
            ),
            None,
        )
        request = RequestContext(accepted_request_id(offered))
        CURRENT.set(request)  # each call runs in its own task
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request.request_id),))

    async def _answer(self, context: Any, answer: Callable[[], Awaitable[_T]]) -> _T:
        """`answer()`, or the call aborted with the gRPC code of the ServiceError it raised."""
        self._begin(context)
        try:
            return await answer()
        except ServiceError as exc:
            error = exc
        except Exception:
            log.exception("gRPC request failed")
            error = ServiceError("internal server error")
        await self._abort(context, error)

    async def _abort(self, context: Any, error: ServiceError) -> NoReturn:
        code = getattr(self._codes, grpc_code_name(error.status_code))
        retry_after = (error.headers or {}).get("Retry-After")
        trailers = (("retry-after", retry_after),) if retry_after else ()
        request_id = current_request_id()
        if request_id is not None:
            trailers += ((REQUEST_ID_HEADER, request_id),)
        await context.abort(code, error.message, trailing_metadata=trailers)
        raise AssertionError("context.abort returns only by raising")


def _check_name(name: str) -> None:
    if len(name) > _MAX_NAME_LENGTH:
        raise InvalidParameter(f"model names are at most {_MAX_NAME_LENGTH} characters")
