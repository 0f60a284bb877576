"""Ranking and top-k: the same classes in the same order for every protocol, ties included,
ranked on the thread that ran the batch."""

from __future__ import annotations

import threading

import numpy as np

from roost.contract.labels import Label
from service.protocols.http.classify import top_k
from service.protocols.oip.core import classification, probabilities
from service.runtime.scores import rank, ranked

LABELS = [Label(name) for name in "abcdef"]


def test_ties_go_to_the_lower_index_in_v1_and_in_the_classification_extension() -> None:
    # An int8 model's outputs tie often; the k-th place must not depend on the algorithm.
    row = np.array([0.1, 0.3, 0.05, 0.3, 0.2, 0.05], dtype=np.float32)
    (scores,) = rank(row[None, :])
    assert scores.ranking[:4].tolist() == [1, 3, 4, 0]
    assert (scores.top1, scores.top1_score) == (1, np.float32(0.3))
    assert [p.index for p in top_k(scores, 5, LABELS)] == [1, 3, 4, 0, 2]
    strings = classification([scores], 5, LABELS)[0]
    assert [int(s.split(b":")[1]) for s in strings] == [1, 3, 4, 0, 2]
    assert [p.index for p in top_k(scores, 99, LABELS)] == [1, 3, 4, 0, 2, 5]


def test_a_batch_is_ranked_row_by_row_and_stacks_back_to_its_tensor() -> None:
    batch = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]], dtype=np.float32)
    first, second = rank(batch)
    assert first.ranking.tolist() == [0, 1, 2] and second.ranking.tolist() == [2, 1, 0]
    assert np.array_equal(probabilities([first, second]), batch)


def test_ranked_sorts_on_the_thread_that_ran_the_batch() -> None:
    ran_on: list[int] = []

    def run(batch: np.ndarray, alone: bool, deadline: float) -> np.ndarray:
        ran_on.append(threading.get_ident())
        return batch.astype(np.float32)

    answers: list[object] = []
    worker = threading.Thread(
        target=lambda: answers.extend(ranked(run)(np.array([[1, 3, 2]]), False, 0.0))
    )
    worker.start()
    worker.join()
    assert ran_on == [worker.ident]
    (scores,) = answers
    assert scores.ranking.tolist() == [1, 2, 0]  # type: ignore[attr-defined]
