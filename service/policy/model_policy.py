"""A model's request-time policy at work: split, shadow, rollback, cache, confidence, drift.

One `ModelPolicy` per model, built from config.json's policy keys (`ModelPolicyConfig`) and
replaced, with fresh windows, when they change. Everything here runs on the event loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Histogram

from roost.contract.card import PredictionProfile
from roost.contract.labels import Label
from service.errors import NotReady
from service.model_config import ModelPolicyConfig
from service.observability.metrics import ServiceMetrics
from service.policy.drift import DriftWindow
from service.policy.result_cache import CacheKey, ResultCache
from service.policy.traffic import RollbackMonitor, pick_label, sticky_point
from service.runtime.scores import Scores, rank

log = logging.getLogger(__name__)

Outcome = Literal["answered", "failed"]
"""What the rollback rule counts of a request: an answer, or a failure of the version's own."""

MIN_DRIFT_ANSWERS = 100
"""Answers the drift window needs (or all of a smaller window) before its PSI is reported."""


@dataclass(frozen=True)
class _VersionCounters:
    """One serving version's result metrics (Prometheus children) and drift window."""

    top1_score: Histogram
    uncertain: Counter
    predicted: Callable[[int], Counter]
    """The predictions counter of a class index."""
    window: DriftWindow | None


