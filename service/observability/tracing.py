"""OpenTelemetry traces, configured by the standard ``OTEL_*`` variables; off when none is set.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
``OTEL_TRACES_EXPORTER`` is set (and ``OTEL_SDK_DISABLED`` is not ``true``). The SDK reads the
rest itself: the endpoint, headers, certificate and timeout of the OTLP/HTTP exporter, the
sampler (``OTEL_TRACES_SAMPLER``, ``..._ARG``), the batch processor's queue
(``OTEL_BSP_*``), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``. Off, the server
builds no provider, adds no middleware, and every span helper here is skipped by its caller
(``ServiceState.tracer is None``): a request pays nothing for tracing it does not do. On, a
request the sampler leaves out gets its server span (not recorded) and none of Roost's own
(`recording`).

A request's spans: the protocol's server span (HTTP by the ASGI middleware, gRPC by its
interceptor, both OpenTelemetry's own instrumentation), and under it ``roost.admission``,
``roost.decode`` (per image), ``roost.queue_wait`` and ``roost.inference`` (per image, with
the batch's size), and ``roost.answer``. Decodes and batches run on other threads and serve
several requests at once, so each span is recorded once its work is over, with the times it
began and ended and the request's own context as its parent (`record_span`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SWITCHES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
)
"""Any of these set turns tracing on."""

EXPORTERS = ("otlp", "console")
"""Values ``OTEL_TRACES_EXPORTER`` may list (comma-separated), or ``none``."""

OTLP_PROTOCOL = "http/protobuf"
"""The one OTLP transport the server installs (a collector's port 4318)."""

TRACER_NAME = "roost"
EXCLUDED_URLS = "/healthz,/readyz,/metrics,/v2/health/live,/v2/health/ready"
"""Probe paths get no server span (they would outnumber the requests an operator looks for)."""


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable asks for what the server cannot do."""


def tracer_provider_from_environ(
    environ: Mapping[str, str], service_version: str
) -> TracerProvider | None:
    """The server's tracer provider, exporting as the ``OTEL_*`` variables say; None when they
    leave tracing off. The provider's batch processor starts its export thread at once: the
    caller owns it and calls `shutdown()` (which exports what is queued) when it stops.

    Raises:
        TracingConfigError: an exporter or OTLP protocol the server does not install.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if not any(environ.get(name) for name in SWITCHES):
        return None
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    names = [n for n in names if n and n != "none"]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: the server exports "
            f"traces with {' or '.join(EXPORTERS)} (or none), not {', '.join(unknown)}"
        )
    if not names:
        return None
    protocol = environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if "otlp" in names and protocol not in ("", OTLP_PROTOCOL):
        raise TracingConfigError(
            f"OTLP protocol {protocol!r}: the server sends traces over OTLP/HTTP "
            f"({OTLP_PROTOCOL}, a collector's port 4318); unset the variable or set it to "
            f"{OTLP_PROTOCOL}"
        )

    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    resource = Resource.create({SERVICE_VERSION: service_version})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "roost"}))
    # shutdown_on_exit=False: the server's lifespan shuts it down, not an atexit hook.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Spans are queued and sent by the processor's thread: a slow or absent collector
        # never holds a request (a full queue drops spans, as OTEL_BSP_MAX_QUEUE_SIZE says).
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in names:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return provider


def recording(tracer: Tracer | None) -> Tracer | None:
    """`tracer` when the current request's span is recorded; None when tracing is off or the
    sampler left this request out (its spans would be dropped: they are not made at all)."""
    if tracer is None or not trace.get_current_span().is_recording():
        return None
    return tracer


def epoch_ns(monotonic_s: float) -> int:
    """A `time.monotonic()` reading as the wall-clock nanoseconds spans are stamped with."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


def record_span(
    tracer: Tracer,
    name: str,
    start_ns: int,
    end_ns: int | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    error: BaseException | None = None,
    parent: otel_context.Context | None = None,
) -> None:
    """A finished span: from `start_ns` to `end_ns` (now when None), under `parent` (the
    current context when None), marked failed with `error` when given."""
    span = tracer.start_span(name, context=parent, start_time=start_ns, attributes=attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {error}")
    span.end(end_time=end_ns)


@contextlib.contextmanager
def span_around(tracer: Tracer | None, name: str) -> Iterator[None]:
    """A span `name` around the block, under the current context (an exception the block
    raises marks it failed); nothing at all when `tracer` is None or the request is not
    sampled."""
    tracer = recording(tracer)
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name):
        yield
