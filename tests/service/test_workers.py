"""Several server processes (ROOST_WORKERS): one port, each worker loaded before it takes
connections, one /metrics that sums every worker, a clean SIGTERM. Real uvicorn workers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from modelkit import publish, solid_png
from prometheus_client import Gauge
from servers import RoostServer, free_port, sample, samples

from bench.harness import resident_bytes
from service.observability.metrics import ServiceMetrics

RED = solid_png((255, 0, 0))


@pytest.mark.slow
def test_two_workers_serve_one_port_and_metrics_sum_over_both(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1)
    scratch = tmp_path / "tmp"  # where the server makes its multiprocess metrics folder
    scratch.mkdir()
    grpc_port = free_port()
    server = RoostServer(
        repo,
        tmp_path / "server.log",
        ROOST_WORKERS="2",
        ROOST_MAX_QUEUE_SIZE="64",
        ROOST_GRPC_PORT=str(grpc_port),
        TMPDIR=str(scratch),
    )
    try:
        # A worker takes connections only once loaded: the first answer is already "ready".
        assert server.client.get("/readyz").status_code == 200
        # The second worker may still be loading (its place taken by the first meanwhile):
        # wait until both count themselves, so that the sums below are over two.
        for _ in range(600):  # hang guard: 60 s
            if sample(httpx.get(f"{server.url}/metrics").text, "roost_server_processes") == 2:
                break
            time.sleep(0.1)
        # the supervisor's children: both workers (and multiprocessing's resource tracker)
        worker_rss = [resident_bytes(int(pid)) for pid in children(server.process.pid)]
        answers = 0
        for _ in range(12):  # a new connection each time: either worker may accept it
            response = httpx.post(
                f"{server.url}/v1/classify?model=colours",
                content=RED,
                headers={"Content-Type": "image/png"},
            )
            assert response.status_code == 200, response.text
            answers += 1
        for _ in range(6):  # gRPC on its shared port, a new channel each time
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            try:
                images = grpcclient.InferInput("IMAGE", [1], "BYTES")
                images.set_data_from_numpy(np.array([RED], dtype=np.object_))
                result = client.infer("colours", [images])
                assert result.as_numpy("PROBABILITIES").argmax() == 0  # red
                answers += 1
            finally:
                client.close()
        for _ in range(4):  # whichever worker answers the scrape, the figures are the sums
            text = httpx.get(f"{server.url}/metrics").text
            assert sample(text, "roost_server_processes") == 2
            # each worker's queue holds 64: only a sum over both says 128
            assert sample(text, "roost_queue_capacity", model="colours", version="1") == 128
            assert sample(text, "roost_requests_total", model="colours", code="200") == answers
            assert sample(text, "roost_model_version_ready", model="colours", version="1") == 1
            assert sample(text, "roost_ready") == 1  # the answering worker's own readiness
            # the server's CPU and memory: the supervisor's and both workers', not one's
            assert sample(text, "process_cpu_seconds_total") > 0
            assert sample(text, "process_resident_memory_bytes") > 1.5 * max(worker_rss)
        assert len(list(scratch.glob("roost-metrics-*"))) == 1  # the metrics folder, while serving
        # A worker killed without its shutdown: uvicorn starts another, and the sums leave the
        # dead one out (its live gauges would otherwise still count it).
        first_worker = re.search(r"Started server process \[(\d+)\]", server.log())
        assert first_worker is not None
        os.kill(int(first_worker.group(1)), signal.SIGKILL)
        server.wait_for(
            lambda: server.log().count("serving colours version 1 on") == 3, 60, "replaced"
        )
        for _ in range(4):
            text = httpx.get(f"{server.url}/metrics").text
            assert sample(text, "roost_server_processes") == 2
            assert sample(text, "roost_queue_capacity", model="colours", version="1") == 128
        log = server.log()
        assert log.count("Started server process") == 3, log
        # each worker configures logging as one server process does: Roost's lines are there
        assert log.count("serving colours version 1 on CPUExecutionProvider") == 3, log
        assert log.count(f"Open Inference Protocol over gRPC on 127.0.0.1:{grpc_port}") == 3
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log()
    assert list(scratch.glob("roost-metrics-*")) == []  # gone with the server
    assert "Traceback" not in server.log()


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arguments", "env", "message"),
    [
        (["--port", "0"], {}, "give them (not 0)"),
        (["--port", "8001"], {"ROOST_GRPC_PORT": "0"}, "give them (not 0)"),
    ],
)
def test_workers_refuse_what_they_cannot_share(
    tmp_path: Path, arguments: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service", "--workers", "2", "--model-repo", str(tmp_path)]
        + arguments,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.slow
def test_a_grpc_port_in_use_is_refused_before_the_workers_start(tmp_path: Path) -> None:
    """The workers share their gRPC port (SO_REUSEPORT), which would also share it with
    another program already listening there: the supervisor checks first."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "service", "--workers", "2", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ROOST_GRPC_PORT": str(port), "ROOST_MODEL_REPO": str(tmp_path)},
        )
    assert done.returncode == 2
    assert f"gRPC cannot listen on 127.0.0.1:{port}: in use" in done.stderr


def test_forget_drops_a_series_in_one_process() -> None:
    metrics = ServiceMetrics()
    assert metrics.multiprocess_dir is None
    gauge: Gauge = metrics.queue_capacity
    gauge.labels("colours", "1").set(64)
    metrics.forget(gauge, "colours", "1")
    metrics.forget(gauge, "colours", "1")  # never set, or already gone: no error
    assert not samples(metrics.exposition().decode(), "roost_queue_capacity")
