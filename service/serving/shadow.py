"""Shadow traffic: a copy of a request run on another version after the client has its answer.

The client never waits for a copy and never sees it. A copy takes its own lease (unloading its
version waits for it), its own admission (a full queue skips it: shadow work never makes real
requests wait longer than a full queue would) and its own deadline; at most `max_in_flight`
copies run at once. Its top-1 is compared with the answer the client got, per image, by label.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from service.errors import Overloaded, ServiceError
from service.observability.metrics import ServiceMetrics
from service.repository.registry import Route, ServedVersion
from service.runtime.scores import Scores

log = logging.getLogger(__name__)

Score = Callable[[ServedVersion, float], Awaitable[list[Scores]]]
"""Scores the request's images on a version by a monotonic deadline."""


class ShadowRunner:
    def __init__(self, metrics: ServiceMetrics, timeout_s: float, max_in_flight: int = 64):
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(
        self,
        route: Route,
        answered: Sequence[Scores],
        score: Score,
        on_disagreement: Callable[[list[int]], None] | None = None,
    ) -> None:
        """Run `score` on `route.shadow` in the background and compare with `answered`;
        `on_disagreement` gets the indexes of the images whose top-1 labels differ."""
        shadow = route.shadow
        assert shadow is not None
        if len(self._tasks) >= self._max_in_flight:
            self._count(shadow, "skipped", len(answered))
            return
        lease = contextlib.ExitStack()
        lease.enter_context(shadow.lease())
        task = asyncio.get_running_loop().create_task(
            self._run(route, answered, score, lease, on_disagreement)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        route: Route,
        answered: Sequence[Scores],
        score: Score,
        lease: contextlib.ExitStack,
        on_disagreement: Callable[[list[int]], None] | None,
    ) -> None:
        shadow = route.shadow
        assert shadow is not None
        with lease:
            started = time.perf_counter()
            try:
                scores = await score(shadow, time.monotonic() + self._timeout_s)
            except Overloaded:
                self._count(shadow, "skipped", len(answered))
                return
            except ServiceError as exc:
                log.warning("shadow copy on %s v%d failed: %s", shadow.name, shadow.version, exc)
                self._count(shadow, "error", len(answered))
                return
            except Exception:
                log.exception("shadow copy on %s v%d failed", shadow.name, shadow.version)
                self._count(shadow, "error", len(answered))
                return
            labels = (route.served.artifacts.labels, shadow.artifacts.labels)
            self._metrics.shadow_seconds.labels(shadow.name, str(shadow.version)).observe(
                time.perf_counter() - started
            )
            disagreed = []
            for index, (mine, theirs) in enumerate(zip(answered, scores, strict=True)):
                agreed = labels[0][mine.top1].name == labels[1][theirs.top1].name
                self._count(shadow, "agree" if agreed else "disagree", 1)
                route.policy.observe_comparison(shadow.version, agreed)
                if not agreed:
                    disagreed.append(index)
            if disagreed and on_disagreement is not None:
                on_disagreement(disagreed)

    def _count(self, shadow: ServedVersion, outcome: str, images: int) -> None:
        self._metrics.shadow_requests.labels(shadow.name, str(shadow.version), outcome).inc(images)

    async def close(self) -> None:
        """Cancel the copies still running (at shutdown, before the batchers close)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
