"""`python -m bench decode` runs end to end (a smoke run: no assertions on times)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_decode_bench_smoke_run(tmp_path: Path, run_bench: Callable[..., str]) -> None:
    out = tmp_path / "out"
    run_bench(
            "bench", "decode", "--sets", "512px", "--repeats", "2",
            "--seconds", "0.05", "--out", str(out), "--cache", str(tmp_path / "cache"),
    )  # fmt: skip
    cells = json.loads((out / "decode.json").read_text())["results"]["512px"]
    assert cells["decode_image"]["over_decode_image"] == 1.0
    assert all(cell["runs"] == 2 and cell["images_per_s"] > 0 for cell in cells.values())
    # libjpeg-turbo at Pillow's draft scale decodes exactly Pillow's pixels.
    assert cells["simplejpeg"]["max_diff"] == 0
    # The crop-only resample stays within one level of resizing everything, then cropping.
    assert cells["pillow-resize-then-crop"]["max_diff"] <= 1
