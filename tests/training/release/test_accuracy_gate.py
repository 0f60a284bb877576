"""The accuracy gates' arithmetic, on hand-made probabilities: the reduced-precision gate
(``judge``) and the held-out gate every export passes (``held_out``)."""

from __future__ import annotations

import numpy as np
import pytest

from training.evidence import FitEvidence
from training.release import gate
from training.release.errors import ReleaseError


def _probs(top1: list[int], classes: int = 10, score: float = 0.9) -> np.ndarray:
    """One row per image: ``score`` on its top-1 class, the rest spread evenly."""
    rows = np.full((len(top1), classes), (1 - score) / (classes - 1))
    rows[np.arange(len(top1)), top1] = score
    return rows


def test_gate_passes_a_candidate_within_one_point_and_98_percent() -> None:
    labels = np.arange(100) % 10
    fp32 = _probs(list(labels))
    moved = labels.copy()
    moved[0] = 3  # one image flips from right to wrong: a drop of exactly 1 point, 99 % agree
    result = gate.judge(fp32, _probs(list(moved)), labels)
    assert result.passed and result.rule == "labelled"
    assert result.fp32_accuracy == 1.0 and result.candidate_accuracy == pytest.approx(0.99)
    assert result.accuracy_drop == pytest.approx(0.01)
    assert result.top1_agreement == pytest.approx(0.99)
    assert result.to_dict()["thresholds"] == {"max_accuracy_drop": 0.01, "min_agreement": 0.98}


def test_gate_fails_on_an_accuracy_drop_over_one_point() -> None:
    labels = np.arange(100) % 10
    moved = labels.copy()
    moved[:2] = (labels[:2] + 1) % 10  # 2 points lost, agreement still 98 %
    result = gate.judge(_probs(list(labels)), _probs(list(moved)), labels)
    assert not result.passed
    assert result.top1_agreement == pytest.approx(0.98)
    assert "accuracy drop 2.00 points" in result.reason and "agreement" not in result.reason


def test_gate_fails_on_agreement_even_when_accuracy_holds() -> None:
    labels = np.zeros(100, int)
    fp32_top1 = [0] * 90 + [1] * 10  # fp32 is wrong on ten images
    cand_top1 = [0] * 90 + [2] * 3 + [1] * 7  # the candidate is wrong on the same ten, differently
    result = gate.judge(_probs(fp32_top1), _probs(cand_top1), labels)
    assert result.accuracy_drop == 0.0
    assert result.top1_agreement == pytest.approx(0.97)
    assert not result.passed and result.reason.startswith("top-1 agreement 97.0% < 98%")


def test_unlabelled_gate_judges_agreement_where_fp32_is_confident() -> None:
    # 50 confident images (0.9) that agree; 50 ambiguous ones (0.3) of which 30 flip to the
    # fp32 runner-up, which stays in the candidate's top 5.
    fp32 = np.vstack([_probs([1] * 50, score=0.9), _probs([1] * 50, score=0.3)])
    fp32[50:, 2] = 0.25  # runner-up
    cand = fp32.copy()
    cand[50:80, 1], cand[50:80, 2] = 0.25, 0.3
    result = gate.judge(fp32, cand)
    assert result.rule == "unlabelled" and result.passed
    assert result.top1_agreement == pytest.approx(0.7)  # reported, not gated
    assert result.confident_images == 50 and result.confident_agreement == 1.0
    assert result.top1_in_top5 == 1.0 and result.fp32_accuracy is None

    flipped = cand.copy()
    flipped[0, 1], flipped[0, 2] = 0.0, 0.9  # one confident image of 50 flips: 98 %, passes
    assert gate.judge(fp32, flipped).passed
    flipped[1, 1], flipped[1, 2] = 0.0, 0.9  # two: 96 %
    result = gate.judge(fp32, flipped)
    assert not result.passed and "where fp32 is confident 96.0% < 98%" in result.reason


