"""Scores: an image's class probabilities and their ranking, the same for every protocol.

A batch's probabilities are ranked on the inference thread that computed them (`ranked`), not
on the event loop: a numpy sort or reduction over a thousand classes releases the GIL, and the
loop, the one thread every request passes through, then waits to take it back from the
threads running batches (docs/benchmarks-journal.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RunProbabilities = Callable[[np.ndarray, bool, float], np.ndarray]
"""(batch, alone, deadline) -> probabilities `[N, C]`: a classifier's run."""


@dataclass(frozen=True, slots=True)
class Scores:
    """One image's answer: its class probabilities `[C]` and its classes, best first."""

    probabilities: np.ndarray
    ranking: np.ndarray
    """Class indices by falling probability; ties go to the lower index, so every protocol
    answers the same classes (int8 models tie often)."""

    @property
    def top1(self) -> int:
        return int(self.ranking[0])

    @property
    def top1_score(self) -> float:
        return float(self.probabilities[self.ranking[0]])


def rank(probabilities: np.ndarray) -> list[Scores]:
    """Each row of `[N, C]` probabilities with its ranking: one sort for the whole batch."""
    rankings = np.argsort(-probabilities, axis=-1, kind="stable")
    return [Scores(row, order) for row, order in zip(probabilities, rankings, strict=True)]


def ranked(run: RunProbabilities) -> Callable[[np.ndarray, bool, float], list[Scores]]:
    """`run`, its answer ranked on the thread that ran it (the batcher's inference thread)."""

    def run_and_rank(batch: np.ndarray, alone: bool, deadline: float) -> list[Scores]:
        return rank(run(batch, alone, deadline))

    return run_and_rank
