"""The benchmark harness runs end to end (a smoke run: tiny load, no assertions on times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from modelkit import colour_model, publish


def test_bench_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((64, 64)), size=(64, 64))
    out = tmp_path / "out"
    run_bench(
            "bench",
            "--model-repo",
            str(repo),
            "--model",
            "colours",
            "--out",
            str(out),
            "--concurrency",
            "1,4",
            "--rates",
            "20",
            "--requests",
            "20",
            "--seconds",
            "3",
            "--repeats",
            "1",
            "--baseline-seconds",
            "0.2",
            "--sets",
            "224px",
            "--cache",
            str(tmp_path / "cache"),
    )  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]["224px"]) == {"roost", "naive"}
    roost = report["results"]["224px"]["roost"]
    assert roost["c4"]["errors"] == 0 and roost["c4"]["requests"] == 20
    assert roost["c4"]["batch_histogram"]["images"] == 20
    assert "rate20" in roost
    assert set(report["decode_per_core"]) >= {"224px", "512px", "1024px", "camera"}
    assert len(report["model_alone"]) == 7
    assert report["ratios"]["224px/c1"]["p50_over_decode_plus_single_inference"] > 0
    assert report["memory"]["roost_peak_rss_mib"] >= report["memory"]["roost_ready_rss_mib"] > 0
