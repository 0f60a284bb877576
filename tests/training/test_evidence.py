"""The rule for "held-out accuracy disagrees with training accuracy" (training/evidence.py), on
hand-written summaries."""

from __future__ import annotations

import pytest

from training import evidence
from training.evidence import FitEvidence, generalisation_problem, sampling_margin, unchecked


def _summary(**figures: object) -> dict[str, object]:
    """A summary.json of a run on ~1,800 images (180 val, 180 test), overridden by ``figures``."""
    return {
        "evaluated_on": "test",
        "train_accuracy": 0.95,
        "best_val_accuracy": 0.93,
        "restored_epoch": 6,
        "val_accuracy": 0.92,
        "test_accuracy": 0.91,
        "val_images": 180,
        "test_images": 180,
    } | figures


HISTORY = {"accuracy": [0.6, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95], "val_accuracy": [0.5] * 7}
"""history.json's per-epoch history of the summary's run (restored epoch 6: 0.94 while fitting)."""


def test_from_summary_reads_the_held_out_split_the_run_was_evaluated_on() -> None:
    fit = FitEvidence.from_summary(_summary())
    assert fit == FitEvidence(0.95, 0.93, 0.91, "test", 180, 180, None, 6)
    with_history = FitEvidence.from_summary(_summary(), HISTORY)
    assert with_history.fitted_train_accuracy == 0.94 and with_history.restored_epoch == 6
    beyond = FitEvidence.from_summary(_summary(restored_epoch=9), HISTORY)
    assert beyond.fitted_train_accuracy is None
    no_test = FitEvidence.from_summary(
        _summary(evaluated_on="val", test_accuracy=None, test_images=0)
    )
    assert (no_test.held_out_split, no_test.held_out_accuracy, no_test.held_out_images) == (
        "val",
        0.92,
        180,
    )


def test_the_issues_run_is_refused_with_causes_and_fix() -> None:
    """MiniVGGNet from scratch: train 0.98, val stuck at 0.33, test 0.35 (issue #30)."""
    fit = FitEvidence.from_summary(
        _summary(train_accuracy=0.98, best_val_accuracy=0.36, val_accuracy=0.33, test_accuracy=0.35)
    )
    message = generalisation_problem(fit)
    assert message is not None
    assert "test accuracy 0.350 is 63 points below training accuracy 0.980 (allowed 15 " in message
    assert "best val" not in message  # val was as poor as test: only the training gap fired
    for named in ("overfitting", "BatchNormalization", "augmentation", "pretrained backbone"):
        assert named in message
    assert "--allow-weak-model" in message


def test_a_healthy_small_run_passes() -> None:
    assert generalisation_problem(FitEvidence.from_summary(_summary(), HISTORY)) is None
    # Also on a test split of 40 images, where one image is 2.5 points.
    fit = FitEvidence.from_summary(_summary(test_images=40, val_images=40))
    assert generalisation_problem(fit) is None


def test_held_out_far_below_the_runs_best_val_is_refused() -> None:
    """Validation looked good while fitting, but the saved weights do not (BN statistics)."""
    fit = FitEvidence.from_summary(
        _summary(
            train_accuracy=0.75,
            best_val_accuracy=0.75,
            test_accuracy=0.56,
            val_images=400,
            test_images=400,
        )
    )
    message = generalisation_problem(fit)
    assert message is not None
    assert "19 points below the run's best val accuracy 0.750 (allowed 10 points + 7" in message
    assert "training accuracy 0.750" not in message  # 19 points: within 15 + 5 on 400 images


def test_a_saved_network_unlike_the_fitted_one_is_refused_and_named() -> None:
    """MiniVGGNet from scratch on scikit-learn's digits (1,797 images, batch 64): 0.69 on the
    training batches at the restored epoch 1, but the saved model (BatchNormalization's moving
    statistics) scores 0.195 on those training images and 0.207 on test. The saved model's
    training accuracy is no higher than test, so only the accuracy while fitting shows it."""
    summary = _summary(
        train_accuracy=0.195,
        best_val_accuracy=0.22,
        restored_epoch=1,
        val_accuracy=0.22,
        test_accuracy=0.207,
        test_images=179,
    )
    history = {"accuracy": [0.687, 0.957, 0.976, 0.99, 0.994]}
    message = generalisation_problem(FitEvidence.from_summary(summary, history))
    assert message is not None
    assert "48 points below the accuracy on the training batches while fitting" in message
    assert "(0.687 at the restored epoch 1; allowed 15 points + 7 for sample size)" in message
    assert "the saved model scores 0.195 on those same training images" in message
    assert "not the network that was fitted" in message
    # Overfitting (the saved model is as good as the fitted one on its training images) names
    # the saved model's training accuracy alone.
    overfitted = FitEvidence.from_summary(
        _summary(train_accuracy=0.98, test_accuracy=0.35, restored_epoch=2),
        {"accuracy": [0.9, 0.97]},
    )
    message = str(generalisation_problem(overfitted))
    assert "below training accuracy 0.980" in message and "while fitting" not in message


def test_the_thresholds_sit_where_their_constants_say() -> None:
    margin = sampling_margin(180)
    assert margin == pytest.approx(1 / 180**0.5)
    edge = 0.95 - evidence.MAX_TRAIN_GAP - margin
    just_inside = FitEvidence(0.95, None, edge + 0.001, "test", 180)
    just_outside = FitEvidence(0.95, None, edge - 0.001, "test", 180)
    assert generalisation_problem(just_inside) is None
    assert generalisation_problem(just_outside) is not None


def test_a_small_held_out_set_widens_the_allowance_by_its_sampling_error() -> None:
    """The same 25-point gap: beyond noise on 400 test images, within it on 10."""
    assert generalisation_problem(FitEvidence(0.95, None, 0.70, "test", 400)) is not None
    assert generalisation_problem(FitEvidence(0.95, None, 0.70, "test", 10)) is None
    assert sampling_margin(10, 0) == 0.0  # an unknown count adds no allowance


def test_val_as_held_out_counts_its_images_once_against_best_val() -> None:
    """Without a test split the held-out accuracy and the best val accuracy are on the same
    images: their difference is the restored epoch's, not two samples'."""
    # 18 points: within 10 + 1/sqrt(100) = 20.
    assert generalisation_problem(FitEvidence(None, 0.80, 0.62, "val", 100, 100)) is None
    fit = FitEvidence(None, 0.80, 0.58, "val", 100, 100)
    message = generalisation_problem(fit)
    assert (
        message is not None
        and "val accuracy 0.580" in message
        and "(allowed 10 points + 10 for sample size)" in message
    )
    # The same figures with a test split of 100 images: two samples, a wider allowance (24).
    assert generalisation_problem(FitEvidence(None, 0.80, 0.58, "test", 100, 100)) is None


def test_a_run_made_before_training_accuracy_was_recorded_is_judged_on_what_it_has() -> None:
    old = FitEvidence.from_summary(
        {"evaluated_on": "test", "test_accuracy": 0.35, "val_accuracy": 0.33, "test_images": 180}
    )
    assert old.train_accuracy is None and old.best_val_accuracy is None
    assert generalisation_problem(old) is None
    note = unchecked(old)
    expected = "no training accuracy, best val accuracy or training accuracy while fitting"
    assert note is not None and expected in note
    assert unchecked(FitEvidence.from_summary(_summary(), HISTORY)) is None
    without_history = unchecked(FitEvidence.from_summary(_summary()))
    assert without_history is not None and "no training accuracy while fitting" in without_history
    assert "no test accuracy" in str(unchecked(FitEvidence.from_summary({})))
