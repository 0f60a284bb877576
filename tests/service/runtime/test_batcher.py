"""DynamicBatcher on its own, with a recording fake session."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidImage,
    NotReady,
    Overloaded,
)
from service.runtime.batcher import BatcherConfig, BatchObserver, DynamicBatcher


class FakeSession:
    """Returns each image's first pixel as its scores; records batch sizes; can block or fail,
    or (`short`) return one row too few."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batch_sizes: list[int] = []
        self.alone: list[bool] = []
        self.deadlines: list[float] = []
        self.delay_s = delay_s
        self.fail = fail
        self.short = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: np.ndarray, alone: bool = False, deadline: float = 0.0) -> np.ndarray:
        self.alone.append(alone)
        self.deadlines.append(deadline)
        self.gate.wait(5)
        self.batch_sizes.append(len(batch))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("CUDA error: out of memory")
        scores = batch[:, 0, 0, :].astype(np.float32)
        return scores[:-1] if self.short else scores


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, dtype=np.uint8)


def far() -> float:
    return time.monotonic() + 30


async def submit(
    batcher: DynamicBatcher, values: list[int], deadline: float | None = None
) -> list[np.ndarray]:
    with batcher.reserve(len(values)) as slot:
        futures = slot.submit([image(v) for v in values], deadline or far())
    return list(await asyncio.gather(*futures))


def make(
    session: FakeSession, observer: BatchObserver | None = None, **config: float
) -> DynamicBatcher:
    defaults: dict[str, float] = {
        "max_batch_size": 8,
        "max_queue_delay_ms": 50,
        "max_queue_size": 64,
    }
    defaults.update(config)
    return DynamicBatcher(session, BatcherConfig(**defaults), observer)  # type: ignore[arg-type]


async def test_concurrent_submits_form_one_batch_with_right_results() -> None:
    session = FakeSession()
    batcher = make(session)
    # Reserve first, as requests still decoding would: the batcher waits for them.
    slots = [batcher.reserve(1) for _ in range(5)]
    futures = [f for i, s in enumerate(slots) for f in s.submit([image(i)], far())]
    results = await asyncio.gather(*futures)
    assert session.batch_sizes == [5]
    assert [int(r[0]) for r in results] == [0, 1, 2, 3, 4]
    await batcher.close()


async def test_batch_counts_images_not_requests() -> None:
    session = FakeSession()
    batcher = make(session, max_batch_size=4)
    slots = [batcher.reserve(3) for _ in range(3)]
    futures = [f for s in slots for f in s.submit([image(1)] * 3, far())]
    await asyncio.gather(*futures)
    assert max(session.batch_sizes) <= 4 and sum(session.batch_sizes) == 9
    await batcher.close()


async def test_lone_request_does_not_wait_for_the_delay() -> None:
    """With an idle session a lone request runs at once: answered long before a delay of an
    hour could end (no wall-clock threshold: it either answers or hangs until wait_for)."""
    batcher = make(FakeSession(), max_queue_delay_ms=3_600_000)
    (row,) = await asyncio.wait_for(submit(batcher, [7]), timeout=120)
    assert row is not None
    await batcher.close()


async def test_batch_closes_at_its_deadline_when_more_is_announced() -> None:
    session = FakeSession()
    batcher = make(session, max_queue_delay_ms=100)
    straggler = batcher.reserve(1)  # announced, never submitted in time
    started = time.monotonic()
    await submit(batcher, [1])
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0
    straggler.__exit__(None, None, None)
    await batcher.close()


async def test_cancelled_request_does_not_hang_its_batch() -> None:
    session = FakeSession()
    session.gate.clear()  # hold the first batch in the session
    batcher = make(session)
    first = asyncio.ensure_future(submit(batcher, [0]))
    await asyncio.sleep(0.05)
    slots = [batcher.reserve(1) for _ in range(3)]
    futures = [s.submit([image(i)], far())[0] for i, s in enumerate(slots)]
    futures[1].cancel()
    session.gate.set()
    done = await asyncio.wait_for(asyncio.gather(futures[0], futures[2]), 5)
    assert [int(d[0]) for d in done] == [0, 2]
    await first
    assert session.batch_sizes == [1, 2]  # the cancelled image never reached the session
    await batcher.close()


