"""Servers the tests run for real on 127.0.0.1: Roost (`python -m service`) and others.

A plain module (like modelkit), so test files import it by name: `from servers import RoostServer`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

ADMIN_KEY = "test-admin-key"


def require_program(name: str, debian_package: str) -> str:
    """The path of a system program a test needs; a failure (never a skip) when it is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: tests/run installs it (as root), "
            f"or: sudo apt-get install {debian_package}",
            pytrace=False,
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackProcess:
    """A server subprocess on 127.0.0.1, its output in a log file; `stop()` ends it."""

    def __init__(
        self, command: list[str], port: int, log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args[0]} exited early:\n{self.log()}")
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"not {what} after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class RoostServer(LoopbackProcess):
    """`python -m service` in a subprocess, as a user starts it; stopped at teardown."""

    def __init__(self, repo: Path, log_path: Path, **env: str) -> None:
        port = free_port()
        environment = {
            **os.environ,
            "ROOST_POLL_INTERVAL_S": "0",
            "ROOST_ADMIN_API_KEYS": ADMIN_KEY,
            **env,
        }
        command = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-repo",
            str(repo),
        ]
        super().__init__(command, port, log_path, environment)
        self.wait_for(lambda: self.client.get("/healthz").status_code == 200, 60, "live")

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.client.get("/readyz").status_code == 200, timeout, "ready")

    def reload(self) -> httpx.Response:
        return self.client.post("/v1/repository/reload", headers={"X-API-Key": ADMIN_KEY})


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of the first sample of `name` in a /metrics text whose labels include `labels`;
    0 when there is none (a counter never incremented is not exported)."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0
