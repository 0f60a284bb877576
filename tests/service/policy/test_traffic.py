"""The pure parts of production traffic: split, stickiness, rollback, cache, drift."""

from __future__ import annotations

import numpy as np
import pytest

from roost.contract.card import PredictionProfile
from service.model_config import ModelConfigFile, RollbackConfig
from service.policy.drift import MAX_CLASS_BINS, DriftWindow, psi
from service.policy.result_cache import ENTRY_OVERHEAD_BYTES, ResultCache, cache_key, model_identity
from service.policy.traffic import RollbackMonitor, pick_label, sticky_point


def test_pick_label_covers_the_unit_interval_by_weight() -> None:
    weights = {"stable": 90.0, "canary": 10.0, "off": 0.0}
    assert pick_label(weights, 0.0) == "stable"
    assert pick_label(weights, 0.8999) == "stable"
    assert pick_label(weights, 0.9) == "canary"
    assert pick_label(weights, 0.999999) == "canary"
    assert pick_label({"a": 0.0, "b": 1.0}, 0.0) == "b"
    with pytest.raises(ValueError):
        pick_label({"a": 0.0}, 0.5)


def test_sticky_points_are_fixed_per_key_and_spread_over_keys() -> None:
    assert sticky_point("m", "user-1") == sticky_point("m", "user-1")
    assert sticky_point("m", "user-1") != sticky_point("other", "user-1")
    points = np.array([sticky_point("m", f"user-{i}") for i in range(2000)])
    assert points.min() >= 0.0 and points.max() < 1.0
    # Uniform: each tenth holds 200 +- 5 sd (sd = sqrt(2000 * 0.1 * 0.9) = 13.4).
    counts = np.histogram(points, bins=10, range=(0, 1))[0]
    assert np.all(np.abs(counts - 200) < 5 * 13.4), counts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rollback_needs_enough_answers_in_the_window_then_trips_once() -> None:
    clock = Clock()
    monitor = RollbackMonitor(
        RollbackConfig(label="canary", window_s=10, min_requests=4, max_error_ratio=0.25), clock
    )
    for _ in range(3):
        assert monitor.observe_answer(True, 0.01) is None  # 3 failures: too few answers
    clock.now += 11  # they leave the window
    for failed in (False, False, False, True):
        assert monitor.observe_answer(failed, 0.01) is None  # 1 of 4 = 0.25, not above
    reason = monitor.observe_answer(True, 0.01)
    assert reason is not None and "5xx ratio 0.40 > 0.25 (2 of 5 requests" in reason
    assert monitor.observe_answer(True, 0.01) is None and monitor.tripped == reason


def test_rollback_on_latency_and_on_disagreement() -> None:
    slow = RollbackMonitor(
        RollbackConfig(label="c", min_requests=3, max_error_ratio=None, max_p95_latency_ms=100),
        Clock(),
    )
    assert slow.observe_answer(False, 0.5) is None and slow.observe_answer(False, 0.5) is None
    assert "p95 latency 500 ms > 100 ms" in (slow.observe_answer(False, 0.5) or "")

    differs = RollbackMonitor(
        RollbackConfig(label="c", min_requests=4, max_disagreement=0.5), Clock()
    )
    for agreed in (True, False, False):
        assert differs.observe_comparison(agreed) is None
    assert "disagreement with the split's answer 0.75 > 0.5" in (
        differs.observe_comparison(False) or ""
    )


