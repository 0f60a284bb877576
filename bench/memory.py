"""`python -m bench memory`: resident MiB of one model version's sessions, weights shared or not.

Each cell is a fresh process that builds the version's `OnnxClassifier` as the server does
(malloc arenas capped, `instances` narrow slots, the wide session, warm-up at batch 1 and
`--max-batch-size`) and
reports how much its resident memory grew once the sessions were built and once they were
warm (what a ready server holds), then the images/s of `instances` threads running
batches of 4 through it and the process CPU time per image (steadier than images/s on a
shared machine). The layouts take turns (rotated per repeat); cells are medians of the
repeats; ratios are against `separate` (one session per slot, the layout before sharing)
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

LAYOUTS = ("separate", "shared")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    p.add_argument("--model-repo", default="model_repo")
    p.add_argument("--versions", default="imagenet/1,imagenet/2", help="MODEL/VERSION, ...")
    p.add_argument("--instances", default="1,2,4")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="throughput run per cell; 0: none")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--out", default="bench/results")
    p.add_argument(
        "--child", nargs=3, metavar=("DIR", "INSTANCES", "LAYOUT"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.child:
        folder, instances, layout = args.child
        cell = measure(Path(folder), int(instances), layout, args.max_batch_size, args.seconds)
        print(json.dumps(cell))
        return 0

    results: dict[str, dict[str, Any]] = {}
    for version in [v for v in args.versions.split(",") if v]:
        for instances in [int(n) for n in args.instances.split(",") if n]:
            runs: dict[str, list[dict[str, float]]] = {layout: [] for layout in LAYOUTS}
            for repeat in range(args.repeats):
                turn = repeat % len(LAYOUTS)
                for layout in LAYOUTS[turn:] + LAYOUTS[:turn]:
                    runs[layout].append(
                        _child(args, Path(args.model_repo) / version, instances, layout)
                    )
            results[f"{version} x{instances}"] = _cells(runs)
            _print(f"{version} x{instances}", results[f"{version} x{instances}"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "python -m bench memory " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeats": args.repeats,
        "results": results,
    }
    (out / "memory.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'memory.json'}")
    return 0


def measure(
    folder: Path, instances: int, layout: str, max_batch_size: int, seconds: float
) -> dict[str, float]:
    """One cell, in this process: resident MiB added by the version, its sessions, images/s."""
    import numpy as np

    from roost.contract.card import read_card
    from roost.contract.labels import read_labels
    from service.malloc import limit_malloc_arenas
    from service.runtime.classifier import OnnxClassifier
    from service.settings import ServiceSettings

    limit_malloc_arenas()  # as the server does before its threads start
    card, labels = read_card(folder), read_labels(folder)
    model = (folder / "model.onnx").read_bytes()
    before = _rss_mib()
    classifier = OnnxClassifier(
        model, card.image_size, len(labels), ServiceSettings(), instances, layout == "shared"
    )
    built = _rss_mib() - before
    classifier.warm_up(sorted({1, max_batch_size}))
    ready = _rss_mib() - before
    batch = np.random.default_rng(0).integers(0, 256, (4, *card.image_size, 3), dtype=np.uint8)
    counts = [0] * classifier.instances
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            classifier.run(batch)
            counts[index] += len(batch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(classifier.instances)]
    cpu_started = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_s = time.process_time() - cpu_started
    return {
        "built_rss_mib": built,
        "rss_mib": ready,
        "sessions": classifier.session_count,
        "images_per_s": sum(counts) / seconds if seconds else 0.0,
        "cpu_ms_per_image": 1000 * cpu_s / sum(counts) if sum(counts) else 0.0,
    }


def _child(args: argparse.Namespace, folder: Path, instances: int, layout: str) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.memory", "--child", str(folder), str(instances), layout]
    command += ["--max-batch-size", str(args.max_batch_size), "--seconds", str(args.seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _cells(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    cells = {
        layout: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for layout, rs in runs.items()
    }
    base = cells[LAYOUTS[0]]
    for cell in cells.values():
        for key in ("built_rss", "rss"):
            if base[f"{key}_mib"] > 0:
                cell[f"{key}_over_separate"] = cell[f"{key}_mib"] / base[f"{key}_mib"]
        if base["images_per_s"]:
            cell["throughput_over_separate"] = cell["images_per_s"] / base["images_per_s"]
            cell["cpu_per_image_over_separate"] = (
                cell["cpu_ms_per_image"] / base["cpu_ms_per_image"]
            )
    return cells


def _print(name: str, cells: dict[str, dict[str, float]]) -> None:
    for layout, cell in cells.items():
        print(
            f"{name:16} {layout:8} sessions {cell['sessions']:.0f}  built "
            f"{cell['built_rss_mib']:6.1f} MiB ({cell.get('built_rss_over_separate', 0):.2f}x)  "
            f"ready {cell['rss_mib']:6.1f} MiB ({cell.get('rss_over_separate', 0):.2f}x)  "
            f"{cell['images_per_s']:6.1f} img/s "
            f"({cell.get('throughput_over_separate', 0):.2f}x)  {cell['cpu_ms_per_image']:5.2f} "
            f"CPU ms/img ({cell.get('cpu_per_image_over_separate', 0):.2f}x)",
            flush=True,
        )


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


if __name__ == "__main__":
    sys.exit(main())
