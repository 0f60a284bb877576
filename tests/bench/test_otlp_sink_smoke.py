"""`python -m bench.otlp_sink`, the discarding OTLP/HTTP endpoint the tracing benchmark points a
traced server at (docs/benchmarks-journal.md): a server's spans reach it and it counts them."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modelkit import publish, solid_png

from bench.harness import free_port

pytestmark = pytest.mark.slow


def test_a_traced_server_exports_into_the_sink(repo: Path, start_server: Any) -> None:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        assert "discarding OTLP/HTTP" in sink.stdout.readline()
        publish(repo, "colours", 1)
        server = start_server(repo, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
        server.wait_ready()
        for _ in range(5):
            r = server.client.post(
                "/v1/classify", content=solid_png((9, 9, 9)), headers={"content-type": "image/png"}
            )
            assert r.status_code == 200
        server.stop()  # the server sends what it has queued before it exits
        assert server.process.returncode == 0
    finally:
        sink.send_signal(signal.SIGINT)
        out, _ = sink.communicate(timeout=30)
    counts = re.search(r"received (\d+) exports, (\d+) bytes", out)
    assert counts is not None, out
    assert int(counts[1]) >= 1 and int(counts[2]) > 0
