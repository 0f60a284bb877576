"""Shared fixtures: temporary model repositories and a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import RoostServer  # noqa: E402  (found through the line above)

if TYPE_CHECKING:
    from buckets import S3Store


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gpu", action="store_true", help="also run the tests marked gpu (they need a CUDA GPU)"
    )
    parser.addoption(
        "--update-docs",
        action="store_true",
        help="write the reliability report into docs/reliability.md (otherwise it goes to "
        "pytest's temporary directory, so a test run leaves the tree as it was)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --gpu, tests that need a GPU are deselected (not skipped): CI has no GPU."""
    if config.getoption("--gpu"):
        return
    deselected = [item for item in items if item.get_closest_marker("gpu")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]


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
            "Written by the test suite (`tests/service/test_reliability_*.py`,",
            "`tests/service/test_hardening_*.py`): every row is a test that passed; a run with",
            "`--update-docs` updates the rows of the tests it ran. Regenerate with",
            "`.venv/bin/python -m pytest tests/service/test_reliability_input.py "
            "tests/service/test_reliability_faults.py tests/service/test_hardening_*.py "
            "--update-docs`.",
            "",
            "| area | what was tried | inputs | result |",
            "|---|---|---|---|",
        ]
        for row in self.merged_with(previous):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def reliability(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReliabilityReport]:
    """The report's rows; written into docs/reliability.md only with --update-docs."""
    report = ReliabilityReport()
    yield report
    if not report.rows:
        return
    previous = RELIABILITY_DOC.read_text() if RELIABILITY_DOC.exists() else ""
    target = (
        RELIABILITY_DOC
        if pytestconfig.getoption("--update-docs")
        else tmp_path_factory.getbasetemp() / "reliability.md"
    )
    target.write_text(report.markdown(previous))


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    """moto's S3 server on loopback, empty, with this process's AWS environment pointing at it
    (boto3 clients made during the test reach it; a subprocess takes `environment()`)."""
    from buckets import S3Store  # moto and boto3: imported only by the tests that use a bucket

    store = S3Store()
    store.start()
    for name, value in store.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield store
    finally:
        if not store.running:
            store.start()  # moto keeps buckets per process: the next test starts empty
        store.reset()
        store.stop()
