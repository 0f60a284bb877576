"""`python -m bench.cpu_floor` runs end to end (a smoke run: no assertions on times)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from modelkit import colour_model, publish

from bench.cpu_floor import per_item_cpu_ms


@pytest.mark.slow
def test_cpu_floor_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    printed = run_bench(
            "bench.cpu_floor", "--model-repo", str(repo), "--model", "colours",
            "--set", "224px", "--repeats", "1", "--runs", "2", "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    floor = json.loads(printed)
    assert floor["set"] == "224px" and floor["cores"] == os.cpu_count()
    models = [floor["model_b1"], floor["model_b2"], floor["model_b4"]]
    assert min(models) > 0 and floor["decode"] > 0
    assert abs(floor["floor"] - min(models) - floor["decode"]) <= 0.002  # rounding


def test_per_item_cpu_ms_runs_the_work_on_every_thread_at_once() -> None:
    started = threading.Barrier(3)  # passes only with all three threads inside `work` together

    def work() -> int:
        started.wait(timeout=30)
        return 4

    assert per_item_cpu_ms(work, threads=3) >= 0
