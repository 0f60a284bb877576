"""`python -m bench memory` runs end to end (a smoke run: no assertions on sizes or times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

pytestmark = pytest.mark.slow


def test_memory_bench_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench", "memory", "--model-repo", str(repo),
            "--versions", "colours/1", "--instances", "1,4", "--repeats", "2",
            "--seconds", "0.1", "--max-batch-size", "4", "--out", str(out),
    )  # fmt: skip
    results = json.loads((out / "memory.json").read_text())["results"]
    assert set(results) == {"colours/1 x1", "colours/1 x4"}
    for cells in results.values():
        assert set(cells) == {"separate", "shared"}
        assert all("rss_mib" in cell and "cpu_ms_per_image" in cell for cell in cells.values())
        assert cells["shared"]["sessions"] <= cells["separate"]["sessions"]
        assert all(cell["images_per_s"] > 0 for cell in cells.values())