def test_config_refuses_inconsistent_policies() -> None:
    good = {"version_labels": {"stable": 1, "canary": 2}, "traffic": {"stable": 9, "canary": 1}}
    assert ModelConfigFile.model_validate(good).policy().traffic == {"stable": 9, "canary": 1}
    nulls = {"version_labels": None, "traffic": None, "drift_window": None}
    assert ModelConfigFile.model_validate(nulls).policy() == ModelConfigFile().policy()
    for bad, message in [
        ({"traffic": {"stable": 1}}, "not in version_labels"),
        ({**good, "traffic": {"stable": 0, "canary": 0}}, "must not all be 0"),
        ({**good, "traffic": {"stable": -1, "canary": 2}}, "must not be negative"),
        ({**good, "shadow": {"label": "blue", "percent": 5}}, "shadow.label"),
        ({**good, "rollback": {"label": "blue"}}, "rollback.label"),
        ({"version_labels": {"Stable": 1}}, "should match pattern"),
        ({"version_labels": {"stable": 0}}, "positive"),
        ({"min_confidence": 1.5}, "less than or equal to 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelConfigFile.model_validate(bad)


def test_cache_is_an_lru_bounded_in_bytes_returning_what_was_stored() -> None:
    probs = [np.full(10, i, dtype=np.float32) for i in range(4)]
    entry = probs[0].nbytes + ENTRY_OVERHEAD_BYTES
    cache = ResultCache(max_bytes=3 * entry)
    keys = [cache_key(1, "m", "image", bytes([i])) for i in range(4)]
    for key, p in zip(keys[:3], probs, strict=False):
        cache.put(key, p)
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[3], probs[3])  # evicts keys[1], the least recently used
    assert cache.get(keys[1]) is None and len(cache) == 3 and cache.bytes == 3 * entry
    got = cache.get(keys[3])
    assert got is not None and np.array_equal(got, probs[3]) and not got.flags.writeable
    assert cache_key(2, "m", "image", bytes([3])) != keys[3]  # another version, another answer
    cache.forget_version(1)
    assert len(cache) == 0 and cache.bytes == 0


def test_cache_key_holds_everything_that_shapes_the_answer() -> None:
    """The same bytes as an encoded image and as raw pixels are different pictures, and a
    version's files replaced in place are another model (issue #25, findings 9 and 10)."""
    data = bytes(range(48))
    model = model_identity("ab" * 32, (4, 4), "stretch")
    key = cache_key(1, model, "image", data)
    assert cache_key(1, model, "pixels", data) != key
    assert cache_key(1, model_identity("cd" * 32, (4, 4), "stretch"), "image", data) != key
    assert cache_key(1, model_identity("ab" * 32, (4, 4), "center_crop"), "image", data) != key
    assert cache_key(1, model_identity("ab" * 32, (8, 8), "stretch"), "image", data) != key
    assert cache_key(1, model_identity("AB" * 32, (4, 4), "stretch"), "image", data) == key


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    expected = np.array([50.0, 30.0, 20.0])
    assert psi(expected, expected * 3) == pytest.approx(0.0, abs=1e-9)
    assert psi(expected, np.array([40.0, 35.0, 25.0])) < 0.1
    assert psi(expected, np.array([5.0, 15.0, 80.0])) > 0.25


def test_drift_window_slides_and_groups_many_classes() -> None:
    profile = PredictionProfile(
        images=100,
        source="test split",
        predicted_counts=[50, 50, 0],
        confidence_counts=[0] * 9 + [100],
    )
    window = DriftWindow(profile, size=20)
    for _ in range(20):
        window.observe(0, 0.95)
        window.observe(1, 0.97)
    assert len(window) == 20
    assert window.class_psi() < 0.1 and window.confidence_psi() < 0.1
    for _ in range(20):
        window.observe(2, 0.4)  # the old answers leave the window entirely
    assert window.class_psi() > 1 and window.confidence_psi() > 1

    many = PredictionProfile(
        images=1000,
        source="test split",
        predicted_counts=[1] * 1000,
        confidence_counts=[100] * 10,
    )
    grouped = DriftWindow(many, size=1000)
    rng = np.random.default_rng(0)
    for top1 in rng.integers(0, 1000, size=1000):
        grouped.observe(int(top1), float(rng.random()))
    # Same distribution as the profile: 20 bins keep the sampling noise small.
    assert grouped._classes.shape == (MAX_CLASS_BINS,)
    assert grouped.class_psi() < 0.1 and grouped.confidence_psi() < 0.1
