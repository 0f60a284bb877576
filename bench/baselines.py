"""What the server is measured against: the model alone, and decode + resize alone."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from roost.contract.card import ResizeMode
from roost.contract.images import decode_image


def model_alone(
    model: Path,
    image_size: tuple[int, int],
    batch_size: int,
    providers: list[str],
    seconds: float = 3.0,
    io_binding: bool = False,
    threads: int = 0,
) -> float:
    """Images/s of `session.run` on already-decoded uint8 batches (numpy in, or IO binding)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), sess_options=options, providers=providers)
    name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).integers(0, 256, (batch_size, *image_size, 3), dtype=np.uint8)
    if io_binding:
        binding = session.io_binding()
        on_device = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", 0)
        binding.bind_ortvalue_input(name, on_device)
        binding.bind_output(session.get_outputs()[0].name, "cuda")

        def run() -> None:
            session.run_with_iobinding(binding)
    else:

        def run() -> None:
            session.run(None, {name: batch})

    for _ in range(3):
        run()
    return median_rate(run, batch_size, seconds)


def decode_rate_per_core(
    bodies: list[bytes], image_size: tuple[int, int], resize: ResizeMode, seconds: float = 3.0
) -> float:
    """Images/s of decode + resize on one thread, over `bodies` in turn."""
    turn = iter(range(1 << 62))

    def decode_next() -> None:
        decode_image(bodies[next(turn) % len(bodies)], image_size, resize, 10**9)

    return median_rate(decode_next, 1, seconds)


def median_rate(
    run: Callable[[], None], items_per_run: int, seconds: float, rounds: int = 5
) -> float:
    """Items/s as the median of `rounds` timed rounds: robust to a noisy neighbour's burst."""
    rates = []
    for _ in range(rounds):
        count, started = 0, time.perf_counter()
        while count == 0 or time.perf_counter() - started < seconds / rounds:
            run()
            count += 1
        rates.append(count * items_per_run / (time.perf_counter() - started))
    return statistics.median(rates)


def cpu_limit(model_rate: float, decode_rate: float, cores: int) -> float:
    """Decode and inference share the cores: each image costs 1/M + 1/(D x cores) seconds."""
    return 1.0 / (1.0 / model_rate + 1.0 / (decode_rate * cores))
