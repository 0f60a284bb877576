"""Top-k: the same classes in the same order for every protocol, ties included."""

from __future__ import annotations

import numpy as np

from roost.contract.labels import Label
from service.oip import classification
from service.postprocess import top_indices, top_k

LABELS = [Label(name) for name in "abcdef"]


def test_ties_go_to_the_lower_index_in_v1_and_in_the_classification_extension() -> None:
    # An int8 model's outputs tie often; the k-th place must not depend on the algorithm.
    scores = np.array([0.1, 0.3, 0.05, 0.3, 0.2, 0.05], dtype=np.float32)
    assert top_indices(scores, 4).tolist() == [1, 3, 4, 0]
    assert [p.index for p in top_k(scores, 5, LABELS)] == [1, 3, 4, 0, 2]
    strings = classification(scores[None, :], 5, LABELS)[0]
    assert [int(s.split(b":")[1]) for s in strings] == [1, 3, 4, 0, 2]
    assert [p.index for p in top_k(scores, 99, LABELS)] == [1, 3, 4, 0, 2, 5]