async def test_images_submitted_encoded_are_decoded_on_the_inference_thread() -> None:
    session = FakeSession()
    batcher = make(session)
    threads: list[str] = []

    def decode(value: int) -> Callable[[], np.ndarray]:
        def call() -> np.ndarray:
            threads.append(threading.current_thread().name)
            return image(value)

        return call

    with batcher.reserve(3) as slot:
        futures = slot.submit([decode(4), decode(5), decode(6)], far())
    assert [int(r[0]) for r in await asyncio.gather(*futures)] == [4, 5, 6]
    assert session.batch_sizes == [3]
    assert len(threads) == 3 and all(name.startswith("roost-infer") for name in threads)
    await batcher.close()


async def test_an_image_that_fails_to_decode_fails_its_request_alone() -> None:
    session = FakeSession()
    batcher = make(session)

    def broken() -> np.ndarray:
        raise InvalidImage("not an image")

    slots = [batcher.reserve(1) for _ in range(3)]
    calls = [lambda: image(1), broken, lambda: image(3)]
    futures = [s.submit([call], far())[0] for s, call in zip(slots, calls, strict=True)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert int(results[0][0]) == 1 and int(results[2][0]) == 3  # type: ignore[index]
    assert isinstance(results[1], InvalidImage)
    assert session.batch_sizes == [2]  # the other two ran as one batch
    with batcher.reserve(1) as slot:  # a batch of nothing but broken images runs nothing
        (future,) = slot.submit([broken], far())
    with pytest.raises(InvalidImage):
        await future
    assert session.batch_sizes == [2]
    assert int((await submit(batcher, [9]))[0][0]) == 9
    await batcher.close()


async def test_inference_error_reaches_every_caller_and_batcher_survives() -> None:
    session = FakeSession(fail=True)
    batcher = make(session)
    slots = [batcher.reserve(1) for _ in range(3)]
    futures = [s.submit([image(i)], far())[0] for i, s in enumerate(slots)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, InferenceFailed) for r in results)
    session.fail = False
    assert int((await submit(batcher, [9]))[0][0]) == 9
    await batcher.close()


async def test_full_queue_sheds_at_once_with_retry_after() -> None:
    session = FakeSession()
    session.gate.clear()
    batcher = make(session, max_queue_size=4, max_batch_size=2)
    running = asyncio.ensure_future(submit(batcher, [0, 1]))
    await asyncio.sleep(0.05)
    waiting = asyncio.ensure_future(submit(batcher, [2, 3, 4]))
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded) as refused:
        batcher.reserve(2)
    assert refused.value.headers and int(refused.value.headers["Retry-After"]) >= 1
    session.gate.set()
    assert len(await running) == 2 and len(await waiting) == 3
    await batcher.close()


async def test_expired_request_is_dropped_not_run() -> None:
    session = FakeSession()
    session.gate.clear()
    batcher = make(session)
    blocker = asyncio.ensure_future(submit(batcher, [0]))
    await asyncio.sleep(0.05)
    expired = asyncio.ensure_future(submit(batcher, [1], deadline=time.monotonic() + 0.01))
    await asyncio.sleep(0.05)
    session.gate.set()
    with pytest.raises(DeadlineExceeded):
        await expired
    await blocker
    assert session.batch_sizes == [1]
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses() -> None:
    session = FakeSession(delay_s=0.05)
    batcher = make(session)
    pending = asyncio.ensure_future(submit(batcher, [1, 2, 3]))
    await asyncio.sleep(0)
    await batcher.close()
    assert len(await pending) == 3
    with pytest.raises(NotReady):
        batcher.reserve(1)


