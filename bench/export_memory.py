"""Export: peak memory per parameter of ``roost export``.

``python -m bench.export_memory [--hidden 2048] [--image-size 64] [--repeats 3]``

1. Writes a small data set of tiled real photos (bench.training_memory.make_data) and trains a
   MiniVGGNet with a large hidden layer after the flatten for one epoch (the shape of the
   issue's InceptionV3-with-a-flatten-head case: most parameters in one dense kernel).
2. Runs ``roost export`` of that run ``--repeats`` times, each in a fresh child process, and
   reads each child's peak RSS from ``wait4`` (so the training child does not count).
3. The same for a child that only imports TensorFlow and Keras: the fixed part of the peak.

Prints peak RSS, bytes per parameter (peak / parameters) and the same above the fixed part;
writes ``--out``/export_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench.training_memory import make_data

_IMPORT_ONLY = "import keras, tensorflow, tf2onnx, onnxruntime"


def peak_rss_mb(command: list[str], env: dict[str, str] | None = None) -> float:
    """Run ``command`` to its end (failing loudly) and return its peak RSS in MB."""
    process = subprocess.Popen(command, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed with exit status {process.returncode}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/roost-export-memory"))
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    roost = [sys.executable, "-m", "roost"]
    data = make_data(args.work / f"data-{args.images}", args.images)
    run = args.work / f"run-{args.image_size}-{args.hidden}"
    if not (run / "model.keras").exists():
        size = str(args.image_size)
        train = ["train", "--data", str(data), "--out", str(run), "--backbone", "minivggnet"]
        train += ["--weights", "none", "--image-size", size, "--hidden-units", str(args.hidden)]
        subprocess.run([*roost, *train, "--epochs", "1", "--verbose", "0"], check=True)
    params = int(json.loads((run / "summary.json").read_text())["params"]["total"])

    fixed = peak_rss_mb([sys.executable, "-c", _IMPORT_ONLY])
    peaks = []
    for attempt in range(args.repeats):
        repo = args.work / "repo"
        shutil.rmtree(repo, ignore_errors=True)
        export = ["export", str(run), "--repo", str(repo), "--name", "m", "--fp32"]
        peaks.append(peak_rss_mb([*roost, *export, "--allow-weak-model"]))
        print(f"export {attempt + 1}/{args.repeats}: peak {peaks[-1]:.0f} MB", flush=True)
    peak = statistics.median(peaks)
    result = {
        "parameters": params,
        "weights_mb": params * 4 / 1e6,
        "peak_mb": peaks,
        "median_peak_mb": peak,
        "imports_only_mb": fixed,
        "bytes_per_parameter": peak * 2**20 / params,
        "bytes_per_parameter_above_imports": (peak - fixed) * 2**20 / params,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_memory.json").write_text(json.dumps(result, indent=2))
    print(
        "| parameters | float32 weights | peak RSS (median of "
        f"{len(peaks)}) | bytes per parameter | above the imports ({fixed:.0f} MB) |\n"
        "|---|---|---|---|---|\n"
        f"| {params / 1e6:.1f} M | {params * 4 / 1e6:.0f} MB | {peak / 1024:.2f} GB | "
        f"{result['bytes_per_parameter']:.0f} | {result['bytes_per_parameter_above_imports']:.0f} |"
    )


if __name__ == "__main__":
    main()
