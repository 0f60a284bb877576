"""Traces as an operator receives them: `python -m service` with only the standard OTEL_*
variables set, sending OTLP/HTTP on loopback to a real, independent OTLP receiver.

The receiver is Arize Phoenix (a well-kept open-source trace server from PyPI that accepts
OTLP/HTTP at `/v1/traces` and lists what it stored at `/v1/projects/{project}/spans/otlpv1`).
The OpenTelemetry Collector and Jaeger are Go binaries that neither Debian nor PyPI ship, and
this machine reaches no other registry. Phoenix brings ~150 packages, so it is installed once
into its own venv under the user's cache folder (about a minute), never into the project's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from modelkit import publish, solid_png

from bench.harness import LoopbackProcess, free_port

pytestmark = pytest.mark.slow

PHOENIX = "arize-phoenix==20.26.1"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PNG = solid_png((200, 10, 10))


def phoenix_venv() -> Path:
    """A venv holding `PHOENIX`, made once per machine (a marker file says it is complete)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "roost-tests" / PHOENIX.replace("==", "-")
    done = venv / "installed"
    if not done.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", PHOENIX]
        installed = subprocess.run(pip, capture_output=True, text=True, timeout=900)
        assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
        done.touch()
    return venv


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackProcess]:
    """Phoenix serving HTTP (OTLP included) on a free loopback port, its data in a temp folder."""
    venv = phoenix_venv()
    work = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    process = LoopbackProcess(
        [str(venv / "bin" / "phoenix"), "serve"], port, work / "phoenix.log", env
    )
    try:
        process.wait_for(
            lambda: process.client.get("/healthz", timeout=2).status_code == 200, 180, "serving"
        )
        yield process
    finally:
        process.stop()


def received_spans(receiver: LoopbackProcess, trace_id: str | None = None) -> list[dict[str, Any]]:
    """Every span the receiver stored (all pages), or those of one trace."""
    spans: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = receiver.client.get("/v1/projects/default/spans/otlpv1", params=params).json()
        spans += page["data"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return [s for s in spans if trace_id is None or s["trace_id"] == trace_id]


def attributes(span: dict[str, Any]) -> dict[str, object]:
    values = {}
    for item in span["attributes"] or []:
        value = item["value"]
        values[item["key"]] = next(v for v in value.values() if v is not None)
    return values


def until(condition: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise TimeoutError("the receiver did not get the spans")


def test_spans_reach_a_real_otlp_receiver(
    repo: Path, start_server: Any, receiver: LoopbackProcess
) -> None:
    publish(repo, "colours", 1)
    grpc_port = free_port()
    server = start_server(
        repo,
        ROOST_GRPC_PORT=str(grpc_port),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_SERVICE_NAME="roost-under-test",
        OTEL_BSP_SCHEDULE_DELAY="200",  # ms: the batch processor sends spans soon
    )
    server.wait_ready()
    r = server.client.post(
        "/v1/classify",
        content=PNG,
        headers={
            "content-type": "image/png",
            "x-request-id": "otlp-1",
            "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01",
        },
    )
    assert r.status_code == 200
    # a gRPC call from Triton's own client
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    pixels = grpcclient.InferInput("PIXELS", [1, 32, 32, 3], "UINT8")
    pixels.set_data_from_numpy(np.zeros((1, 32, 32, 3), np.uint8))
    assert client.infer("colours", [pixels]).get_response().model_name == "colours"
    client.close()

    http_spans = until(lambda: (s := received_spans(receiver, CALLER_TRACE)) and len(s) >= 6 and s)
    names = {s["name"] for s in http_spans}
    # Phoenix stores every span's kind as INTERNAL: the server span is the caller's child
    (root,) = [s for s in http_spans if s["parent_span_id"] == "00f067aa0ba902b7"]
    assert root["name"] == "POST /v1/classify"
    for name in ("roost.admission", "roost.decode", "roost.queue_wait", "roost.inference"):
        (span,) = [s for s in http_spans if s["name"] == name]
        assert span["parent_span_id"] == root["span_id"], name
    assert "roost.answer" in names
    admission = next(s for s in http_spans if s["name"] == "roost.admission")
    assert attributes(admission)["roost.request_id"] == "otlp-1"
    inference = next(s for s in http_spans if s["name"] == "roost.inference")
    assert attributes(inference)["roost.batch_size"] == 1

    grpc_root = until(
        lambda: next(
            (s for s in received_spans(receiver) if s["name"].endswith("/ModelInfer")),
            None,
        )
    )
    grpc_trace = received_spans(receiver, grpc_root["trace_id"])
    assert {"roost.admission", "roost.inference", "roost.answer"} <= {s["name"] for s in grpc_trace}
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-2000:]


def test_an_unreachable_receiver_costs_no_request(repo: Path, start_server: Any) -> None:
    """Spans are queued and dropped, never waited for: every request is answered."""
    publish(repo, "colours", 1)
    server = start_server(repo, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    server.wait_ready()
    codes = [
        server.client.post("/v1/classify", content=PNG, headers={"content-type": "image/png"})
        for _ in range(20)
    ]
    assert [r.status_code for r in codes] == [200] * 20
    assert json.loads(codes[-1].text)["results"]
    server.stop()
    assert server.process.returncode == 0


def test_a_bad_otel_setting_stops_the_start(repo: Path, tmp_path: Path) -> None:
    publish(repo, "colours", 1)
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"}
    done = subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", "--model-repo", str(repo)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "OTEL_TRACES_EXPORTER='zipkin'" in done.stderr
