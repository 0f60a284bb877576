"""The cache comparison runs end to end (a smoke run: no assertions on times)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish
from PIL import Image

from bench.compare_cache import repeated_workload, with_comment


def test_marked_photos_differ_in_bytes_but_not_in_pixels() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    photo = buffer.getvalue()
    marked = with_comment(photo, "run 7")
    assert marked != photo
    assert Image.open(io.BytesIO(marked)).tobytes() == Image.open(io.BytesIO(photo)).tobytes()
    workload = repeated_workload([photo, photo + b""], 3, run=1)
    assert len(workload) == 6 and len(set(workload)) == 2
    assert not set(workload) & set(repeated_workload([photo, photo], 3, run=2))


@pytest.mark.slow
def test_compare_cache_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench.compare_cache", "--model-repo", str(repo),
            "--model", "colours", "--version", "1", "--set", "224px", "--concurrency", "2",
            "--repeat-each", "2", "--hit-requests", "5", "--seconds", "5", "--repeats", "1",
            "--out", str(out), "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    results = json.loads((out / "cache.json").read_text())["results"]
    assert set(results) == {"c2", "hit_path_c1"}
    for level in results.values():
        assert set(level) == {"plain", "cached"}
        assert all(cell["errors"] == 0 for cell in level.values())
