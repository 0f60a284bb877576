"""What one image must cost on the CPU whatever the server: the model and the decode, alone.

Run: `python -m bench.cpu_floor --model-repo /tmp/fp32repo --model imagenet --version 1`.

Both are timed as the server runs them, on every core at once (one thread per core, so they
share caches and memory bandwidth as under load) and in thread CPU time (so a neighbour's load
on a shared machine changes little): the model on one-thread ONNX Runtime sessions (the server's
CPU slots) at batch 1, 2 and 4, the decode with the contract's `decode_image` on an input set.
The cheapest model batch plus the decode is the floor of a server's CPU per image; what a
server spends above it is its own (HTTP, event loop, hand-offs). docs/benchmarks.md compares
Roost with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.inputs import input_sets
from roost.contract.card import read_card
from roost.contract.images import decode_image

_MAX_PIXELS = 60_000_000
BATCHES = (1, 2, 4)


def per_item_cpu_ms(work: Callable[[], int], threads: int) -> float:
    """Thread CPU ms per item of `work` (which returns the items it did), run on `threads`
    threads at once; the mean over threads."""
    results: list[float] = []

    def run() -> None:
        started = time.thread_time()
        items = work()
        results.append((time.thread_time() - started) * 1000 / items)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statistics.fmean(results)


def one_thread_session(model: Path) -> ort.InferenceSession:
    """As the server's CPU slots build theirs (service/runtime/classifier.py): one thread, no
    spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def model_cpu_ms(
    session: ort.InferenceSession, image_size: tuple[int, int], batch: int, runs: int, threads: int
) -> float:
    """Thread CPU ms per image of `session` (one-thread: `one_thread_session`, shared by every
    thread as the server's narrow slots share theirs) running `batch`-image batches on
    `threads` threads at once."""
    name = session.get_inputs()[0].name
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *image_size, 3), dtype=np.uint8)

    def work() -> int:
        session.run(None, {name: pixels})  # the first run of a thread allocates
        for _ in range(runs):
            session.run(None, {name: pixels})
        return runs * batch

    return per_item_cpu_ms(work, threads)


def measure(folder: Path, images: list[bytes], repeats: int, runs: int) -> dict[str, float]:
    """Median CPU ms per image of the model at batch 1, 2 and 4 (`model_b1`...) and of the
    decode (`decode`)."""
    card = read_card(folder)
    cores = os.cpu_count() or 1
    session = one_thread_session(folder / "model.onnx")

    def decode() -> int:
        count = max(len(images), 10 * runs)
        for i in range(count):
            decode_image(images[i % len(images)], card.image_size, card.resize, _MAX_PIXELS)
        return count

    timings: dict[str, list[float]] = {f"model_b{b}": [] for b in BATCHES} | {"decode": []}
    for _ in range(repeats):
        for batch in BATCHES:
            timings[f"model_b{batch}"].append(
                model_cpu_ms(session, card.image_size, batch, runs, cores)
            )
        timings["decode"].append(per_item_cpu_ms(decode, cores))
    return {key: statistics.median(values) for key, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default="imagenet")
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--set", default="512px", help="input set (bench/inputs.py)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/roost-bench"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40, help="session runs per thread and repeat")
    args = parser.parse_args()
    images = input_sets(args.cache)[args.set]
    folder = args.model_repo / args.model / str(args.version)
    floor = measure(folder, images, args.repeats, args.runs)
    floor["floor"] = min(floor[f"model_b{b}"] for b in BATCHES) + floor["decode"]
    floor["cores"] = os.cpu_count() or 1
    floor["images_per_s_at_floor"] = 1000 * floor["cores"] / floor["floor"]
    print(json.dumps({"set": args.set, **{k: round(v, 3) for k, v in floor.items()}}, indent=2))


if __name__ == "__main__":
    main()
