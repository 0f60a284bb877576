"""Narrow CPU slots of one version share one session (one copy of the weights), and answer
exactly what one session per slot answers, alone and from many threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from modelkit import colour_model

from service.cpus import usable_cores
from service.runtime.classifier import CPU, OnnxClassifier
from service.settings import ServiceSettings

SIZE = (16, 16)
MODEL = colour_model(SIZE, sharpness=0.05)
WIDE = 1 if usable_cores() > 1 else 0  # a wide session exists where there is > 1 core


def classifier(
    instances: int, share: bool = True, threads: int = 1, io_binding: bool = False
) -> OnnxClassifier:
    settings = ServiceSettings(use_cuda=False, intra_op_threads=threads, io_binding=io_binding)
    return OnnxClassifier(MODEL, SIZE, 3, settings, instances, share_weights=share)


def batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SIZE, 3), dtype=np.uint8)


def reference(images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(MODEL, providers=[CPU])
    return np.asarray(session.run(None, {"image": images})[0], dtype=np.float32)


def test_one_thread_slots_share_one_session() -> None:
    shared = classifier(instances=4)
    assert shared.shares_weights and shared.instances == 4
    assert len({id(slot.session) for slot in shared._slots}) == 1
    assert shared.session_count == 1 + WIDE  # the narrow one (+ the wide one)
    options = shared._slots[0].session.get_session_options()
    assert options.intra_op_num_threads == 1  # runs each batch on the caller's thread


def test_sharing_off_keeps_one_session_per_slot() -> None:
    separate = classifier(instances=4, share=False)
    assert not separate.shares_weights
    assert separate.session_count == 4 + WIDE


def test_slots_with_their_own_thread_pools_keep_their_own_sessions() -> None:
    pooled = classifier(instances=3, threads=2)
    assert not pooled.shares_weights
    assert len({id(slot.session) for slot in pooled._slots}) == 3


@pytest.mark.parametrize("n", [1, 3, 32])
def test_shared_and_separate_sessions_answer_alike(n: int) -> None:
    images = batch(n, seed=n)
    expected = reference(images)
    shared, separate = classifier(instances=4), classifier(instances=4, share=False)
    shared.warm_up([1, 32])
    for alone in (False, True):
        np.testing.assert_array_equal(shared.run(images, alone), expected)
        np.testing.assert_array_equal(separate.run(images, alone), expected)


@pytest.mark.parametrize("io_binding", [False, True])
def test_concurrent_runs_on_the_shared_session_each_get_their_own_answer(
    io_binding: bool,
) -> None:
    """More threads than slots, mixed sizes and `alone` flags, all on one narrow session."""
    shared = classifier(instances=4, io_binding=io_binding)
    assert shared.shares_weights
    jobs = [(batch(1 + i % 7, seed=i), i % 5 == 0) for i in range(200)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda job: shared.run(*job), jobs))
    for (images, _), answer in zip(jobs, got, strict=True):
        np.testing.assert_array_equal(answer, reference(images))
