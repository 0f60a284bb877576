"""Decodes what concurrent threads submit in batches, one batch at a time (`DecodeCoalescer`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

DecodeBatch = Callable[[list[bytes]], Sequence[Any]]
"""JPEG bytes -> one decoded RGB image per input (device or host array), None where it failed."""


class DecodeCoalescer:
    """Decodes items that threads submit in batches, one batch at a time.

    A submitting thread that finds no batch running takes everything waiting (up to
    `max_batch`, its own item included) and decodes it; threads that arrive meanwhile wait,
    and the next of them takes the next batch. So batches grow with the load by themselves
    and a lone request is decoded at once. `decode_batch` gets one call at a time (the
    nvImageCodec decoder is used from one thread at a time).
    """

    def __init__(self, decode_batch: DecodeBatch, max_batch: int = 64) -> None:
        self._decode_batch = decode_batch
        self._max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._busy = False

    def submit(self, item: bytes) -> Any:
        job = _Job(item)
        with self._cond:
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and self._busy:
                    self._cond.wait()
                if job.done:
                    return job.outcome()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                self._busy = True
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        try:
            results = list(self._decode_batch([job.item for job in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            for job, result in zip(batch, results, strict=True):
                job.value = result
        except Exception as exc:
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._busy = False
                self._cond.notify_all()


class _Job:
    __slots__ = ("item", "value", "error", "done")

    def __init__(self, item: bytes) -> None:
        self.item = item
        self.value: Any = None
        self.error: Exception | None = None
        self.done = False

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value
