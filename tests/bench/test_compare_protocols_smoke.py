"""The protocol comparison runs end to end (a smoke run: tiny load, no assertions on times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

pytestmark = pytest.mark.slow


def test_compare_protocols_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench.compare_protocols", "--model-repo", str(repo),
            "--model", "colours", "--set", "224px", "--concurrency", "1,4", "--requests", "12",
            "--seconds", "3", "--repeats", "1", "--out", str(out),
            "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    report = json.loads((out / "protocols.json").read_text())
    for level in ("c1", "c4"):
        by_protocol = report["results"][level]
        assert set(by_protocol) == {"v1-multipart", "v2-binary", "v2-grpc"}
        for entry in by_protocol.values():
            assert entry["errors"] == 0 and entry["requests"] == 12
        assert by_protocol["v1-multipart"]["throughput_over_v1"] == 1.0
