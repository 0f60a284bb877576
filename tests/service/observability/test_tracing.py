"""Traces: which OTEL_* settings turn them on, and the spans a request makes over HTTP and gRPC.

In-process, the app's spans go to the SDK's own in-memory exporter; what a real collector
receives over OTLP/HTTP is checked in tests/service/observability/test_tracing_otlp.py.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelkit import publish, solid_png
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.observability.logs import RequestContextFilter
from service.observability.tracing import (
    TracingConfigError,
    recording,
    tracer_provider_from_environ,
)
from service.request_context import CURRENT, RequestContext

PNG = {"content": solid_png((200, 10, 10)), "headers": {"content-type": "image/png"}}
PER_REQUEST = {"roost.admission", "roost.decode", "roost.queue_wait", "roost.inference"}


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "roost-eu"},  # naming the service alone exports nothing
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_tracing_is_off_unless_an_exporter_or_endpoint_is_set(environ: dict[str, str]) -> None:
    assert tracer_provider_from_environ(environ, "1") is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "jaeger"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "http/protobuf",
        ),
    ],
)
def test_what_the_server_cannot_export_stops_the_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError, match=named):
        tracer_provider_from_environ(environ, "1")


def test_an_endpoint_turns_tracing_on_and_names_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracer_provider_from_environ(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "1.2.3"
    )
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "roost"
        assert provider.resource.attributes["service.version"] == "1.2.3"
    finally:
        provider.shutdown()


def test_otel_service_name_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "roost-eu")
    provider = tracer_provider_from_environ({"OTEL_TRACES_EXPORTER": "console"}, "1")
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "roost-eu"
    finally:
        provider.shutdown()


Traced = Callable[..., Awaitable[tuple[Any, InMemorySpanExporter]]]
"""`start_app`'s InProcessRoost (tests/service/conftest.py) and the spans it made."""


@pytest.fixture
def traced(repo: Path, start_app: Any) -> Traced:
    """`await traced(**settings)`: a ready app serving `colours` 1, its spans (none yet) kept
    by the SDK's in-memory exporter."""

    async def start(**settings: Any) -> tuple[Any, InMemorySpanExporter]:
        publish(repo, "colours", 1)
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        roost = await start_app(repo, tracer_provider=provider, **settings)
        await roost.wait_ready()
        exporter.clear()
        return roost, exporter

    return start


