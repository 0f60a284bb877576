"""Dynamic batching: images from concurrent requests go to the session together.

One `DynamicBatcher` per model version. A batch closes when it holds `max_batch_size` images or
`max_queue_delay_ms` after its first image arrived (a fixed monotonic deadline), whichever comes
first; and at once when the queue is empty and no request is still decoding images for this
version, so a lone request never waits for company that is not coming. While a batch runs, new
images queue up and form the next one: that is where batching comes from under load.

Requests first `reserve()` room for their images (admission happens before any decode work),
then `submit()` the decoded arrays; the batcher knows what is still on its way. On the CPU a
request submits its images still encoded, as `Decode` calls, at once: the inference thread
that takes a batch decodes its images and runs them (service/serving/inference.py says when).

If the collecting loop itself dies, the batcher fails: every waiting request gets
`InferenceFailed` at once, new work gets `NotReady`, and `BatchObserver.on_failure` tells the
owner (once) so it can mark the version failed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from service.errors import DeadlineExceeded, InferenceFailed, NotReady, Overloaded

log = logging.getLogger(__name__)

Result = TypeVar("Result")
"""What the batch's runner answers per image (the service's: `postprocess.Scores`)."""

RunBatch = Callable[[np.ndarray, bool, float], Sequence[Result]]
"""(batch, alone, deadline) -> one result per image, in order, computed on the inference
thread; `alone` says no other batch is running or waiting; `deadline` is the earliest of its
requests' deadlines (monotonic): the batch's turn on the CPU."""

Decode = Callable[[], np.ndarray]
"""One image's decode, called on the inference thread that runs its batch; what it raises
fails that image's request alone."""


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """When an image's batch work happened (monotonic seconds), for its request's trace."""

    enqueued_at: float
    taken_at: float
    """The batch closed and went to an inference thread: the end of the image's queue wait."""
    run_started_at: float
    """The session run began (after the batch's decodes on the inference thread, if any)."""
    run_ended_at: float
    batch_size: int
    """Images the session ran together."""


OnRan = Callable[[BatchTiming], None]
"""Called on the event loop for each image of a request once its batch ran."""


@dataclass(slots=True)
class _Item(Generic[Result]):
    image: np.ndarray | Decode
    future: asyncio.Future[Result]
    enqueued_at: float
    deadline: float
    on_ran: OnRan | None


@dataclass
class BatchObserver:
    """Hooks for metrics, so the batcher stays free of Prometheus."""

    on_batch: Callable[[int, float], None] = lambda size, seconds: None
    on_queue_wait: Callable[[list[float]], None] = lambda waits: None
    on_depth: Callable[[int], None] = lambda depth: None
    on_failure: Callable[[str], None] = lambda reason: None
    """Called once, with `DynamicBatcher.failure`, when the batch loop dies."""


@dataclass
class BatcherConfig:
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_size: int
    concurrency: int = 1
    """Batches that may run at once (one per session instance)."""


