"""Shared fixtures: temporary model repositories and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))


ADMIN_KEY = "test-admin-key"


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


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "model_repo"
    path.mkdir()
    return path


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    servers: list[RoostServer] = []

    def start(repo: Path, **env: str) -> RoostServer:
        server = RoostServer(repo, tmp_path / f"server-{len(servers)}.log", **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


RELIABILITY_DOC = Path(__file__).parent.parent / "docs" / "reliability.md"


class ReliabilityReport:
    """Rows for docs/reliability.md; tests add a row only after their assertions passed."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, area: str, what: str, inputs: object, result: str) -> None:
        self.rows.append((area, what, str(inputs), result))

    def merged_with(self, previous: str) -> list[tuple[str, str, str, str]]:
        """This run's rows plus the previous document's rows for what this run did not try."""
        rows = {(r[0], r[1]): r for r in self.rows}
        for line in previous.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) == 4 and cells[0] != "area" and not line.startswith("|---"):
                rows.setdefault((cells[0], cells[1]), (cells[0], cells[1], cells[2], cells[3]))
        return sorted(rows.values())

    def markdown(self, previous: str = "") -> str:
        lines = [
            "# Reliability: what was tried and what happened",
            "",
            "Written by the test suite (`tests/service/test_reliability_*.py`): every row is a test that",
            "passed; a run updates the rows of the tests it ran. Regenerate with",
            "`.venv/bin/python -m pytest tests/service/test_reliability_input.py "
            "tests/service/test_reliability_faults.py`.",
            "",
            "| area | what was tried | inputs | result |",
            "|---|---|---|---|",
        ]
        for row in self.merged_with(previous):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def reliability() -> Iterator[ReliabilityReport]:
    report = ReliabilityReport()
    yield report
    if report.rows:
        previous = RELIABILITY_DOC.read_text() if RELIABILITY_DOC.exists() else ""
        RELIABILITY_DOC.write_text(report.markdown(previous))