async def test_request_whose_deadline_cannot_be_met_is_refused_at_once() -> None:
    session = FakeSession(delay_s=0.1)
    batcher = make(session, max_batch_size=1, max_queue_size=100)
    for v in range(3):  # history: each batch takes ~0.1 s
        await submit(batcher, [v])
    session.gate.clear()
    queued = [asyncio.ensure_future(submit(batcher, [v])) for v in range(5)]
    await asyncio.sleep(0.02)
    # 5 images ahead at ~0.1 s each cannot finish within 0.2 s: refused now, not at timeout.
    with pytest.raises(Overloaded, match="deadline") as refused:
        batcher.reserve(1, deadline=time.monotonic() + 0.2)
    assert refused.value.headers and int(refused.value.headers["Retry-After"]) >= 1
    batcher.reserve(1, deadline=time.monotonic() + 5).__exit__(None, None, None)  # this fits
    session.gate.set()
    await asyncio.gather(*queued)
    await batcher.close()


async def test_only_a_batch_with_nothing_else_around_runs_alone() -> None:
    session = FakeSession()
    session.gate.clear()
    batcher = make(session, concurrency=2)
    first = asyncio.ensure_future(submit(batcher, [1]))  # nothing else: alone
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(submit(batcher, [2]))  # the first still runs: not alone
    await asyncio.sleep(0.05)
    session.gate.set()
    await asyncio.gather(first, second)
    assert session.alone == [True, False]
    await batcher.close()


async def test_session_returning_too_few_rows_fails_its_whole_batch_and_batcher_survives() -> None:
    session = FakeSession()
    session.short = True
    batcher = make(session)
    slots = [batcher.reserve(1) for _ in range(3)]
    futures = [f for i, s in enumerate(slots) for f in s.submit([image(i)], far())]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
    assert session.batch_sizes == [3]
    assert all(isinstance(r, InferenceFailed) for r in results)
    session.short = False
    assert int((await submit(batcher, [9]))[0][0]) == 9
    assert batcher.failure is None
    await batcher.close()


async def test_dead_batch_loop_fails_waiting_requests_at_once_and_refuses_new_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    armed = asyncio.Event()
    reasons: list[str] = []

    def on_depth(depth: int) -> None:
        if armed.is_set():
            raise ValueError("metrics backend broke")

    session = FakeSession()
    observer = BatchObserver(on_depth=on_depth, on_failure=reasons.append)
    batcher = make(session, observer, max_batch_size=2)
    slots = [batcher.reserve(1) for _ in range(3)]
    futures = [f for i, s in enumerate(slots) for f in s.submit([image(i)], far())]
    straggler = batcher.reserve(1)  # still decoding when the loop dies
    # The collector has not run yet: it takes two images, then its on_depth call raises,
    # with one batch in hand and one image still queued.
    armed.set()
    # Deadlines are 30 s away: only failing at once gets under the hang guard.
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
    assert all(isinstance(r, InferenceFailed) for r in results)
    assert all("stopped" in str(r) for r in results)
    assert session.batch_sizes == []
    assert batcher.failure == "batch loop died: ValueError: metrics backend broke"
    assert reasons == [batcher.failure]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in logged] == [batcher.failure] and logged[0].exc_info
    with pytest.raises(NotReady, match="metrics backend broke"):
        batcher.reserve(1)
    await asyncio.wait_for(batcher.close(), 5)  # no wait for the straggler's images
    with straggler, pytest.raises(NotReady):
        straggler.submit([image(9)], far())
    assert reasons == [batcher.failure]


async def test_a_batch_takes_its_turn_by_its_most_urgent_request() -> None:
    session = FakeSession()
    batcher = make(session)
    soon, later = time.monotonic() + 10, time.monotonic() + 20
    slots = [batcher.reserve(1) for _ in range(3)]
    futures = [
        f
        for slot, deadline in zip(slots, [later, soon, later], strict=True)
        for f in slot.submit([image(1)], deadline)
    ]
    await asyncio.gather(*futures)
    assert session.batch_sizes == [3] and session.deadlines == [soon]
    await batcher.close()
