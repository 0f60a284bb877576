"""card.json's prediction profile: the drift baseline training writes and the server reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from roost.contract.card import (
    CONFIDENCE_BINS,
    confidence_bin,
    profile_predictions,
    read_card,
    set_prediction_profile,
)
from roost.contract.errors import ContractError
from roost.contract.publish import Release, publish


def test_profile_counts_predicted_classes_and_top1_scores() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.75, 0.05], [0.0, 0.0, 1.0], [0.34, 0.33, 0.33]])
    profile = profile_predictions(probs, "test split")
    assert profile.images == 4
    assert profile.predicted_counts == [2, 1, 1]
    expected = [0] * CONFIDENCE_BINS
    for bin_ in (9, 7, 9, 3):  # 1.0 falls in the last bin, not past it
        expected[bin_] += 1
    assert profile.confidence_counts == expected
    assert confidence_bin(0.0) == 0 and confidence_bin(-0.1) == 0 and confidence_bin(1.5) == 9


def test_published_profile_round_trips_and_can_be_added_later(tmp_path: Path) -> None:
    probs = np.eye(2, dtype=np.float32)
    profile = profile_predictions(probs, "test split")
    with_profile = publish(
        tmp_path, "m", Release(b"x", ["a", "b"], (4, 4), "stretch", prediction_profile=profile)
    )
    assert read_card(with_profile).prediction_profile == profile

    without = publish(tmp_path, "m", Release(b"y", ["a", "b"], (4, 4), "stretch", {"k": 1}))
    assert read_card(without).prediction_profile is None
    set_prediction_profile(without, profile)
    card = read_card(without)
    assert card.prediction_profile == profile and card.details == {"k": 1}
    assert not list(without.glob(".*.tmp"))

    three_classes = profile_predictions(np.eye(3, dtype=np.float32), "test split")
    with pytest.raises(ContractError, match="class count"):
        set_prediction_profile(without, three_classes)
