"""Prediction drift: what a version answers now against what it answered on its test split.

Serving has no labels, so the comparison is between prediction distributions: the share of
each predicted class and the top-1 score's histogram, over the last `size` answers, against
the card's `prediction_profile`. Each is summarised by the population stability index,
PSI = sum((now - then) * ln(now / then)); by the usual reading < 0.1 is stable, 0.1-0.25 a
shift worth a look and > 0.25 a real change.

Classes are grouped into at most `MAX_CLASS_BINS` bins (the profile's most frequent classes,
the rest together) so that a 1,000-class model's PSI measures drift, not sampling noise.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from roost.contract.card import CONFIDENCE_BINS, PredictionProfile, confidence_bin

MAX_CLASS_BINS = 20
SHARE_FLOOR = 1e-4
"""An empty bin's share, on either side, so it costs a finite amount (and nothing when it is
empty on both)."""


def psi(expected_counts: np.ndarray, observed_counts: np.ndarray) -> float:
    expected = np.maximum(expected_counts / expected_counts.sum(), SHARE_FLOOR)
    observed = np.maximum(observed_counts / observed_counts.sum(), SHARE_FLOOR)
    return float(np.sum((observed - expected) * np.log(observed / expected)))


class DriftWindow:
    """The last `size` answers of one version, binned as its profile is."""

    def __init__(self, profile: PredictionProfile, size: int) -> None:
        counts = np.asarray(profile.predicted_counts, dtype=np.float64)
        order = np.argsort(-counts, kind="stable")
        kept = order[: MAX_CLASS_BINS - 1] if len(counts) > MAX_CLASS_BINS else order
        self._class_bin = np.full(len(counts), len(kept), dtype=np.int64)  # the rest: last bin
        self._class_bin[kept] = np.arange(len(kept))
        bins = len(kept) + (1 if len(counts) > len(kept) else 0)
        self._expected_classes = np.bincount(self._class_bin, weights=counts, minlength=bins)
        self._expected_confidence = np.asarray(profile.confidence_counts, dtype=np.float64)
        self._classes = np.zeros(bins)
        self._confidence = np.zeros(CONFIDENCE_BINS)
        self._recent: deque[tuple[int, int]] = deque()
        self.size = size

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, top1: int, score: float) -> None:
        entry = (int(self._class_bin[top1]), confidence_bin(score))
        self._recent.append(entry)
        self._classes[entry[0]] += 1
        self._confidence[entry[1]] += 1
        if len(self._recent) > self.size:
            old_class, old_confidence = self._recent.popleft()
            self._classes[old_class] -= 1
            self._confidence[old_confidence] -= 1

    def class_psi(self) -> float:
        return psi(self._expected_classes, self._classes)

    def confidence_psi(self) -> float:
        return psi(self._expected_confidence, self._confidence)
