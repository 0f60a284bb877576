"""Which CPU-heavy work runs now: decoding and ONNX Runtime on the CPU, oldest request first.

Decoding and inference share the cores. Left to the OS scheduler, everything runnable shares
them alike: the decode of a request that just arrived slows down the batch of requests that
arrived long before it, four one-thread batches on two cores each get half a core, and a batch
that started first finishes no sooner than the ones that started after it. Older requests are
overtaken, and that is the tail at moderate load (docs/benchmarks-journal.md).

One `CpuGate` per server lets at most `width` threads of that work run at once: by default one
per core, plus one, because a thread that has finished its C work waits for the GIL (held by
the event loop, up to its 5 ms switch interval) while still holding its place; without the
spare, its core idles (docs/benchmarks-journal.md, "Oldest request first on the cores").
Work that finds no room waits, and the room that finishing work gives back goes straight to
the waiting work with the earliest deadline (a request's deadline is its arrival plus the
request timeout, so: the oldest request first), on the finishing thread, without a trip through
the event loop. The event loop (HTTP, JSON) stays outside the gate: it is short and it is what
lets new requests in. Work that needs more room than is free (a batch on the wide session)
holds back everything behind it, so it is never starved by narrow work.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class CpuGate:
    """At most `width` threads of gated work at once; waiting work starts earliest deadline
    first, and in arrival order between equal deadlines."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError(f"a CPU gate needs a width of at least 1, not {width}")
        self.width = width
        self._free = width
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._waiting: list[tuple[float, int, int, threading.Event]] = []
        """A heap of (deadline, arrival order, threads, its turn)."""

    @property
    def waiting(self) -> int:
        """Work waiting for room now."""
        with self._lock:
            return len(self._waiting)

    @contextmanager
    def hold(self, threads: int, deadline: float) -> Iterator[None]:
        """Room for `threads` threads (at most `width`) during the `with` block. Blocks until
        there is room and no waiting work has an earlier deadline; `deadline` is a monotonic
        time (smaller goes first)."""
        threads = max(1, min(threads, self.width))
        with self._lock:
            if not self._waiting and self._free >= threads:
                self._free -= threads
                turn = None
            else:
                turn = threading.Event()
                heapq.heappush(self._waiting, (deadline, next(self._order), threads, turn))
        if turn is not None:
            turn.wait()  # `_give_back` handed the room to this work before setting it
        try:
            yield
        finally:
            self._give_back(threads)

    def call(self, threads: int, deadline: float, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` while holding room for `threads` threads (for an executor)."""
        with self.hold(threads, deadline):
            return work(*args)

    def _give_back(self, threads: int) -> None:
        with self._lock:
            self._free += threads
            while self._waiting and self._waiting[0][2] <= self._free:
                _, _, needed, turn = heapq.heappop(self._waiting)
                self._free -= needed
                turn.set()