class DynamicBatcher(Generic[Result]):
    def __init__(
        self,
        run_batch: RunBatch[Result],
        config: BatcherConfig,
        observer: BatchObserver | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._config = config
        self._observer = observer or BatchObserver()
        self._queue: collections.deque[_Item[Result]] = collections.deque()
        self._collecting: list[_Item[Result]] = []
        """The batch being assembled: out of the queue, not yet handed to a task."""
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._running = 0
        self._incoming = 0
        self._executor = ThreadPoolExecutor(config.concurrency, thread_name_prefix="roost-infer")
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._drained = asyncio.Event()
        self._failure: str | None = None
        self._recent_batch_seconds: collections.deque[float] = collections.deque(maxlen=32)
        self._loop_task = asyncio.get_running_loop().create_task(self._collect_forever())
        # A done callback rather than a try/except in the loop: it sees every way the task
        # can end (an error anywhere in it) and retrieves the exception, so asyncio does not
        # also report it as never retrieved.
        self._loop_task.add_done_callback(self._on_loop_done)

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def failure(self) -> str | None:
        """Why the batch loop died ("batch loop died: ValueError: ..."); None while it runs."""
        return self._failure

    def admit(self, count: int, deadline: float | None = None) -> None:
        """Check that `count` more images would be taken now, without holding any room.

        Called before a request's body is read, so refusing it costs no upload; `reserve`
        checks again once the request knows how many images it carries.

        Raises:
            Overloaded: the queue has no room for all of them, or the work queued ahead would
                not finish before `deadline` (a monotonic time) by recent batch times.
            NotReady: the batcher is shutting down, or its batch loop died.
        """
        if self._failure is not None:
            raise NotReady(self._stopped())
        if self._closed:
            raise NotReady("this model version is being unloaded")
        waiting = len(self._queue) + self._incoming
        if waiting + count > self._config.max_queue_size:
            raise Overloaded(
                f"queue is full ({waiting} images waiting)", retry_after_s=self._retry_after_s()
            )
        if deadline is not None:
            expected = self._expected_wait_s(waiting + count)
            if expected is not None and time.monotonic() + expected > deadline:
                raise Overloaded(
                    f"the {waiting} images queued ahead would take about {expected:.1f} s, "
                    "past this request's deadline",
                    retry_after_s=self._retry_after_s(),
                )

    def reserve(self, count: int, deadline: float | None = None) -> Reservation[Result]:
        """Room for `count` images that the caller is about to decode and submit.

        Raises what `admit` raises.
        """
        self.admit(count, deadline)
        self._incoming += count
        return Reservation(self, count)

    def _release(self, count: int) -> None:
        self._incoming -= count
        self._arrived.set()  # the collector may be waiting for these images: re-evaluate
        self._settle()

    def _enqueue(
        self,
        images: list[np.ndarray] | list[Decode],
        deadline: float,
        reserved: int,
        on_ran: OnRan | None,
    ) -> list[asyncio.Future[Result]]:
        self._incoming -= reserved
        if self._failure is not None:  # reserved before the loop died: nobody would run these
            raise NotReady(self._stopped())
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = []
        for image in images:
            future: asyncio.Future[Result] = loop.create_future()
            self._queue.append(_Item(image, future, now, deadline, on_ran))
            futures.append(future)
        self._observer.on_depth(len(self._queue))
        self._arrived.set()
        return futures

    async def close(self) -> None:
        """Stop accepting, finish everything queued and running, then stop."""
        self._closed = True
        self._settle()
        await self._drained.wait()
        self._loop_task.cancel()
        await asyncio.gather(self._loop_task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _collect_forever(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            self._collecting = []
            if not batch:
                self._slots.release()
                self._settle()  # it held only cancelled or expired items
                continue
            alone = self._running == 0 and not self._queue and self._incoming == 0
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch, alone))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _collect(self) -> list[_Item[Result]]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        first_at = self._queue[0].enqueued_at
        close_at = first_at + self._config.max_queue_delay_ms / 1000.0
        batch: list[_Item[Result]] = []
        self._collecting = batch
        while len(batch) < self._config.max_batch_size:
            if self._queue:
                item = self._queue.popleft()
                if item.future.done():  # cancelled by its request (client gone, deadline)
                    continue
                if item.deadline <= time.monotonic():
                    item.future.set_exception(DeadlineExceeded("request deadline passed in queue"))
                    continue
                batch.append(item)
                continue
            if batch and self._incoming == 0:
                break  # nothing else is on its way: waiting would only add latency
            remaining = close_at - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await self._arrived.wait()
            except TimeoutError:
                break
        self._observer.on_depth(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Item[Result]], alone: bool) -> None:
        try:
            await self._run_and_answer(batch, alone)
        except Exception:
            log.exception("inference failed for a batch of %d", len(batch))
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(InferenceFailed("inference failed; try again"))
        finally:
            self._running -= 1
            self._slots.release()
            self._arrived.set()  # wake the collector: an idle session may now take a lone item
            self._settle()

    async def _run_and_answer(self, batch: list[_Item[Result]], alone: bool) -> None:
        started = time.monotonic()
        self._observer.on_queue_wait([started - item.enqueued_at for item in batch])
        images = [item.image for item in batch]
        loop = asyncio.get_running_loop()
        deadline = min(item.deadline for item in batch)
        results, refused, run_started, run_ended = await loop.run_in_executor(
            self._executor, _decode_stack_and_run, self._run_batch, images, alone, deadline
        )
        for index, exc in refused.items():
            if not batch[index].future.done():
                batch[index].future.set_exception(exc)
        ran = [item for index, item in enumerate(batch) if index not in refused]
        if not ran:
            return
        # Checked before any caller gets a result: a short answer must fail the whole batch.
        if len(results) != len(ran):
            raise ValueError(f"{len(results)} results for a batch of {len(ran)} images")
        seconds = time.monotonic() - started
        self._recent_batch_seconds.append(seconds)
        self._observer.on_batch(len(ran), seconds)
        for item, result in zip(ran, results, strict=True):
            if item.on_ran is not None:
                timing = BatchTiming(item.enqueued_at, started, run_started, run_ended, len(ran))
                item.on_ran(timing)
            if not item.future.done():
                item.future.set_result(result)

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # close() stopped it
        exc = task.exception()
        self._failure = f"batch loop died: {type(exc).__name__}: {exc}"
        log.error("%s", self._failure, exc_info=exc)
        for item in [*self._collecting, *self._queue]:
            if not item.future.done():
                item.future.set_exception(InferenceFailed(self._stopped()))
        self._collecting = []
        self._queue.clear()
        self._settle()
        self._observer.on_failure(self._failure)

    def _stopped(self) -> str:
        return f"the batcher for this model version stopped ({self._failure})"

    def _settle(self) -> None:
        """Let close() return once nothing runs and nothing else will: all drained, or the loop
        is dead (its queued futures failed). Batches already running are always waited for, so
        the session is not released under them."""
        drained = not (self._queue or self._collecting or self._incoming)
        if self._closed and not self._running and (drained or self._failure is not None):
            self._drained.set()

    def _expected_wait_s(self, images: int) -> float | None:
        """Seconds until `images` more would be done, from the median recent batch time."""
        if len(self._recent_batch_seconds) < 3:
            return None  # too little history to refuse anyone on
        per_batch = sorted(self._recent_batch_seconds)[len(self._recent_batch_seconds) // 2]
        batches = math.ceil(images / self._config.max_batch_size) + (1 if self._running else 0)
        return per_batch * batches / self._config.concurrency

    def _retry_after_s(self) -> int:
        """Whole seconds until the queue ahead would drain; at least 1."""
        expected = self._expected_wait_s(len(self._queue) + self._incoming)
        return max(1, math.ceil(expected or 0))


class Reservation(Generic[Result]):
    """Queue room held for one request while it decodes; use as a context manager."""

    def __init__(self, batcher: DynamicBatcher[Result], count: int) -> None:
        self._batcher = batcher
        self._count = count

    def submit(
        self,
        images: list[np.ndarray] | list[Decode],
        deadline: float,
        on_ran: OnRan | None = None,
    ) -> list[asyncio.Future[Result]]:
        """Queue the images, decoded or as `Decode` calls (as many as reserved), and return a
        future per image; `on_ran` is told each image's `BatchTiming` once its batch ran."""
        if len(images) != self._count:
            raise ValueError(f"reserved {self._count} images, got {len(images)}")
        reserved, self._count = self._count, 0
        return self._batcher._enqueue(images, deadline, reserved, on_ran)

    def __enter__(self) -> Reservation[Result]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._count:
            self._batcher._release(self._count)
            self._count = 0


def _decode_stack_and_run(
    run_batch: RunBatch[Result], images: list[np.ndarray | Decode], alone: bool, deadline: float
) -> tuple[Sequence[Result], dict[int, Exception], float, float]:
    """Results of the images that decoded, in order, what each of the others raised (by
    index), and when the session run began and ended (monotonic); no results when none
    decoded."""
    decoded: list[np.ndarray] = []
    refused: dict[int, Exception] = {}
    for index, image in enumerate(images):
        if isinstance(image, np.ndarray):
            decoded.append(image)
            continue
        try:
            decoded.append(image())
        except Exception as exc:  # this image's request fails; the batch goes on
            refused[index] = exc
    if not decoded:
        now = time.monotonic()
        return [], refused, now, now
    run_started = time.monotonic()
    results = run_batch(np.stack(decoded), alone, deadline)
    return results, refused, run_started, time.monotonic()
