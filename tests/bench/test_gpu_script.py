"""The one GPU command (bench/gpu/run.sh) runs end to end here in dry-run mode.

Dry run: a tiny colour model, synthetic 512 px and 1024 px JPEGs, a few seconds per step, the
servers on 127.0.0.1 only. It proves the script (every step, both report files), not the GPU:
on this machine onnxruntime has no CUDA provider and GPU decoding falls back to Pillow.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from modelkit import colour_model, publish
from PIL import Image

from bench.gpu.report import (
    GPU_TESTS,
    gpu_decode_part_rates,
    ratios,
    synthetic_sets,
    v2_requests,
)
from service.runtime.decode.device_resize import DeviceResizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_script_dry_run_writes_both_reports(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    publish(repo, "colours", 1, model=colour_model((32, 32)), size=(32, 32))
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "bash",
            "bench/gpu/run.sh",
            "--dry-run",
            "--model-repo",
            str(repo),
            "--model",
            "colours",
            "--server-workers",
            "1,2",
            "--tests-select",
            "tests/service/runtime/test_runtime_io_binding.py::test_io_binding_defaults_on_with_cuda_and_off_on_cpu",
        ],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    assert report["dry_run"] is True and "error" not in report
    assert report["on_gpu"] is False
    assert report["tests"]["passed"] == 1 and report["tests"]["returncode"] == 0
    assert (out / "pytest.txt").exists()
    assert report["inputs"]["source"] == "synthetic"
    assert set(report["baselines"]["decode_per_core"]) == {"512px", "1024px"}
    assert set(report["baselines"]["raw_io_binding"]) == {"1", "4"}
    one_process = report["baselines"]["decode_in_one_process"]  # the GIL's ceiling on decoding
    assert set(one_process) == {"512px", "1024px"}
    assert all(r["pillow"] > 0 and r["gpu"] is None for r in one_process.values())  # no GPU
    assert "Decode in one process, one thread per core" in markdown
    assert report["baselines"]["gpu_decode_parts"] is None
    assert "GPU decoder's parts alone, one thread (img/s): unavailable" in markdown
    assert report["stage"]["images_per_s"]["4"] > 0
    contended = report["stage"]["contended"]  # the stage again, beside Pillow decode threads
    assert contended["batch"] == 4 and contended["images_per_s"] > 0
    assert contended["decoded_per_s"] > 0 and "Stage beside decoding (batch 4" in markdown
    labels = ["cpu_decode", "cpu_decode_2_workers", "gpu_decode", "gpu_decode_2_workers"]
    assert list(report["http"]) == labels
    servers_log = (out / "servers.log").read_text()
    dumps = (out / "py-spy.txt").read_text()  # the server's threads, per level
    for label in labels:
        run = report["http"][label]
        assert run["workers"] == (2 if "workers" in label else 1)
        assert set(run["levels"]) == {"512px/c2", "1024px/c2"}
        for load in run["levels"].values():
            # none failed: the run waited for both workers to load the model
            assert load["errors"] == 0 and load["requests"] > 0 and load["images_per_s"] > 0
            assert load["py_spy"] == "py-spy.txt"
            # two images a request; with two workers, /metrics sums over both
            assert load["batch"]["images"] == 2 * load["requests"]
        assert f"##### {label}\n" in servers_log
        assert dumps.count(f"##### {label} ") == 2 and "roost-infer" in dumps
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
    assert report["http"]["gpu_decode"]["gpu_decode_active"] is False  # no GPU here
    assert report["http"]["gpu_decode"]["gpu_decode_fallback_logged"] is True
    head = report["ratios"]["headline"]
    assert head["errors"] == 0 and head["stage_over_raw_io_binding"] > 0
    assert "## Targets (issue 13)" in markdown and "| failed requests | 0 | 0 | yes |" in markdown
    assert "dry run: **True**" in markdown
    assert "report.md" in done.stdout


def test_v2_requests_carry_k_images() -> None:
    bodies = synthetic_sets(["64px"], count=3)["64px"]
    (first, *_) = v2_requests(bodies, "m", per_request=2)
    header_length = int(dict(first.headers)["Inference-Header-Content-Length"])
    header = json.loads(first.body[:header_length])
    assert header["inputs"][0]["shape"] == [2]
    tensor = first.body[header_length:]
    assert len(tensor) == header["inputs"][0]["parameters"]["binary_data_size"]
    assert len(tensor) == 8 + len(bodies[0]) + len(bodies[1])


def test_ratios_against_the_bounds() -> None:
    report = {
        "environment": {"cpu_cores": 16},
        "baselines": {
            "decode_per_core": {"512px": 400.0},
            "raw_io_binding": {"32": 9000.0, "64": 12000.0},
        },
        "stage": {"images_per_s": {"32": 8100.0, "64": 9000.0}},
        "http": {
            "cpu_decode": {
                "levels": {
                    "512px/c64": {"images_per_s": 5440.0, "errors": 0, "batch": {"mean": 60.0}}
                }
            },
            "gpu_decode": {
                "levels": {
                    "512px/c64": {"images_per_s": 9600.0, "errors": 0, "batch": {"mean": 30.0}}
                }
            },
        },
    }
    out = ratios(report)
    assert out["stage_over_raw_io_binding"] == {32: 0.9, 64: 0.75}
    row = out["cpu_decode"]["512px/c64"]
    assert row["cpu_decode_bound"] == 6400.0 and row["limit_min_model_decode"] == 6400.0
    assert abs(row["over_cpu_decode_bound"] - 0.85) < 1e-9
    assert out["gpu_decode"]["512px/c64"]["over_cpu_decode_bound"] == 1.5
    head = out["headline"]
    assert head["stage_over_raw_io_binding"] == 0.9
    assert head["e2e_gpu_decode_images_per_s"] == 9600.0 and head["errors"] == 0


def test_gpu_test_selection_exists() -> None:
    for path in GPU_TESTS:
        assert (ROOT / path).is_file(), path


def test_gpu_decode_parts_are_measured_on_a_stand_in() -> None:
    """The GPU decoder's parts (batch decode, per-image resize) on the CPU: Pillow stands in
    for nvImageCodec, the resize graph runs on ONNX Runtime's CPU provider."""

    def pillow_batch(items: list[bytes]) -> list[np.ndarray | None]:
        return [np.asarray(Image.open(io.BytesIO(item)).convert("RGB")) for item in items]

    resizer = DeviceResizer(["CPUExecutionProvider"])
    bodies = synthetic_sets(["64px"], count=3)["64px"]
    rates = gpu_decode_part_rates(pillow_batch, resizer, bodies, (32, 32), "center_crop", 0.05)
    assert set(rates) == {"batch_decode_16", "batch_decode_64", "resize_one_at_a_time"}
    assert all(rate > 0 for rate in rates.values())
