"""`run_bench`: a benchmark's command line run to completion from the repository root."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_bench() -> Callable[..., str]:
    """`run_bench("bench.compare_cache", "--out", ...)` runs `python -m ...` and returns its
    output; a non-zero exit fails the test with that output."""

    def run(*args: str, timeout_s: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return run