def test_unlabelled_gate_fails_when_fp32_top1_leaves_the_top5() -> None:
    fp32 = _probs([0] * 100, score=0.9)
    cand = fp32.copy()
    cand[:2, 0] = 0.0  # fp32's top-1 drops below five others on two images: 98 % < 99 %
    result = gate.judge(fp32, cand)
    assert result.confident_agreement == pytest.approx(0.98)
    assert not result.passed and "top-5 98.0% < 99%" in result.reason
    ambiguous = _probs([0] * 10, score=0.4)
    result = gate.judge(ambiguous, ambiguous)
    assert not result.passed and "no image where fp32's top-1 score is above 0.5" in result.reason
    with pytest.raises(ValueError):
        gate.judge(fp32, cand[:, :5])


HEALTHY = FitEvidence(
    0.95, 0.93, 0.91, "test", 180, 180, fitted_train_accuracy=0.94, restored_epoch=6
)
"""A small run that generalises: 4 points between training and test accuracy."""
OVERFITTED = FitEvidence(0.98, 0.36, 0.35, "test", 180, 180)
"""Issue #30's MiniVGGNet: train 0.98, test 0.35."""


def _answers(right: int, wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over 10 balanced classes with ``right`` images answered right."""
    labels = np.arange(right + wrong) % 10
    top1 = np.concatenate([labels[:right], (labels[right:] + 1) % 10])
    return _probs(list(top1)), labels


def test_held_out_gate_passes_a_healthy_run_and_records_its_evidence() -> None:
    probs, labels = _answers(91, 9)
    figures = gate.held_out(probs, labels, "test", False, HEALTHY, min_accuracy=0.9)
    assert figures["accuracy"] == pytest.approx(0.91) and figures["min_accuracy"] == 0.9
    assert figures["refusals"] == [] and not figures["weak"] and not figures["forced"]
    fit = figures["fit"]
    assert fit["train_accuracy"] == 0.95 and fit["best_val_accuracy"] == 0.93
    assert fit["problem"] is None and fit["unchecked"] is None
    assert fit["thresholds"] == {"max_train_gap": 0.15, "max_best_val_gap": 0.10}


@pytest.mark.parametrize(
    ("right", "fit", "min_accuracy", "named"),
    [
        (9, HEALTHY, None, "no better than always answering the most common class"),
        (80, HEALTHY, 0.85, "test accuracy 0.800 is below --min-accuracy 0.850"),
        (91, OVERFITTED, None, "63 points below training accuracy 0.980"),
    ],
    ids=["majority-class", "min-accuracy", "generalisation"],
)
def test_held_out_gate_refuses_each_failure_alone_unless_allowed(
    right: int, fit: FitEvidence, min_accuracy: float | None, named: str
) -> None:
    probs, labels = _answers(right, 100 - right)
    with pytest.raises(ReleaseError) as refused:
        gate.held_out(probs, labels, "test", False, fit, min_accuracy)
    message = str(refused.value)
    assert named in message and message.count("\n- ") == 1
    assert "--allow-weak-model" in message.splitlines()[-1]

    figures = gate.held_out(probs, labels, "test", True, fit, min_accuracy)
    assert figures["weak"] and figures["forced"] and len(figures["refusals"]) == 1
    assert named in figures["refusals"][0]


def test_held_out_gate_names_every_reason_at_once() -> None:
    probs, labels = _answers(5, 95)  # 5 % against a 10 % majority class
    with pytest.raises(ReleaseError) as refused:
        gate.held_out(probs, labels, "test", False, OVERFITTED, min_accuracy=0.5)
    assert str(refused.value).count("\n- ") == 3


def test_held_out_gate_without_fit_evidence_judges_the_baseline_alone() -> None:
    probs, labels = _answers(91, 9)
    figures = gate.held_out(probs, labels, "val", False)
    assert figures["fit"] is None and figures["split"] == "val" and not figures["weak"]
