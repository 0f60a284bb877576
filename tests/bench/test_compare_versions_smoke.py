"""Two versions compared on one server runs end to end (a smoke run: no assertions on times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

pytestmark = pytest.mark.slow


def test_compare_versions_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    for version in (1, 2):
        publish(repo, "colours", version, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench.compare_versions", "--model-repo", str(repo),
            "--model", "colours", "--versions", "1,2", "--set", "224px", "--concurrency", "2",
            "--requests", "10", "--seconds", "3", "--repeats", "1", "--out", str(out),
            "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    by_version = json.loads((out / "versions.json").read_text())["results"]["c2"]
    assert set(by_version) == {"1", "2"}
    assert all(e["errors"] == 0 and e["requests"] == 10 for e in by_version.values())
    assert by_version["1"]["throughput_over_base"] == 1.0
