"""The payload-logging cost bench runs end to end (a smoke run: no assertions on times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

pytestmark = pytest.mark.slow


def test_compare_payload_log_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench.compare_payload_log", "--model-repo", str(repo), "--model", "colours",
            "--version", "1", "--set", "224px", "--concurrency", "2", "--requests", "10",
            "--seconds", "3", "--repeats", "1", "--out", str(out),
            "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    report = json.loads((out / "payload_log.json").read_text())
    by_variant = report["results"]["c2"]
    assert set(by_variant) == {"plain", "logged"}
    assert all(e["errors"] == 0 and e["requests"] == 10 for e in by_variant.values())
    assert by_variant["plain"]["throughput_over_plain"] == 1.0
    assert report["records_written"] == 10, "every answer of `logged` was recorded"
