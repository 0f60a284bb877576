"""Servers the tests run for real on 127.0.0.1: Roost (`python -m service`) and others.

A plain module (like modelkit), so test files import it by name: `from servers import RoostServer`.
The loopback processes, free ports and the /metrics reader are bench/harness.py's, shared with
the benchmarks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from bench.harness import LoopbackProcess, Server, free_port, roost_command, sample, samples

__all__ = [
    "ADMIN_KEY",
    "LoopbackProcess",
    "RoostServer",
    "free_port",
    "require_program",
    "sample",
    "samples",
]

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


class RoostServer(Server):
    """`python -m service` in a subprocess, as a user starts it, returned once live (not
    necessarily ready: `wait_ready`); stopped at teardown."""

    stop_timeout_s = 20.0

    def __init__(self, repo: Path, log_path: Path, **env: str) -> None:
        settings = {"ROOST_POLL_INTERVAL_S": "0", "ROOST_ADMIN_API_KEYS": ADMIN_KEY, **env}
        super().__init__(
            roost_command(repo), settings, "/healthz", log_path=log_path, ready_timeout_s=60
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self.client.get("/readyz").status_code == 200, timeout, "ready")

    def reload(self) -> httpx.Response:
        return self.client.post("/v1/repository/reload", headers={"X-API-Key": ADMIN_KEY})
