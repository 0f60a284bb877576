"""Request ids and logs: the client's X-Request-ID (or a new one) on every response, in every
error body and in every log line written for the request; one log format for the app and
uvicorn, text or JSON; probes out of the access log unless asked for."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelkit import publish, solid_png
from tritonclient.grpc import service_pb2, service_pb2_grpc

from service.observability.logs import RequestContextFilter, log_config
from service.request_context import CURRENT, RequestContext, accepted_request_id

PNG = {"content": solid_png((200, 10, 10)), "headers": {"content-type": "image/png"}}


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("two words", False),
     ("caf\u00e9", False), ("", False), (None, False)],
)  # fmt: skip
def test_a_usable_client_id_is_kept_and_any_other_replaced(offered: str | None, kept: bool) -> None:
    accepted = accepted_request_id(offered)
    assert (accepted == offered) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{32}", accepted)


async def test_every_response_carries_the_id_and_errors_quote_it(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    roost = await start_app(repo, max_upload_bytes=64 * 1024)
    await roost.wait_ready()
    ok = await roost.client.post(
        "/v1/classify",
        content=PNG["content"],
        headers={**PNG["headers"], "X-Request-ID": "order-42"},
    )
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "order-42"
    made = await roost.client.post("/v1/classify", **PNG)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    missing = await roost.client.post("/v1/classify?model=nope", **PNG)
    assert missing.status_code == 404
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    # refused by the body middleware, before any route: the id is there too
    too_big = await roost.client.post(
        "/v1/classify", content=b"x" * (128 * 1024), headers={"content-type": "image/png"}
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["request_id"] == too_big.headers["x-request-id"]
    assert (await roost.client.get("/healthz")).headers["x-request-id"]


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("roost.test", logging.INFO, __file__, 1, message, None, None)


def _format(log_format: str, record: logging.LogRecord) -> str:
    config = log_config("info", log_format)["formatters"]["roost"]
    if "()" in config:
        from pythonjsonlogger.json import JsonFormatter

        formatter: logging.Formatter = JsonFormatter(
            config["fmt"], rename_fields=config["rename_fields"],
            reserved_attrs=config["reserved_attrs"],
        )  # fmt: skip
    else:
        formatter = logging.Formatter(config["format"])
    RequestContextFilter().filter(record)
    return formatter.format(record)


def test_text_and_json_lines_carry_the_request() -> None:
    token = CURRENT.set(RequestContext("req-7", model="colours", version=3))
    try:
        text = _format("text", _record("answered"))
        line = json.loads(_format("json", _record("answered")))
    finally:
        CURRENT.reset(token)
    assert text.endswith("INFO roost.test: answered [request_id=req-7 model=colours version=3]")
    assert {k: line[k] for k in ("level", "logger", "message", "request_id", "model", "version")} \
        == {"level": "INFO", "logger": "roost.test", "message": "answered",
            "request_id": "req-7", "model": "colours", "version": 3}  # fmt: skip
    assert "time" in line and "request" not in line
    outside = _format("text", _record("started"))
    assert outside.endswith("INFO roost.test: started")


def _json_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for text in log.splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
    return lines


@pytest.mark.slow
def test_a_real_server_logs_json_with_request_ids_and_no_probes(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo, ROOST_LOG_FORMAT="json")
    server.wait_ready()
    answer = server.client.post(
        "/v1/classify", content=PNG["content"],
        headers={**PNG["headers"], "X-Request-ID": "trace-me"},
    )  # fmt: skip
    assert answer.status_code == 200
    server.client.get("/metrics")
    server.stop()
    log = server.log()
    lines = _json_lines(log)
    assert lines and all(not text.startswith("INFO:") for text in log.splitlines()), (
        "uvicorn's own lines are JSON too"
    )
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    (access,) = [line for line in lines if line.get("request_id") == "trace-me"]
    assert access["logger"] == "roost.access"
    assert (access["method"], access["path"], access["status"]) == ("POST", "/v1/classify", 200)
    assert access["model"] == "colours" and access["version"] == 1
    assert access["duration_ms"] > 0
    probes = [line for line in lines if line.get("path") in {"/healthz", "/readyz", "/metrics"}]
    assert probes == [], "probes stay out of the access log by default"


@pytest.mark.slow
def test_probes_come_back_when_asked_for(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    server = start_server(repo, ROOST_ACCESS_LOG_PROBES="true")
    server.wait_ready()
    server.client.get("/metrics")
    line = r"roost\.access: GET /metrics 200 [\d.]+ ms \[request_id=\w+\]"
    server.wait_for(lambda: re.search(line, server.log()) is not None, 10, "the access line")


async def test_grpc_calls_get_the_id_back_as_trailing_metadata(repo: Path, start_app) -> None:  # type: ignore[no-untyped-def]
    publish(repo, "colours", 1)
    roost = await start_app(repo, grpc_port=0)
    await roost.wait_ready()
    target = f"127.0.0.1:{roost.app.state.grpc.port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        call = stub.ServerLive(service_pb2.ServerLiveRequest(), metadata=(("x-request-id", "g-1"),))
        await call
        assert ("x-request-id", "g-1") in tuple(await call.trailing_metadata())
        failing = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="nope"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await failing
        trailers = dict(refused.value.trailing_metadata())
        assert re.fullmatch(r"[0-9a-f]{32}", trailers["x-request-id"])