def by_name(spans: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        if span.context.trace_id == trace_id:
            named.setdefault(span.name, []).append(span)
    return named


def server_span(spans: tuple[ReadableSpan, ...], path_part: str) -> ReadableSpan:
    servers = [s for s in spans if s.kind is SpanKind.SERVER and path_part in s.name]
    assert len(servers) == 1, [s.name for s in spans]
    return servers[0]


async def test_a_request_s_spans_hang_under_its_server_span(traced: Traced) -> None:
    roost, exporter = await traced()
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = await roost.client.post(
        "/v1/classify",
        content=PNG["content"],
        headers={
            **PNG["headers"],
            "X-Request-ID": "order-7",
            # W3C trace context: the caller's trace continues in the server
            "traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01",
        },
    )
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    root = server_span(spans, "/v1/classify")
    assert root.context.trace_id == int(caller_trace, 16)
    named = by_name(spans, root.context.trace_id)
    # the server span and ours: no span per ASGI message
    assert named.keys() == PER_REQUEST | {"roost.answer", root.name}
    for name in PER_REQUEST | {"roost.answer"}:
        (span,) = named[name]
        assert span.parent is not None and span.parent.span_id == root.context.span_id, name
        assert root.start_time <= span.start_time <= span.end_time <= root.end_time, name
    admission = named["roost.admission"][0].attributes
    assert admission == {
        "roost.model": "colours",
        "roost.version": "1",
        "roost.request_id": "order-7",
    }
    assert named["roost.inference"][0].attributes == {"roost.batch_size": 1}
    queued, ran = named["roost.queue_wait"][0], named["roost.inference"][0]
    assert queued.end_time <= ran.start_time
    assert named["roost.decode"][0].attributes == {"roost.image_bytes": len(PNG["content"])}
    # probes make no spans
    exporter.clear()
    assert (await roost.client.get("/readyz")).status_code == 200
    assert (await roost.client.get("/metrics")).status_code == 200
    assert exporter.get_finished_spans() == ()


async def test_every_image_of_a_batch_request_gets_its_spans(traced: Traced) -> None:
    roost, exporter = await traced()
    files = [("file", (f"{i}.png", solid_png((i * 80, 0, 0)), "image/png")) for i in range(3)]
    r = await roost.client.post("/v1/classify", files=files)
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    named = by_name(spans, server_span(spans, "/v1/classify").context.trace_id)
    assert len(named["roost.decode"]) == len(named["roost.inference"]) == 3
    assert all(1 <= s.attributes["roost.batch_size"] <= 3 for s in named["roost.inference"])


async def test_a_refusal_and_a_bad_image_are_failed_spans(traced: Traced) -> None:
    roost, exporter = await traced()
    missing = await roost.client.post("/v1/classify?model=nope", **PNG)
    assert missing.status_code == 404
    spans = exporter.get_finished_spans()
    (admission,) = by_name(spans, server_span(spans, "/v1/classify").context.trace_id)[
        "roost.admission"
    ]
    assert admission.status.status_code is StatusCode.ERROR
    assert "nope" in (admission.status.description or "")

    exporter.clear()
    broken = await roost.client.post(
        "/v1/classify", content=b"not an image", headers={"content-type": "image/png"}
    )
    assert broken.status_code == 415
    spans = exporter.get_finished_spans()
    named = by_name(spans, server_span(spans, "/v1/classify").context.trace_id)
    (decode,) = named["roost.decode"]
    assert decode.status.status_code is StatusCode.ERROR
    assert "roost.inference" not in named


async def test_grpc_calls_are_traced_with_the_same_spans(traced: Traced) -> None:
    roost, exporter = await traced(grpc_port=0)
    pixels = np.zeros((1, 32, 32, 3), np.uint8)
    request = service_pb2.ModelInferRequest(model_name="colours")
    request.inputs.add(name="PIXELS", datatype="UINT8", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{roost.app.state.grpc.port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = await stub.ModelInfer(request)
    assert response.model_name == "colours"
    spans = exporter.get_finished_spans()
    root = server_span(spans, "ModelInfer")
    named = by_name(spans, root.context.trace_id)
    # decoded pixels: no decode span
    assert {"roost.admission", "roost.queue_wait", "roost.inference", "roost.answer"} <= (
        named.keys()
    )
    assert "roost.decode" not in named
    for name in ("roost.admission", "roost.inference", "roost.answer"):
        assert named[name][0].parent is not None
        assert named[name][0].parent.span_id == root.context.span_id


async def test_without_otel_settings_the_app_has_no_tracer(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    roost = await start_app(repo)
    await roost.wait_ready()
    assert roost.app.state.roost.tracer is None
    assert all("OpenTelemetry" not in m.cls.__name__ for m in roost.app.user_middleware)
    assert (await roost.client.post("/v1/classify", **PNG)).status_code == 200


def test_log_lines_of_a_traced_request_carry_its_trace() -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    token = CURRENT.set(RequestContext("r-1"))
    try:
        with provider.get_tracer("test").start_as_current_span("request") as span:
            traced = logging.LogRecord("roost.access", logging.INFO, __file__, 1, "ok", None, None)
            RequestContextFilter().filter(traced)
        untraced = logging.LogRecord("roost.access", logging.INFO, __file__, 1, "ok", None, None)
        RequestContextFilter().filter(untraced)
    finally:
        CURRENT.reset(token)
    ids = span.get_span_context()
    assert traced.trace_id == format(ids.trace_id, "032x")
    assert traced.span_id == format(ids.span_id, "016x")
    assert traced.request == f" [request_id=r-1 trace_id={traced.trace_id}]"
    assert not hasattr(untraced, "trace_id") and untraced.request == " [request_id=r-1]"


def test_roost_s_spans_are_made_only_for_a_recorded_request() -> None:
    """A request the sampler leaves out costs its server span only."""
    sampled_out = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False).get_tracer("t")
    with sampled_out.start_as_current_span("POST /v1/classify"):
        assert recording(sampled_out) is None
    sampled = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    with sampled.start_as_current_span("POST /v1/classify"):
        assert recording(sampled) is sampled
    assert recording(sampled) is None, "outside a request"
    assert recording(None) is None