class ModelPolicy:
    def __init__(
        self,
        name: str,
        config: ModelPolicyConfig,
        metrics: ServiceMetrics,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self._metrics = metrics
        self._rng = rng or random.Random()
        rollback = config.rollback
        self._monitor = None if rollback is None else RollbackMonitor(rollback, clock)
        self.rolled_back: dict[str, str] = {}
        self.cache = (
            None if config.cache is None else ResultCache(int(config.cache.max_mib * 2**20))
        )
        self._counters: dict[int, _VersionCounters] = {}
        for label, weight in config.traffic.items():
            metrics.traffic_weight.labels(name, label).set(weight)
        # Exported at 0 from the start: the alert and the dashboard's ratios have data.
        if rollback is not None:
            metrics.rollbacks.labels(name, rollback.label)
        if config.shadow is not None:
            target = str(config.version_labels[config.shadow.label])
            for outcome in ("agree", "disagree", "error", "skipped"):
                metrics.shadow_requests.labels(name, target, outcome)

    # --- routing ----------------------------------------------------------------------------

    def weights(self) -> dict[str, float]:
        """The split's weights now: the configured ones, 0 for a rolled-back label."""
        return {
            label: 0.0 if label in self.rolled_back else weight
            for label, weight in self.config.traffic.items()
        }

    def choose(self, serving: set[int], route_key: str | None) -> int | None:
        """The version of the split for a request naming none; None: no split, the latest."""
        if not self.config.traffic:
            return None
        labels = self.config.version_labels
        weights = {
            label: weight
            for label, weight in self.weights().items()
            if weight > 0 and labels[label] in serving
        }
        if not weights:
            raise NotReady(f"model {self.name!r}: no version of its traffic split is serving")
        point = self._rng.random() if route_key is None else sticky_point(self.name, route_key)
        return labels[pick_label(weights, point)]

    def shadow_of(self, version: int, serving: set[int]) -> int | None:
        """The version that also gets a copy of this request, if it is drawn for one."""
        shadow = self.config.shadow
        if shadow is None:
            return None
        target = self.config.version_labels[shadow.label]
        if target == version or target not in serving:
            return None
        return target if self._rng.random() * 100 < shadow.percent else None

    # --- rollback ---------------------------------------------------------------------------

    def observe_answer(self, version: int, outcome: Outcome, seconds: float) -> None:
        """An answer of `version`, or a failure that is the version's own
        (service/serving/admission.py decides which: what a client caused is never passed
        here)."""
        if self._watched(version):
            assert self._monitor is not None
            self._judged(self._monitor.observe_answer(outcome == "failed", seconds))

    def observe_comparison(self, version: int, agreed: bool) -> None:
        if self._watched(version):
            assert self._monitor is not None
            self._judged(self._monitor.observe_comparison(agreed))

    def _watched(self, version: int) -> bool:
        rollback = self.config.rollback
        return (
            rollback is not None
            and rollback.label not in self.rolled_back
            and self.config.version_labels[rollback.label] == version
        )

    def _judged(self, reason: str | None) -> None:
        if reason is None:
            return
        assert self.config.rollback is not None
        label = self.config.rollback.label
        self.rolled_back[label] = reason
        self._metrics.traffic_weight.labels(self.name, label).set(0)
        self._metrics.rollbacks.labels(self.name, label).inc()
        log.error(
            "model %s: rolled back %s (version %d): %s; its weight is 0 until config.json changes",
            self.name,
            label,
            self.config.version_labels[label],
            reason,
        )

    # --- results ----------------------------------------------------------------------------

    def cached(self, key: CacheKey) -> Scores | None:
        """The answer remembered for `key`, ranked again here: the cache keeps probabilities
        alone (a ranking would take twice their bytes), and a hit spares a whole batch."""
        assert self.cache is not None
        found = self.cache.get(key)
        self._metrics.cache_requests.labels(self.name, "miss" if found is None else "hit").inc()
        return None if found is None else rank(found[None, :])[0]

    def remember(self, key: CacheKey, scores: Scores) -> None:
        assert self.cache is not None
        self.cache.put(key, scores.probabilities)
        self._metrics.cache_bytes.labels(self.name).set(self.cache.bytes)
        self._metrics.cache_entries.labels(self.name).set(len(self.cache))

    def is_uncertain(self, scores: Scores) -> bool:
        return self._below_confidence(scores.top1_score)

    def _below_confidence(self, top1_score: float) -> bool:
        floor = self.config.min_confidence
        return floor is not None and top1_score < floor

    def observe_results(
        self,
        version: int,
        labels: Sequence[Label],
        profile: PredictionProfile | None,
        scores: Sequence[Scores],
    ) -> None:
        """Count answered images: top-1 score and class, uncertainty, drift."""
        counters = self._counters.get(version)
        if counters is None:
            counters = self._counters[version] = self._count_version(version, labels, profile)
        for answer in scores:
            top1, score = answer.top1, answer.top1_score
            counters.top1_score.observe(score)
            counters.predicted(top1).inc()
            if self._below_confidence(score):
                counters.uncertain.inc()
            if counters.window is not None:
                counters.window.observe(top1, score)

    def _count_version(
        self, version: int, labels: Sequence[Label], profile: PredictionProfile | None
    ) -> _VersionCounters:
        """The version's result metrics, looked up once instead of per answer; its drift gauges
        are computed when /metrics is read, not on every answer."""
        m, v = self._metrics, str(version)
        window = None if profile is None else DriftWindow(profile, self.config.drift_window)
        if window is not None:
            enough = min(MIN_DRIFT_ANSWERS, window.size)
            m.drift_window.labels(self.name, v).set_function(lambda: len(window))
            m.drift.labels(self.name, v, "class").set_function(
                lambda: window.class_psi() if len(window) >= enough else 0.0
            )
            m.drift.labels(self.name, v, "confidence").set_function(
                lambda: window.confidence_psi() if len(window) >= enough else 0.0
            )
        return _VersionCounters(
            top1_score=m.top1_score.labels(self.name, v),
            uncertain=m.uncertain.labels(self.name, v),  # exported at 0 too: a ratio's numerator
            predicted=functools.cache(
                lambda top1: m.predictions.labels(self.name, v, labels[top1].name)
            ),
            window=window,
        )

    # --- lifecycle --------------------------------------------------------------------------

    def forget_version(self, version: int) -> None:
        """`version` stopped serving: drop its drift window, gauges and cached answers."""
        self._counters.pop(version, None)
        v = str(version)
        for kind in ("class", "confidence"):
            with contextlib.suppress(KeyError):
                self._metrics.drift.remove(self.name, v, kind)
        with contextlib.suppress(KeyError):
            self._metrics.drift_window.remove(self.name, v)
        if self.cache is not None:
            self.cache.forget_version(version)
            self._metrics.cache_bytes.labels(self.name).set(self.cache.bytes)
            self._metrics.cache_entries.labels(self.name).set(len(self.cache))

    def close(self) -> None:
        """Replaced by a new policy or the model is gone: drop the gauges only it sets."""
        for label in self.config.traffic:
            self._metrics.forget(self._metrics.traffic_weight, self.name, label)
        for version in list(self._counters):
            self.forget_version(version)
        for gauge in (self._metrics.cache_bytes, self._metrics.cache_entries):
            self._metrics.forget(gauge, self.name)
