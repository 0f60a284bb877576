"""`roost export`'s held-out gate through the real command on the tiny trained run: each
refusal (a generalisation gap in the run's evidence, a --min-accuracy floor, the majority-class
baseline) publishes nothing, and --allow-weak-model publishes with the card saying so."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.training,
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning"),
]
import tensorflow  # noqa: E402, F401  (the train extra: missing, it fails)

from roost.contract.card import read_card  # noqa: E402
from training.__main__ import main  # noqa: E402

ISSUE_30 = {
    "train_accuracy": 0.98,
    "best_val_accuracy": 0.36,
    "restored_epoch": 1,
    "test_accuracy": 0.35,
    "val_accuracy": 0.33,
    "test_images": 180,
    "val_images": 180,
}
"""The summary figures of issue #30's MiniVGGNet on ~1,800 images."""


def _copy_run(trained_run: Path, tmp_path: Path, **figures: object) -> Path:
    """A copy of the tiny run whose summary.json carries ``figures`` (None: the key removed)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    summary = json.loads((run / "summary.json").read_text())
    summary |= figures
    summary = {key: value for key, value in summary.items() if value is not None}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _relabel_test_split(run: Path, rows: list[tuple[int, str]]) -> None:
    """Make the run's test split ``rows`` of (test image index, label): "right" labels it with
    the model's prediction (predictions.csv), "other" with a class the rows name no other way."""
    with (run / "predictions.csv").open() as handle:
        predicted = [row["predicted_label"] for row in csv.DictReader(handle)]
    splits = json.loads((run / "split.json").read_text())
    classes = splits["class_names"]
    test = splits["test"]
    right = [classes.index(predicted[index]) for index, how in rows if how == "right"]
    new_rows = []
    for index, how in rows:
        label = classes.index(predicted[index])
        if how != "right":  # a class that is neither this image's prediction nor a right label
            label = next(c for c in range(len(classes)) if c != label and c not in right)
        new_rows.append([test[index][0], label])
    splits["test"] = new_rows
    (run / "split.json").write_text(json.dumps(splits))


def _two_predicted_classes(run: Path) -> tuple[int, int]:
    """Two test images the model puts in different classes."""
    with (run / "predictions.csv").open() as handle:
        predicted = [row["predicted_label"] for row in csv.DictReader(handle)]
    first = 0
    second = next((i for i, label in enumerate(predicted) if label != predicted[0]), None)
    assert second is not None, "the tiny run answers one class on its test split"
    return first, second


def _export(run: Path, repo: Path, *flags: str) -> int:
    return main(["export", str(run), "--repo", str(repo), "--name", "gated", "--fp32", *flags])


def test_the_issues_generalisation_gap_is_refused_then_published_when_allowed(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(trained_run, tmp_path, **ISSUE_30)
    repo = tmp_path / "repo"

    assert _export(run, repo) == 1
    error = capsys.readouterr().err
    assert "test accuracy 0.350 is 63 points below training accuracy 0.980" in error
    assert "BatchNormalization" in error and "--allow-weak-model" in error
    assert not (repo / "gated" / "1").exists()

    assert _export(run, repo, "--allow-weak-model") == 0
    assert "warning: publishing it anyway (--allow-weak-model)" in capsys.readouterr().out
    baseline = read_card(repo / "gated" / "1").details["baseline"]
    assert baseline["weak"] and baseline["forced"]
    assert len(baseline["refusals"]) == 1 and "63 points" in baseline["refusals"][0]
    fit = baseline["fit"]
    assert (fit["train_accuracy"], fit["best_val_accuracy"]) == (0.98, 0.36)
    assert (fit["held_out_accuracy"], fit["held_out_split"]) == (0.35, "test")
    fitted = json.loads((run / "history.json").read_text())["history"]["accuracy"][0]
    assert (fit["restored_epoch"], fit["fitted_train_accuracy"]) == (1, fitted)
    assert fit["problem"] == baseline["refusals"][0]
    assert fit["thresholds"] == {"max_train_gap": 0.15, "max_best_val_gap": 0.10}


def test_min_accuracy_refuses_below_the_floor_and_the_card_records_it(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The floor alone: the evidence agrees with the 2/3 this test makes the accuracy.
    healthy = {
        "train_accuracy": 0.7,
        "best_val_accuracy": 0.7,
        "test_accuracy": 0.67,
        "restored_epoch": None,
    }
    run = _copy_run(trained_run, tmp_path, **healthy)
    first, second = _two_predicted_classes(run)
    # Three labels, one each of three classes, two answered right: accuracy 2/3, majority 1/3.
    _relabel_test_split(run, [(first, "right"), (second, "right"), (first, "other")])
    repo = tmp_path / "repo"

    assert _export(run, repo, "--min-accuracy", "0.9") == 1
    error = capsys.readouterr().err
    assert "test accuracy 0.667 is below --min-accuracy 0.900" in error
    assert error.count("\n- ") == 1  # the floor alone: the baseline and the evidence hold
    assert not (repo / "gated" / "1").exists()

    assert _export(run, repo, "--min-accuracy", "0.6") == 0
    baseline = read_card(repo / "gated" / "1").details["baseline"]
    assert baseline["min_accuracy"] == 0.6 and baseline["accuracy"] == pytest.approx(2 / 3)
    assert not baseline["weak"] and not baseline["forced"] and baseline["refusals"] == []

    with pytest.raises(SystemExit):
        _export(run, repo, "--min-accuracy", "90")
    assert "must be between 0 and 1, not 90" in capsys.readouterr().err


def test_every_refusal_is_named_at_once_and_one_override_publishes(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy_run(trained_run, tmp_path, **ISSUE_30)
    first, second = _two_predicted_classes(run)
    _relabel_test_split(run, [(first, "other"), (second, "other")])  # accuracy 0
    repo = tmp_path / "repo"

    assert _export(run, repo, "--min-accuracy", "0.5") == 1
    error = capsys.readouterr().err
    assert "no better than always answering the most common class" in error
    assert "is below --min-accuracy 0.500" in error and "63 points below training" in error
    assert not (repo / "gated" / "1").exists()

    assert _export(run, repo, "--min-accuracy", "0.5", "--allow-weak-model") == 0
    baseline = read_card(repo / "gated" / "1").details["baseline"]
    assert baseline["accuracy"] == 0.0 and len(baseline["refusals"]) == 3 and baseline["forced"]


def test_a_run_made_before_training_accuracy_was_recorded_is_published_with_a_note(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = {"train_accuracy": None, "best_val_accuracy": None, "restored_epoch": None}
    run = _copy_run(trained_run, tmp_path, **old)
    repo = tmp_path / "repo"

    assert _export(run, repo) == 0
    assert "note: the run has no training accuracy, best val" in capsys.readouterr().out
    fit = read_card(repo / "gated" / "1").details["baseline"]["fit"]
    assert fit["train_accuracy"] is None and fit["problem"] is None
    assert "not compared" in fit["unchecked"]
