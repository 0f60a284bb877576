"""bench/training_recipes.py end to end on one tiny recipe (its numbers mean nothing here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.training, pytest.mark.slow]


def test_one_recipe_is_trained_measured_and_tabled(
    run_bench: Callable[..., str], tmp_path: Path
) -> None:
    out = run_bench(
        "bench.training_recipes",
        *("--out", str(tmp_path / "out"), "--data", str(tmp_path / "data")),
        *("--recipes", "shallownet-digits", "--epochs", "1", "--max-per-class", "12"),
    )
    results = json.loads((tmp_path / "out" / "training_recipes.json").read_text())
    [row] = results["runs"]
    assert row["exit_code"] == 0, row
    counts = [row[f"{split}_images"] for split in ("train", "val", "test")]
    assert min(counts) > 0 and sum(counts) <= 3 * 12 * 10  # at most 12 a class in each split
    assert row["epochs_run"] == 1
    assert 0 <= row["test_accuracy"] <= 1
    assert row["peak_rss_mb"] >= row["fit_peak_rss_mb"] > 0  # the child's whole life >= fitting
    assert row["wall_s"] > row["fit_s"] > 0
    assert results["overrides"] == ["--epochs", "1", "--max-per-class", "12"]
    row_start = "| shallownet-digits | digits: {} / {} / {} | shallownet, 32x32 | 1 (1) |"
    assert row_start.format(*counts) in out
    assert (tmp_path / "data" / "digits" / ".complete").exists()  # written where it was told
