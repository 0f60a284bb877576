"""Scores -> the top-k predictions a client sees."""

from __future__ import annotations

import numpy as np

from roost.contract.labels import Label
from service.schemas import Prediction


def top_k(scores: np.ndarray, k: int, labels: list[Label]) -> list[Prediction]:
    """The `k` highest-scoring classes of one image's `scores`, highest first."""
    k = min(k, scores.shape[0])
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return [
        Prediction(label=labels[i].name, index=int(i), score=float(scores[i]), url=labels[i].url)
        for i in best
    ]
