"""bench/training_memory.py end to end on a tiny data set (its numbers mean nothing here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import training_memory

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_every_pipeline_reads_one_epoch_and_reports_its_peak(tmp_path: Path) -> None:
    argv = ["--sizes", "12", "--image-size", "16", "--batch-size", "4", "--legacy-max", "12"]
    argv += ["--step-batches", "0", "--data", str(tmp_path / "data"), "--out", str(tmp_path)]
    assert training_memory.main(argv) == 0
    runs = json.loads((tmp_path / "training_memory.json").read_text())["runs"]
    assert [r["pipeline"] for r in runs] == list(training_memory.PIPELINES)
    for run in runs:
        assert run["seen"] == run["images"] == 12
        assert run["peak_rss_mb"] >= run["baseline_rss_mb"] > 0
    assert not (tmp_path / "data" / "cache-12-16").exists()  # the bench removes its cache
