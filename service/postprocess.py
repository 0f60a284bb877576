"""Scores -> the top-k predictions a client sees."""

from __future__ import annotations

import numpy as np

from roost.contract.labels import Label
from service.schemas import Prediction


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The `k` highest scores' indices along the last axis, highest first; ties go to the lower
    index, so every protocol answers the same classes (int8 models tie often)."""
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def top_k(scores: np.ndarray, k: int, labels: list[Label]) -> list[Prediction]:
    """The `k` highest-scoring classes of one image's `scores`, highest first."""
    best = top_indices(scores, min(k, scores.shape[0]))
    return [
        Prediction(label=labels[i].name, index=int(i), score=float(scores[i]), url=labels[i].url)
        for i in best
    ]
