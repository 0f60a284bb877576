"""Which labelled version a request gets, and when a canary loses its share by itself.

Pure decisions, no I/O: `pick_label` maps a point in [0, 1) onto the weights, `sticky_point`
makes that point a function of the client's key (same key, same version while the weights
stand), and `RollbackMonitor` watches one labelled version's answers over a sliding window.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from service.model_config import RollbackConfig


def sticky_point(model: str, key: str) -> float:
    """A uniform point in [0, 1) fixed by (model, key)."""
    digest = hashlib.sha256(f"{model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_label(weights: dict[str, float], point: float) -> str:
    """The label whose cumulative share of `weights` (in their order) covers `point`."""
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("no label has weight")
    reached = 0.0
    chosen = ""
    for label, weight in weights.items():
        if weight <= 0:
            continue
        chosen = label
        reached += weight / total
        if point < reached:
            break
    return chosen  # `point` at the very top (rounding) falls to the last weighted label


class RollbackMonitor:
    """One labelled version's 5xx ratio, p95 latency and shadow disagreement over `window_s`.

    `observe_*` return the reason once a threshold is passed with enough evidence in the
    window; the monitor then stays tripped (promotion or a retry is a config change).
    """

    def __init__(self, config: RollbackConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._answers: deque[tuple[float, bool, float]] = deque()
        self._comparisons: deque[tuple[float, bool]] = deque()
        self.tripped: str | None = None

    def observe_answer(self, failed: bool, seconds: float) -> str | None:
        now = self._clock()
        self._answers.append((now, failed, seconds))
        self._prune(now)
        return self._judge()

    def observe_comparison(self, agreed: bool) -> str | None:
        now = self._clock()
        self._comparisons.append((now, agreed))
        self._prune(now)
        return self._judge()

    def _prune(self, now: float) -> None:
        start = now - self.config.window_s
        for window in (self._answers, self._comparisons):
            while window and window[0][0] < start:
                window.popleft()

    def _judge(self) -> str | None:
        if self.tripped is not None:
            return None
        c = self.config
        answers = len(self._answers)
        over = f"over the last {c.window_s:g} s"
        if answers >= c.min_requests:
            errors = sum(1 for _, failed, _ in self._answers if failed)
            if c.max_error_ratio is not None and errors / answers > c.max_error_ratio:
                self.tripped = (
                    f"5xx ratio {errors / answers:.2f} > {c.max_error_ratio:g} "
                    f"({errors} of {answers} requests {over})"
                )
            p95_ms = 1000 * float(np.percentile([s for _, _, s in self._answers], 95))
            if c.max_p95_latency_ms is not None and p95_ms > c.max_p95_latency_ms:
                self.tripped = self.tripped or (
                    f"p95 latency {p95_ms:.0f} ms > {c.max_p95_latency_ms:g} ms "
                    f"({answers} requests {over})"
                )
        compared = len(self._comparisons)
        if c.max_disagreement is not None and compared >= c.min_requests:
            differ = sum(1 for _, agreed in self._comparisons if not agreed)
            if differ / compared > c.max_disagreement:
                self.tripped = self.tripped or (
                    f"top-1 disagreement with the split's answer {differ / compared:.2f} > "
                    f"{c.max_disagreement:g} ({differ} of {compared} shadow copies {over})"
                )
        return self.tripped
